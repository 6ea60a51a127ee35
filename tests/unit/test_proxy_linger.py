"""A finished call through the node lingers (Timers J, K, L, M) holding no parsed message,
and every retransmission is still answered, forwarded or absorbed with the same bytes."""

from __future__ import annotations

import gc

import pytest

from sipwake.node import Node, PersistChanges, SendBytes
from sipwake.proxy.routing import LocalAddress
from sipwake.sip.message import Headers, Message
from sipwake.sip.peer import Peer
from tests.unit.objects import attributes
from tests.unit.wakelab import open_node

LISTENER = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
CALLER = Peer(transport="udp", host="127.0.0.1", port=5080)
CALLEE = Peer(transport="udp", host="127.0.0.1", port=5090)
SDP = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
REGISTER = (
    b"REGISTER sip:lab.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bob;rport\r\n"
    b"From: <sip:bob@lab.test>;tag=b\r\nTo: <sip:bob@lab.test>\r\n"
    b"Call-ID: bob-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:5090>\r\n"
    b"Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def build_node() -> Node:
    node = open_node(LISTENER)
    feed(node, REGISTER, CALLEE, 0.0)
    return node


def feed(node: Node, data: bytes, peer: Peer, now: float) -> list[tuple[bytes, Peer]]:
    """Receive ``data`` as the driver does (confirming stores); what the node sends."""
    sent: list[tuple[bytes, Peer]] = []
    work = node.receive(data, peer, LISTENER, now)
    while work:
        output = work.pop(0)
        if isinstance(output, PersistChanges) and output.token is not None:
            work[0:0] = node.changes_stored(output.token, True, now)
        elif isinstance(output, SendBytes):
            sent.append((output.data, output.peer))
    return sent


def lines(data: bytes, name: bytes) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if line.lower().startswith(name + b":")]


def answer(request: bytes, status: bytes, body: bytes = b"") -> bytes:
    """The callee's response to a forwarded request."""
    to = lines(request, b"to")[0]
    if b";tag=" not in to:
        to += b";tag=callee"
    head = [b"SIP/2.0 " + status, *lines(request, b"via"), lines(request, b"from")[0], to]
    head += [lines(request, b"call-id")[0], lines(request, b"cseq")[0]]
    head += lines(request, b"record-route")  # RFC 3261 §12.1.1: the UAS copies it
    if body:
        head += [b"Contact: <sip:bob@127.0.0.1:5090>", b"Content-Type: application/sdp"]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def to_callee(sent: list[tuple[bytes, Peer]]) -> bytes:
    (data,) = [d for d, p in sent if p == CALLEE]
    return data


class Call:
    """One call INVITE/100/180/200/ACK/BYE/200, keeping every message for retransmission."""

    def __init__(self, node: Node, i: int, now: float) -> None:
        common = (
            f"From: sipp <sip:sipp@127.0.0.1:5080>;tag={i}a\r\n"
            f"Call-ID: {i}-call@127.0.0.1\r\nMax-Forwards: 70\r\n"
        )
        self.invite = (
            "INVITE sip:bob@lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-inv-{i};rport\r\n"
            f"{common}To: <sip:bob@lab.test>\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:sipp@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.fwd_invite = to_callee(feed(node, self.invite, CALLER, now))
        feed(node, answer(self.fwd_invite, b"100 Trying"), CALLEE, now)
        feed(node, answer(self.fwd_invite, b"180 Ringing"), CALLEE, now)
        self.ok = answer(self.fwd_invite, b"200 OK", SDP)
        self.fwd_ok = feed(node, self.ok, CALLEE, now)
        assert [p for _, p in self.fwd_ok] == [CALLER]
        to = lines(self.fwd_ok[0][0], b"to")[0].decode()
        route = "".join(
            f"Route: {r.split(b':', 1)[1].strip().decode()}\r\n"
            for r in lines(self.fwd_ok[0][0], b"record-route")
        )
        dialog = f"{common}{to}\r\n{route}"
        self.ack = (
            "ACK sip:bob@127.0.0.1:5090 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-ack-{i};rport\r\n"
            f"{dialog}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.fwd_ack = feed(node, self.ack, CALLER, now)
        self.bye = (
            "BYE sip:bob@127.0.0.1:5090 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bye-{i};rport\r\n"
            f"{dialog}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.fwd_bye = to_callee(feed(node, self.bye, CALLER, now))
        self.bye_ok = answer(self.fwd_bye, b"200 OK")
        self.fwd_bye_ok = feed(node, self.bye_ok, CALLEE, now)
        assert [p for _, p in self.fwd_bye_ok] == [CALLER]


def test_a_finished_call_holds_no_parsed_message() -> None:
    node = build_node()
    Call(node, 1, 1.0)
    (ctx,) = node.proxy._contexts.values()
    assert ctx.request is None
    assert [(b.request, b.final, b.target, b.status) for b in ctx.branches.values()] == [
        (None, None, None, 200)
    ]
    (call,) = node.wake._calls.values()
    assert call.done
    assert call.request is None
    for txn in node.layer._transactions.values():
        held = [v for v in attributes(txn) if isinstance(v, Message | Headers)]
        assert held == [], txn


def test_a_finished_call_answers_retransmissions_with_the_same_bytes() -> None:
    node = build_node()
    call = Call(node, 1, 1.0)
    for now in (2.0, 20.0):
        # The callee's 200 OK again (it saw no ACK): forwarded through the IST, as before.
        assert feed(node, call.ok, CALLEE, now) == call.fwd_ok
        # The caller's BYE again: the NIST answers with the 200 it sent.
        assert feed(node, call.bye, CALLER, now) == call.fwd_bye_ok
        # The caller's ACK again: forwarded statelessly, as the first.
        assert feed(node, call.ack, CALLER, now) == call.fwd_ack
        # The callee's 200 for the BYE again and the caller's INVITE again: absorbed.
        assert feed(node, call.bye_ok, CALLEE, now) == []
        assert feed(node, call.invite, CALLER, now) == []
    # Timers still end it all: K (5 s), then J, L and M (32 s).
    node.handle_timeout(40.0)
    assert len(node.layer) == 0
    assert len(node.proxy) == 0
    assert len(node.wake) == 0


@pytest.mark.parametrize("calls", [200])
def test_a_finished_call_leaves_few_objects_for_the_collector(calls: int) -> None:
    node = build_node()
    Call(node, 0, 1.0)  # first-use caches
    gc.collect()
    before = len(gc.get_objects())
    for i in range(1, calls + 1):
        Call(node, i, 1.0)
    gc.collect()
    per_call = (len(gc.get_objects()) - before) / calls
    assert per_call < 15, per_call
