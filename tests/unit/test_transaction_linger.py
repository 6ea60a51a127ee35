"""Settled transactions linger (Timers D, J, L, M: 32 s over UDP) holding no parsed message.

What they re-send they keep as the bytes that went out, read back with ``sent_response`` /
``sent_request``; a retransmission still gets exactly those bytes, and the timers still run.
"""

from __future__ import annotations

import gc
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.errors import LocalProtocolError, SipParseError
from sipwake.ids import SeededIds
from sipwake.sip.message import Headers, Message, Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction import (
    AckReceived,
    Output,
    RequestReceived,
    SendMessage,
    TransactionLayer,
    TransactionTerminated,
    add_via,
    build_ack,
    build_cancel,
)
from sipwake.transaction.client import IctState, NictState
from sipwake.transaction.layer import AnyTransaction
from sipwake.transaction.messages import sent_request, sent_response
from sipwake.transaction.server import (
    InviteServerTransaction,
    IstState,
    NistState,
    NonInviteServerTransaction,
)
from tests.unit.objects import attributes

UA = Peer(transport="udp", host="198.51.100.7", port=40000)
HOP = Peer(transport="udp", host="192.0.2.20", port=5060)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:edge.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 10\r\n"
    b"\r\n"
    b"v=0\r\n\r\nx=1"
)

ACK_2XX = (
    b"ACK sip:bob@192.0.2.4 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKack1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=b0b\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 ACK\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE = (
    b"BYE sip:bob@192.0.2.4 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKbye1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=b0b\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314160 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def answer(request: Request, status: int, *, tag: str = "b0b", body: bytes = b"") -> Response:
    response = make_response(request, status, to_tag=tag)
    if body:
        response.set_body(body, "application/sdp")
    return response


def sends(outputs: list[Output]) -> list[tuple[bytes, Peer]]:
    return [(o.message.to_bytes(), o.peer) for o in outputs if isinstance(o, SendMessage)]


def holds_no_message(txn: AnyTransaction) -> bool:
    """Nothing the transaction holds is a parsed message, and its timers are untracked."""
    held = [v for v in attributes(txn) if isinstance(v, Message | Headers)]
    return not held and not gc.is_tracked(txn.armed) and txn._immediate == ()


def server_txn(
    layer: TransactionLayer, request: Request
) -> InviteServerTransaction | NonInviteServerTransaction:
    out = layer.receive(request, UA, 0.0)
    assert isinstance(out[-1], RequestReceived)
    txn = layer._transactions[out[-1].transaction_key]
    assert isinstance(txn, InviteServerTransaction | NonInviteServerTransaction)
    return txn


# -- reading back what to_bytes wrote --------------------------------------------------------


def _messages(corpora: pathlib.Path) -> list[Request | Response]:
    files = sorted(corpora.glob("rfc*/*.sip")) + sorted(
        (corpora / "protos-c07-sip" / "cases").iterdir()
    )
    messages: list[Request | Response] = []
    for path in files:
        try:
            msg = parse_message(path.read_bytes())
        except SipParseError:
            continue
        messages.append(msg)
        if isinstance(msg, Request):
            messages += [make_response(msg, s, to_tag="t") for s in (100, 200, 486)]
    return messages


def test_sent_messages_read_back_to_the_same_bytes(corpora: pathlib.Path) -> None:
    messages = _messages(corpora)
    assert len(messages) > 100
    for msg in messages:
        data = msg.to_bytes()
        back = sent_request(data, msg.uri) if isinstance(msg, Request) else sent_response(data)
        assert back.to_bytes() == data
        assert list(back.headers) == list(msg.headers)
        assert back.body == msg.body
        if isinstance(msg, Request):
            assert isinstance(back, Request)
            assert (back.method, back.uri) == (msg.method, msg.uri)
        else:
            assert isinstance(back, Response)
            assert (back.status, back.reason) == (msg.status, msg.reason)


_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,12}", fullmatch=True)
_VALUE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))


@given(
    status=st.integers(100, 699),
    reason=_VALUE,
    fields=st.lists(st.tuples(_NAME, _VALUE), max_size=8),
    body=st.binary(max_size=64),
)
def test_sent_response_reads_back_any_fields(
    status: int, reason: str, fields: list[tuple[str, str]], body: bytes
) -> None:
    response = Response(status, reason, Headers(fields), body)
    back = sent_response(response.to_bytes())
    assert back.to_bytes() == response.to_bytes()
    assert (back.status, back.reason, list(back.headers), back.body) == (
        status,
        reason,
        fields,
        body,
    )


# -- server transactions ---------------------------------------------------------------------


def test_ist_accepted_holds_no_message_and_absorbs_as_before() -> None:
    layer = TransactionLayer(SeededIds(0))
    invite = parse(INVITE)
    ist = server_txn(layer, invite)
    ok = answer(invite, 200, body=b"v=0\r\n")
    assert sends(layer.respond(ist.server_key, ok, 0.1)) == [(ok.to_bytes(), UA)]
    assert ist.state is IstState.ACCEPTED
    assert holds_no_message(ist)
    assert ist.final == ok.to_bytes()
    assert layer.receive(parse(INVITE), UA, 0.5) == []  # absorbed (RFC 6026)
    # The TU's 2xx retransmission goes out as given; the ACK for the 2xx goes up.
    assert sends(layer.respond(ist.server_key, ok, 1.0)) == [(ok.to_bytes(), UA)]
    assert holds_no_message(ist)
    ack = parse(ACK_2XX)
    assert layer.receive(ack, UA, 1.2) == [AckReceived(request=ack, source=UA)]
    # A CANCEL after the 2xx is answered 200 with the To tag the 2xx carried.
    cancel = parse(build_cancel(invite).to_bytes())
    out = layer.receive(cancel, UA, 1.5)
    assert [o.message.to.tag for o in out if isinstance(o, SendMessage)] == ["b0b"]
    assert layer.next_deadline() == pytest.approx(32.1)  # Timer L
    terminated = layer.handle_timeout(32.1)
    assert TransactionTerminated(transaction_key=ist.key) in terminated


def test_ist_completed_resends_the_same_bytes_then_confirmed_holds_nothing() -> None:
    layer = TransactionLayer(SeededIds(0))
    invite = parse(INVITE)
    ist = server_txn(layer, invite)
    busy = answer(invite, 486)
    busy.headers.add("Warning", '399 example.com "odd:  spacing "')
    layer.respond(ist.server_key, busy, 0.1)
    assert holds_no_message(ist)
    assert sends(layer.receive(parse(INVITE), UA, 0.2)) == [(busy.to_bytes(), UA)]
    assert sends(layer.handle_timeout(0.6)) == [(busy.to_bytes(), UA)]  # Timer G
    layer.receive(parse(build_ack(invite, busy).to_bytes()), UA, 0.7)
    assert ist.state is IstState.CONFIRMED
    assert holds_no_message(ist)
    assert layer.receive(parse(INVITE), UA, 0.8) == []


def test_nist_completed_resends_the_same_bytes_and_holds_no_message() -> None:
    layer = TransactionLayer(SeededIds(0))
    bye = parse(BYE)
    nist = server_txn(layer, bye)
    ok = answer(bye, 200)
    ok.headers.add("Server", "sipwake")
    layer.respond(nist.server_key, ok, 0.1)
    assert nist.state is NistState.COMPLETED
    assert holds_no_message(nist)
    # Over UDP the layer keeps the final response and its peer, not the machine: nothing
    # it holds for the transaction is walked by the collector but the key.
    assert nist.removed
    assert layer.state_of(nist.key) is NistState.COMPLETED
    assert nist.key in layer
    assert (len(layer), layer.pending, layer.counts()["NIST"]) == (1, 0, 1)
    held = layer._completed[nist.key]
    gc.collect()
    assert not gc.is_tracked(held)
    assert not any(gc.is_tracked(v) for v in held)
    for now in (0.5, 4.0, 31.0):
        assert sends(layer.receive(parse(BYE), UA, now)) == [(ok.to_bytes(), UA)]
    assert layer.next_deadline() == pytest.approx(32.1)  # Timer J
    assert layer.handle_timeout(32.1) == [TransactionTerminated(transaction_key=nist.key)]
    assert (len(layer), layer.state_of(nist.key), layer.next_deadline()) == (0, None, None)
    with pytest.raises(LocalProtocolError):
        layer.respond(nist.server_key, ok, 33.0)


def test_a_completed_nist_takes_no_second_response() -> None:
    layer = TransactionLayer(SeededIds(0))
    bye = parse(BYE)
    nist = server_txn(layer, bye)
    layer.respond(nist.server_key, answer(bye, 200), 0.1)
    with pytest.raises(LocalProtocolError, match="SEND_200_699 not allowed in state COMPLETED"):
        layer.respond(nist.server_key, answer(bye, 500), 0.2)


def test_completed_nists_and_machines_time_out_in_deadline_order() -> None:
    """A completed NIST's Timer J and the machines' timers fire in one deadline order."""
    layer = TransactionLayer(SeededIds(0))
    bye = parse(BYE)
    nist = server_txn(layer, bye)
    layer.respond(nist.server_key, answer(bye, 200), 1.0)  # Timer J at 33.0
    invite = parse(INVITE)
    ist = server_txn(layer, invite)
    layer.respond(ist.server_key, answer(invite, 200), 0.5)  # Timer L at 32.5
    assert layer.next_deadline() == pytest.approx(32.5)
    out = layer.handle_timeout(40.0)
    assert [o.transaction_key for o in out if isinstance(o, TransactionTerminated)] == [
        ist.key,
        nist.key,
    ]


# -- client transactions ---------------------------------------------------------------------


def forwarded(data: bytes) -> Request:
    request = parse(data)
    add_via(request, transport="udp", host="192.0.2.1", port=5060, ids=SeededIds(1))
    return request


def test_ict_accepted_holds_no_message_and_passes_2xx_up() -> None:
    layer = TransactionLayer(SeededIds(0))
    invite = forwarded(INVITE)
    key, _ = layer.send_request(invite, HOP, 0.0)
    ict = layer._transactions[key]
    ok = answer(invite, 200)
    layer.receive(parse_message(ok.to_bytes()), HOP, 0.2)
    assert ict.state is IctState.ACCEPTED
    assert holds_no_message(ict)
    again = parse_message(ok.to_bytes())
    out = layer.receive(again, HOP, 0.5)
    assert [type(o).__name__ for o in out] == ["ResponseReceived"]
    with pytest.raises(LocalProtocolError, match="CANCEL not allowed in state ACCEPTED"):
        layer.cancel(key, 0.6)


def test_ict_completed_resends_the_same_ack_bytes() -> None:
    layer = TransactionLayer(SeededIds(0))
    invite = forwarded(INVITE)
    key, _ = layer.send_request(invite, HOP, 0.0)
    ict = layer._transactions[key]
    layer.receive(parse_message(answer(invite, 180).to_bytes()), HOP, 0.1)
    layer.cancel(key, 0.15)
    out = layer.receive(parse_message(answer(invite, 487).to_bytes()), HOP, 0.2)
    acks = sends(out)
    assert len(acks) == 1
    assert acks[0][0].startswith(b"ACK sip:bob@biloxi.example.com SIP/2.0\r\n")
    assert ict.state is IctState.COMPLETED
    assert holds_no_message(ict)
    for now in (0.5, 10.0):
        again = layer.receive(parse_message(answer(invite, 487).to_bytes()), HOP, now)
        assert sends(again) == acks
    with pytest.raises(LocalProtocolError, match="already cancelled"):
        layer.cancel(key, 11.0)


def test_nict_completed_holds_no_message() -> None:
    layer = TransactionLayer(SeededIds(0))
    bye = forwarded(BYE)
    key, _ = layer.send_request(bye, HOP, 0.0)
    nict = layer._transactions[key]
    layer.receive(parse_message(answer(bye, 200).to_bytes()), HOP, 0.1)
    assert nict.state is NictState.COMPLETED
    assert holds_no_message(nict)
    assert layer.receive(parse_message(answer(bye, 200).to_bytes()), HOP, 0.2) == []
    assert layer.handle_timeout(5.1) == [TransactionTerminated(transaction_key=key)]
