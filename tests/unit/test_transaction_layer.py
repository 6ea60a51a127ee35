"""The transaction layer: matching (RFC 3261 §17.1.3, §17.2.3, §9.2), limits, timer order,
determinism, and two layers talking over a byte ``Wire``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from sipwake.ids import SeededIds
from sipwake.sip.message import Headers, Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import parse_uri
from sipwake.transaction import (
    AckReceived,
    CancelReceived,
    ClientKey,
    LegacyServerKey,
    MessageDropped,
    Output,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    SendMessage,
    ServerKey,
    ServerTransactionKey,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    add_via,
    build_ack,
    build_cancel,
)
from sipwake.transaction.layer import LINGER_FACTOR
from sipwake.transaction.server import IstState

UA = Peer(transport="udp", host="198.51.100.7", port=5060)
OTHER_UA = Peer(transport="udp", host="198.51.100.8", port=5060)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=BRANCH\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def invite(branch: str = "z9hG4bK776asdhds", sent_by: bytes = b"198.51.100.7:5060") -> Request:
    data = INVITE.replace(b"BRANCH", branch.encode()).replace(b"198.51.100.7:5060", sent_by)
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


M = TypeVar("M", Request, Response)


def roundtrip(msg: M) -> M:
    parsed = parse_message(msg.to_bytes())
    assert isinstance(parsed, type(msg))
    return parsed


def received_key(out: list[Output]) -> ServerTransactionKey:
    (event,) = [o for o in out if isinstance(o, RequestReceived)]
    return event.transaction_key


@pytest.fixture
def layer() -> TransactionLayer:
    return TransactionLayer(SeededIds(0))


# -- server-side matching ---------------------------------------------------


def test_cancel_matches_its_invite(layer: TransactionLayer) -> None:
    inv = invite()
    key = received_key(layer.receive(inv, UA, 0.0))
    assert key == ServerKey(
        branch="z9hG4bK776asdhds", sent_by=("198.51.100.7", 5060), method="INVITE"
    )
    cancel = roundtrip(build_cancel(inv))
    out = layer.receive(cancel, UA, 1.0)
    assert len(out) == 2
    assert isinstance(out[0], SendMessage)
    ok = out[0].message
    assert isinstance(ok, Response)
    assert (ok.status, str(ok.cseq)) == (200, "314159 CANCEL")
    assert ok.to.tag is not None
    assert out[1] == CancelReceived(cancel=cancel, source=UA, invite_key=key)
    assert layer.counts() == {"ICT": 0, "NICT": 0, "IST": 1, "NIST": 1}
    # A retransmitted CANCEL gets the 200 again and no second CancelReceived.
    again = layer.receive(roundtrip(build_cancel(inv)), UA, 1.5)
    assert len(again) == 1
    assert isinstance(again[0], SendMessage)
    assert (again[0].message.to_bytes(), again[0].peer) == (ok.to_bytes(), out[0].peer)
    # The TU decides the INVITE's fate: 487.
    sent = layer.respond(key, make_response(inv, 487, to_tag="x"), 2.0)
    assert [type(o) for o in sent] == [SendMessage]


def test_cancel_after_final_is_answered_without_effect(layer: TransactionLayer) -> None:
    inv = invite()
    key = received_key(layer.receive(inv, UA, 0.0))
    ok = make_response(inv, 200, to_tag="b0b")
    layer.respond(key, ok, 0.1)
    out = layer.receive(roundtrip(build_cancel(inv)), UA, 0.5)
    assert len(out) == 1
    assert isinstance(out[0], SendMessage)
    assert isinstance(out[0].message, Response)
    assert out[0].message.to.tag == "b0b"  # same To tag as the INVITE's response (§9.2)


def test_unmatched_cancel_goes_to_the_tu(layer: TransactionLayer) -> None:
    cancel = roundtrip(build_cancel(invite()))
    out = layer.receive(cancel, UA, 0.0)
    assert out == [
        RequestReceived(
            request=cancel,
            source=UA,
            transaction_key=ServerKey(
                branch="z9hG4bK776asdhds", sent_by=("198.51.100.7", 5060), method="CANCEL"
            ),
        )
    ]


def test_ack_for_non_2xx_is_absorbed_and_ack_for_2xx_goes_up(layer: TransactionLayer) -> None:
    inv = invite()
    key = received_key(layer.receive(inv, UA, 0.0))
    busy = make_response(inv, 486, to_tag="busy")
    layer.respond(key, busy, 0.1)
    assert layer.receive(roundtrip(build_ack(inv, busy)), UA, 0.2) == []
    assert layer.state_of(key) is IstState.CONFIRMED
    other = roundtrip(build_ack(invite("z9hG4bKother"), make_response(inv, 200, to_tag="t")))
    assert layer.receive(other, UA, 0.3) == [AckReceived(request=other, source=UA)]


def test_different_sent_by_same_branch_is_another_transaction(layer: TransactionLayer) -> None:
    first = received_key(layer.receive(invite(), UA, 0.0))
    second = received_key(layer.receive(invite(sent_by=b"198.51.100.8:5060"), OTHER_UA, 0.0))
    assert first != second
    assert len(layer) == 2


def test_rfc2543_matching_without_magic_cookie(layer: TransactionLayer) -> None:
    inv = invite(branch="1234")
    key = received_key(layer.receive(inv, UA, 0.0))
    assert isinstance(key, LegacyServerKey)
    ringing = make_response(inv, 180, to_tag="b0b")
    layer.respond(key, ringing, 0.1)
    assert layer.receive(invite(branch="1234"), UA, 0.5) == [SendMessage(message=ringing, peer=UA)]
    busy = make_response(inv, 486, to_tag="b0b")
    layer.respond(key, busy, 1.0)
    # An ACK with another To tag is not this transaction's: it goes up.
    stray = roundtrip(build_ack(inv, make_response(inv, 486, to_tag="zzz")))
    assert layer.receive(stray, UA, 1.1) == [AckReceived(request=stray, source=UA)]
    assert layer.receive(roundtrip(build_ack(inv, busy)), UA, 1.2) == []
    assert layer.state_of(key) is IstState.CONFIRMED


def test_rfc2543_without_branch_and_its_cancel(layer: TransactionLayer) -> None:
    data = INVITE.replace(b";branch=BRANCH", b"")
    inv = parse_message(data)
    assert isinstance(inv, Request)
    key = received_key(layer.receive(inv, UA, 0.0))
    assert isinstance(key, LegacyServerKey)
    out = layer.receive(roundtrip(build_cancel(inv)), UA, 0.5)
    assert [type(o) for o in out] == [SendMessage, CancelReceived]
    assert isinstance(out[1], CancelReceived)
    assert out[1].invite_key == key
    (trying,) = layer.handle_timeout(0.6)
    retransmission = parse_message(data)
    assert isinstance(retransmission, Request)
    assert layer.receive(retransmission, UA, 0.7) == [trying]


# -- client-side matching ----------------------------------------------------


def test_responses_to_unknown_branches_are_stray(layer: TransactionLayer) -> None:
    ids = SeededIds(1)
    req = invite()
    add_via(req, transport="udp", host="192.0.2.1", port=5060, ids=ids)
    key, _ = layer.send_request(req, UA, 0.0)
    unknown = make_response(invite(), 200, to_tag="t")  # top Via is the UA's, not ours
    assert layer.receive(unknown, UA, 0.1) == [StrayResponse(response=unknown, source=UA)]
    # Right branch, wrong CSeq method (no CANCEL was sent): not this transaction.
    wrong_method = make_response(build_cancel(req), 200, to_tag="t")
    assert layer.receive(wrong_method, UA, 0.2) == [StrayResponse(response=wrong_method, source=UA)]
    no_branch = roundtrip(make_response(invite(), 200, to_tag="t"))
    no_branch.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060")
    assert layer.receive(no_branch, UA, 0.3) == [StrayResponse(response=no_branch, source=UA)]
    right = roundtrip(make_response(req, 180, to_tag="t"))
    assert layer.receive(right, UA, 0.4) == [ResponseReceived(response=right, transaction_key=key)]


def test_message_without_via_is_dropped(layer: TransactionLayer) -> None:
    bare = Request("OPTIONS", parse_uri("sip:bob@example.com"), Headers([("CSeq", "1 OPTIONS")]))
    out = layer.receive(bare, UA, 0.0)
    assert out == [MessageDropped(reason="missing Via header", source=UA)]


# -- limits --------------------------------------------------------------------


def test_max_transactions_answers_503_with_retry_after() -> None:
    layer = TransactionLayer(SeededIds(0), max_transactions=1, retry_after_s=7)
    first = invite()
    key = received_key(layer.receive(first, UA, 0.0))
    second = invite(branch="z9hG4bKsecond")
    out = layer.receive(second, UA, 0.1)
    assert len(out) == 2
    assert isinstance(out[0], SendMessage)
    busy = out[0].message
    assert isinstance(busy, Response)
    assert (busy.status, busy.headers.get("Retry-After")) == (503, "7")
    assert busy.to.tag is not None
    assert out[0].peer == UA
    assert out[1] == RequestRejected(request=second, source=UA, status=503)
    assert len(layer) == 1
    # Retransmissions, CANCEL and ACK are never rejected.
    layer.handle_timeout(0.2)
    assert [type(o) for o in layer.receive(invite(), UA, 0.5)] == [SendMessage]
    cancel_out = layer.receive(roundtrip(build_cancel(first)), UA, 0.6)
    assert [type(o) for o in cancel_out] == [SendMessage, CancelReceived]
    ack = roundtrip(build_ack(second, busy))
    assert layer.receive(ack, UA, 0.7) == [AckReceived(request=ack, source=UA)]
    assert layer.state_of(key) is IstState.PROCEEDING


def register(branch: str) -> Request:
    data = (
        INVITE.replace(b"INVITE sip:bob@biloxi.example.com", b"REGISTER sip:biloxi.example.com")
        .replace(b"314159 INVITE", b"1 REGISTER")
        .replace(b"BRANCH", branch.encode())
    )
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def test_answered_transactions_do_not_count_against_the_limit() -> None:
    """A UDP REGISTER's NIST lingers 32 s after its 200 (Timer J) only to absorb
    retransmissions: those are not pending work, and a busy registrar holds many."""
    layer = TransactionLayer(SeededIds(0), max_transactions=2)
    for i in range(2 * LINGER_FACTOR):
        request = register(f"z9hG4bKreg{i}")
        key = received_key(layer.receive(request, UA, 0.0))
        layer.respond(key, make_response(request, 200, to_tag="t"), 0.0)
    assert (len(layer), layer.pending) == (2 * LINGER_FACTOR, 0)
    # Two pending ones fill the limit; a third is refused although nothing else is.
    first = received_key(layer.receive(register("z9hG4bKopen1"), UA, 0.1))
    second = received_key(layer.receive(register("z9hG4bKopen2"), UA, 0.1))
    assert layer.pending == 2
    out = layer.receive(register("z9hG4bKopen3"), UA, 0.1)
    assert [type(o) for o in out] == [SendMessage, RequestRejected]
    assert isinstance(out[0], SendMessage)
    assert out[0].message.status == 503
    layer.respond(first, make_response(register("z9hG4bKopen1"), 200, to_tag="t"), 0.1)
    layer.respond(second, make_response(register("z9hG4bKopen2"), 200, to_tag="t"), 0.1)
    layer.handle_timeout(32.0)  # Timer J: the first ones go
    assert (len(layer), layer.pending) == (2, 0)
    assert layer.ended_early == 2  # the two settled longest ago, past 2 x LINGER_FACTOR


def test_past_the_linger_bound_the_oldest_settled_transaction_ends_early() -> None:
    """Settled transactions are bounded at LINGER_FACTOR x max_transactions: past it the
    one settled longest ago ends (TransactionTerminated) instead of new requests being
    refused, so a 32 s retransmission window never caps the rate a registrar serves."""
    layer = TransactionLayer(SeededIds(0), max_transactions=2)
    bound = 2 * LINGER_FACTOR
    keys = []
    for i in range(bound + 3):
        request = register(f"z9hG4bKreg{i}")
        key = received_key(layer.receive(request, UA, i / 10))
        out = layer.respond(key, make_response(request, 200, to_tag="t"), i / 10)
        ended = [o.transaction_key for o in out if isinstance(o, TransactionTerminated)]
        assert ended == ([keys[i - bound]] if i >= bound else [])
        keys.append(key)
    assert (len(layer), layer.pending, layer.ended_early) == (bound, 0, 3)
    assert all(k not in layer for k in keys[:3])
    assert all(k in layer for k in keys[3:])
    # A kept one still absorbs its retransmission with the 200 it sent ...
    out = layer.receive(register("z9hG4bKreg3"), UA, 1.0)
    assert [type(o) for o in out] == [SendMessage]
    assert isinstance(out[0], SendMessage)
    assert out[0].message.status == 200
    # ... one that ended early meets its retransmission as a new request.
    out = layer.receive(register("z9hG4bKreg0"), UA, 1.0)
    assert [type(o) for o in out] == [RequestReceived]
    # Timers of the ended ones are gone with them: only the kept ones' Timer J fire.
    later = layer.handle_timeout(40.0)
    gone = [o.transaction_key for o in later if isinstance(o, TransactionTerminated)]
    assert gone == keys[3:]


def test_the_settle_queue_stays_bounded_without_eviction() -> None:
    """Transactions that end on their own timers leave no trace in the queue of settled
    orders (it is rebuilt when mostly stale)."""
    layer = TransactionLayer(SeededIds(0), max_transactions=1000)
    for i in range(5000):
        request = register(f"z9hG4bKq{i}")
        key = received_key(layer.receive(request, UA, float(i)))
        layer.respond(key, make_response(request, 200, to_tag="t"), float(i))
        layer.handle_timeout(float(i))
    assert len(layer) <= 33
    assert layer.ended_early == 0
    assert len(layer._settle_queue) <= 2 * len(layer) + 65


# -- timers ----------------------------------------------------------------------


def test_equal_deadlines_fire_in_creation_order(layer: TransactionLayer) -> None:
    ids = SeededIds(2)
    keys = []
    for branch in ("z9hG4bKzzz", "z9hG4bKaaa", "z9hG4bKmmm"):
        req = invite(branch=branch)
        req.headers.set("CSeq", "1 OPTIONS")
        req.method = "OPTIONS"
        add_via(req, transport="udp", host="192.0.2.1", port=5060, ids=ids)
        key, _ = layer.send_request(req, UA, 0.0)
        keys.append(key)
    out = layer.handle_timeout(0.5)
    assert [o.message.top_via.branch for o in out if isinstance(o, SendMessage)] == [
        k.branch for k in keys
    ]


# -- two layers over a wire ---------------------------------------------------------


@dataclass
class Wire:
    """Carries bytes between a UAC layer and a UAS layer (h11's ConnectionPair)."""

    uac: TransactionLayer
    uas: TransactionLayer
    uac_peer: Peer
    uas_peer: Peer
    log: list[bytes] = field(default_factory=list)

    def deliver(self, side: str, outputs: list[Output], now: float) -> list[tuple[str, Output]]:
        """Carry every SendMessage across as bytes, and the answers back, until none is left;
        return the other outputs, each with the side ("uac"/"uas") it came from."""
        facts: list[tuple[str, Output]] = []
        pending = [(side, o) for o in outputs]
        while pending:
            side, out = pending.pop(0)
            if not isinstance(out, SendMessage):
                facts.append((side, out))
                continue
            data = out.message.to_bytes()
            self.log.append(data)
            message = parse_message(data)
            if out.peer == self.uas_peer:
                pending += [("uas", o) for o in self.uas.receive(message, self.uac_peer, now)]
            else:
                pending += [("uac", o) for o in self.uac.receive(message, self.uas_peer, now)]
        return facts


def run_call(seed: int) -> list[bytes]:
    """UAC INVITE → auto 100 → 180 → CANCEL → 200/487 → ACK, then every timer."""
    uac_peer = Peer(transport="udp", host="192.0.2.1", port=5060)
    uas_peer = Peer(transport="udp", host="192.0.2.2", port=5060)
    ids = SeededIds(seed)
    wire = Wire(TransactionLayer(ids), TransactionLayer(ids), uac_peer, uas_peer)
    req = invite()
    req.headers.remove("Via")
    add_via(req, transport="udp", host="192.0.2.1", port=5060, ids=ids)
    key, out = wire.uac.send_request(req, uas_peer, 0.0)
    facts = wire.deliver("uac", out, 0.0)
    (server_key,) = [o.transaction_key for _, o in facts if isinstance(o, RequestReceived)]
    facts = wire.deliver("uas", wire.uas.handle_timeout(0.2), 0.2)  # the UAS's own 100 Trying
    assert [type(o) for _, o in facts] == [ResponseReceived]
    ringing = make_response(req, 180, to_tag=ids.tag())
    facts = wire.deliver("uas", wire.uas.respond(server_key, ringing, 1.0), 1.0)
    assert [type(o) for _, o in facts] == [ResponseReceived]
    cancel_key, out = wire.uac.cancel(key, 2.0)
    facts = wire.deliver("uac", out, 2.0)
    assert [(s, type(o)) for s, o in facts] == [("uas", CancelReceived), ("uac", ResponseReceived)]
    terminated = make_response(req, 487, to_tag=ringing.to.tag)
    facts = wire.deliver("uas", wire.uas.respond(server_key, terminated, 2.1), 2.1)
    # The 487 goes up; the ICT ACKs it and the ACK confirms the IST.
    assert [(s, type(o)) for s, o in facts] == [("uac", ResponseReceived)]
    assert wire.uas.state_of(server_key) is IstState.CONFIRMED
    end = 100.0
    for name, side in (("uac", wire.uac), ("uas", wire.uas)):
        while (deadline := side.next_deadline()) is not None and deadline <= end:
            wire.deliver(name, side.handle_timeout(deadline), deadline)
    assert (len(wire.uac), len(wire.uas)) == (0, 0)
    assert cancel_key == ClientKey(branch=key.branch, method="CANCEL")
    return wire.log


def test_wire_invite_cancel_487_ack() -> None:
    log = run_call(0)
    starts = [data.split(b"\r\n", 1)[0] for data in log]
    assert starts == [
        b"INVITE sip:bob@biloxi.example.com SIP/2.0",
        b"SIP/2.0 100 Trying",
        b"SIP/2.0 180 Ringing",
        b"CANCEL sip:bob@biloxi.example.com SIP/2.0",
        b"SIP/2.0 200 OK",
        b"SIP/2.0 487 Request Terminated",
        b"ACK sip:bob@biloxi.example.com SIP/2.0",
    ]


def test_same_inputs_and_seed_give_byte_identical_outputs() -> None:
    assert run_call(0) == run_call(0)
    assert run_call(0) != run_call(1)  # the ids do reach the wire


def test_terminated_is_the_last_output_for_a_transaction(layer: TransactionLayer) -> None:
    inv = invite()
    key = received_key(layer.receive(inv, UA, 0.0))
    layer.respond(key, make_response(inv, 200, to_tag="t"), 0.0)
    out = layer.handle_timeout(32.0)
    assert out == [TransactionTerminated(transaction_key=key)]
    assert key not in layer
