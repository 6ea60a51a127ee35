"""The layer's own bookkeeping: the timer heap, the pending count, the client index.

Stale timer entries must not keep a finished transaction (and its messages) alive, and
timers fire in (deadline, creation order) however many transactions there are.
"""

from __future__ import annotations

import gc
import random
import sys

from sipwake.ids import SeededIds
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction import (
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    add_via,
)

TCP_HOP = Peer(transport="tcp", host="192.0.2.20", port=5060, flow=7)
UDP_HOP = Peer(transport="udp", host="192.0.2.20", port=5060)

OPTIONS = (
    b"OPTIONS sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKua\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@biloxi.example.com>\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=1\r\n"
    b"Call-ID: CALLID\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def options(ids: SeededIds, transport: str, call_id: str = "c1") -> Request:
    msg = parse_message(OPTIONS.replace(b"CALLID", call_id.encode()))
    assert isinstance(msg, Request)
    add_via(msg, transport=transport, host="192.0.2.1", port=5060, ids=ids)
    return msg


def reply(request: Request, status: int) -> Response:
    msg = parse_message(make_response(request, status, to_tag="t").to_bytes())
    assert isinstance(msg, Response)
    return msg


def test_a_stale_timer_entry_does_not_keep_a_finished_transaction_alive() -> None:
    """A NICT over TCP ends at its 200 (Timer K is zero) while its Timer F entry stays
    queued for 32 s: the entry must not hold the transaction or its request."""
    ids = SeededIds(0)
    layer = TransactionLayer(ids)
    request = options(ids, "tcp")
    references = sys.getrefcount(request)
    layer.send_request(request, TCP_HOP, 0.0)
    assert sys.getrefcount(request) > references
    out = layer.receive(reply(request, 200), TCP_HOP, 1.0)
    assert [type(o) for o in out] == [ResponseReceived, TransactionTerminated]
    del out
    gc.collect()
    assert sys.getrefcount(request) == references
    assert layer.next_deadline() is None  # the stale Timer F entry is skipped
    assert layer.handle_timeout(100.0) == []


def test_many_transactions_time_out_in_deadline_then_creation_order() -> None:
    """5,000 NICTs started at shuffled times with ties: Timer F fires in (deadline,
    creation order), each transaction once, and the pending count follows."""
    ids = SeededIds(1)
    layer = TransactionLayer(ids)
    rng = random.Random(7)
    starts = [float(rng.randrange(0, 50)) for _ in range(5000)]
    keys = []
    for i, start in enumerate(starts):
        key, _ = layer.send_request(options(ids, "tcp", f"c{i}"), TCP_HOP, start)
        keys.append(key)
    assert layer.pending == len(layer) == 5000
    timed_out = []
    while (deadline := layer.next_deadline()) is not None:
        for out in layer.handle_timeout(deadline):
            if isinstance(out, TransactionTimedOut):
                timed_out.append((deadline, out.transaction_key))
    expected = sorted(range(5000), key=lambda i: (starts[i] + 32.0, i))
    assert timed_out == [(starts[i] + 32.0, keys[i]) for i in expected]
    assert layer.pending == len(layer) == 0


def test_responses_match_by_branch_and_cseq_method_only() -> None:
    """The client index finds a response by (branch, CSeq method): another method on the
    same branch, or an unknown branch, is a stray response; a finished transaction's
    late response too."""
    ids = SeededIds(2)
    layer = TransactionLayer(ids)
    request = options(ids, "udp")
    layer.send_request(request, UDP_HOP, 0.0)
    other_method = reply(request, 200)
    other_method.headers.set("CSeq", "1 INFO")
    assert [type(o) for o in layer.receive(other_method, UDP_HOP, 0.1)] == [StrayResponse]
    ok = reply(request, 200)
    assert [type(o) for o in layer.receive(ok, UDP_HOP, 0.2)] == [ResponseReceived]
    assert layer.pending == 0
    assert [type(o) for o in layer.handle_timeout(10.0)] == [TransactionTerminated]
    assert [type(o) for o in layer.receive(reply(request, 200), UDP_HOP, 11.0)] == [StrayResponse]
    assert not [o for o in layer.handle_timeout(100.0) if isinstance(o, SendMessage)]
