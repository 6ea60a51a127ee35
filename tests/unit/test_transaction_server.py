"""Server transactions (RFC 3261 §17.2, RFC 6026): 100 Trying and Timers G-L, time moved by hand."""

from __future__ import annotations

import pytest

from sipwake.errors import LocalProtocolError
from sipwake.ids import SeededIds
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction import (
    AckReceived,
    Output,
    RequestReceived,
    SendMessage,
    ServerTransactionKey,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    build_ack,
)
from sipwake.transaction.server import IstState, NistState

#: The UA's NAT maps its port 5060 to 40000: rport sends responses there.
UA_UDP = Peer(transport="udp", host="198.51.100.7", port=40000)
UA_TCP = Peer(transport="tcp", host="198.51.100.7", port=40001, flow=3)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

ACK_2XX = (
    b"ACK sip:bob@192.0.2.4 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKnewack1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=b0b\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 ACK\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKreg1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"Call-ID: reg-1\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: <sip:alice@198.51.100.7:5060>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int, tag: str = "b0b") -> Response:
    return make_response(req, status, to_tag=tag)


def wire(outputs: list[Output]) -> list[object]:
    """Outputs with each ``SendMessage`` as what goes out: (bytes, peer). A settled
    transaction re-sends its final response read back from the bytes it kept."""
    return [(o.message.to_bytes(), o.peer) if isinstance(o, SendMessage) else o for o in outputs]


def sent(message: Response, peer: Peer) -> tuple[bytes, Peer]:
    return message.to_bytes(), peer


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Output]]:
    events: list[tuple[float, Output]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        events += [(deadline, out) for out in layer.handle_timeout(deadline)]
    return events


@pytest.fixture
def layer() -> TransactionLayer:
    return TransactionLayer(SeededIds(0))


def start_invite(
    layer: TransactionLayer, source: Peer = UA_UDP, now: float = 0.0
) -> tuple[Request, ServerTransactionKey]:
    invite = parse_request(INVITE)
    out = layer.receive(invite, source, now)
    assert len(out) == 1
    assert isinstance(out[0], RequestReceived)
    assert out[0].request is invite
    assert out[0].source == source
    return invite, out[0].transaction_key


# -- IST: 100 Trying -------------------------------------------------------


def test_ist_sends_100_after_200_ms(layer: TransactionLayer) -> None:
    _, key = start_invite(layer)
    assert layer.next_deadline() == 0.2
    out = layer.handle_timeout(0.2)
    assert len(out) == 1
    assert isinstance(out[0], SendMessage)
    trying = out[0].message
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"
    assert out[0].peer == UA_UDP  # rport: back to the packet's source
    assert layer.next_deadline() is None
    assert layer.state_of(key) is IstState.PROCEEDING
    # A retransmitted INVITE gets the last provisional again.
    assert layer.receive(parse_request(INVITE), UA_UDP, 0.6) == [out[0]]


def test_ist_no_100_when_the_tu_answers_first(layer: TransactionLayer) -> None:
    invite, key = start_invite(layer)
    ringing = answer(invite, 180)
    assert layer.respond(key, ringing, 0.1) == [SendMessage(message=ringing, peer=UA_UDP)]
    assert layer.next_deadline() is None
    assert layer.receive(parse_request(INVITE), UA_UDP, 0.5) == [
        SendMessage(message=ringing, peer=UA_UDP)
    ]


def test_ist_zero_trying_delay_sends_100_at_once() -> None:
    layer = TransactionLayer(SeededIds(0), TimerConfig(trying_delay=0))
    invite = parse_request(INVITE)
    out = layer.receive(invite, UA_UDP, 0.0)
    assert [type(o) for o in out] == [SendMessage, RequestReceived]
    assert layer.next_deadline() is None


def test_ist_retransmission_before_any_response_is_absorbed(layer: TransactionLayer) -> None:
    start_invite(layer)
    assert layer.receive(parse_request(INVITE), UA_UDP, 0.1) == []


# -- IST: non-2xx final ----------------------------------------------------


def test_ist_timer_g_until_timer_h(layer: TransactionLayer) -> None:
    invite, key = start_invite(layer)
    busy = answer(invite, 486)
    assert layer.respond(key, busy, 1.0) == [SendMessage(message=busy, peer=UA_UDP)]
    assert layer.state_of(key) is IstState.COMPLETED
    events = run_until(layer, 100.0)
    resent = [t for t, out in events if wire([out]) == [sent(busy, UA_UDP)]]
    # Intervals 0.5, 1, 2, 4, 4 ...: doubling capped at T2.
    assert resent == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert [(t, o) for t, o in events if not isinstance(o, SendMessage)] == [
        (33.0, TransactionTimedOut(transaction_key=key)),
        (33.0, TransactionTerminated(transaction_key=key)),
    ]


def test_ist_ack_confirms_then_timer_i(layer: TransactionLayer) -> None:
    invite, key = start_invite(layer)
    busy = answer(invite, 486)
    layer.respond(key, busy, 1.0)
    assert wire(layer.receive(parse_request(INVITE), UA_UDP, 1.2)) == [sent(busy, UA_UDP)]
    layer.handle_timeout(1.5)
    ack = build_ack(invite, busy)
    assert layer.receive(ack, UA_UDP, 2.0) == []  # absorbed by the transaction
    assert layer.state_of(key) is IstState.CONFIRMED
    assert layer.next_deadline() == 7.0  # Timer I = T4; G and H stopped
    assert layer.receive(ack, UA_UDP, 3.0) == []
    assert layer.receive(parse_request(INVITE), UA_UDP, 3.5) == []
    assert run_until(layer, 100.0) == [(7.0, TransactionTerminated(transaction_key=key))]


def test_ist_tcp_no_timer_g_and_ack_terminates(layer: TransactionLayer) -> None:
    invite, key = start_invite(layer, UA_TCP)
    busy = answer(invite, 603)
    assert layer.respond(key, busy, 0.1) == [SendMessage(message=busy, peer=UA_TCP)]
    assert layer.next_deadline() == 32.1  # Timer H only
    assert layer.receive(build_ack(invite, busy), UA_TCP, 1.0) == [
        TransactionTerminated(transaction_key=key)
    ]


def test_ist_second_final_is_a_local_error(layer: TransactionLayer) -> None:
    invite, key = start_invite(layer)
    layer.respond(key, answer(invite, 486), 1.0)
    with pytest.raises(LocalProtocolError, match="SEND_2XX not allowed in state COMPLETED"):
        layer.respond(key, answer(invite, 200), 1.1)
    with pytest.raises(LocalProtocolError, match="outside 100-699"):
        layer.respond(key, Response(700, "Odd"), 1.2)


# -- IST: 2xx (RFC 6026 Accepted) ------------------------------------------


def test_ist_2xx_accepted_until_timer_l(layer: TransactionLayer) -> None:
    invite, key = start_invite(layer)
    ok = answer(invite, 200)
    assert layer.respond(key, ok, 1.0) == [SendMessage(message=ok, peer=UA_UDP)]
    assert layer.state_of(key) is IstState.ACCEPTED
    assert layer.next_deadline() == 33.0  # Timer L
    assert layer.receive(parse_request(INVITE), UA_UDP, 1.5) == []  # absorbed
    # The TU (a UAS core) retransmits its 2xx through the transaction.
    assert layer.respond(key, ok, 1.5) == [SendMessage(message=ok, peer=UA_UDP)]
    ack = parse_request(ACK_2XX)
    assert layer.receive(ack, UA_UDP, 2.0) == [AckReceived(request=ack, source=UA_UDP)]
    same_branch = build_ack(invite, ok)
    assert layer.receive(same_branch, UA_UDP, 2.1) == [
        AckReceived(request=same_branch, source=UA_UDP)
    ]
    assert run_until(layer, 100.0) == [(33.0, TransactionTerminated(transaction_key=key))]
    # Once the transaction is gone a retransmitted INVITE is a new request.
    again = layer.receive(parse_request(INVITE), UA_UDP, 40.0)
    assert [type(o) for o in again] == [RequestReceived]


def test_ist_response_peer_without_rport_uses_sent_by_port(layer: TransactionLayer) -> None:
    invite = parse_request(INVITE.replace(b";rport", b""))
    out = layer.receive(invite, UA_UDP, 0.0)
    assert isinstance(out[0], RequestReceived)
    (sent,) = layer.respond(out[0].transaction_key, answer(invite, 180), 0.0)
    assert isinstance(sent, SendMessage)
    assert sent.peer == Peer(transport="udp", host="198.51.100.7", port=5060)


# -- NIST ------------------------------------------------------------------


def test_nist_final_retransmitted_on_request_then_timer_j(layer: TransactionLayer) -> None:
    register = parse_request(REGISTER)
    out = layer.receive(register, UA_UDP, 0.0)
    assert isinstance(out[0], RequestReceived)
    key = out[0].transaction_key
    assert layer.next_deadline() is None  # no 100 Trying for non-INVITE
    assert layer.receive(parse_request(REGISTER), UA_UDP, 0.5) == []  # Trying: absorbed
    ok = answer(register, 200)
    assert layer.respond(key, ok, 1.0) == [SendMessage(message=ok, peer=UA_UDP)]
    assert layer.state_of(key) is NistState.COMPLETED
    assert wire(layer.receive(parse_request(REGISTER), UA_UDP, 1.5)) == [sent(ok, UA_UDP)]
    with pytest.raises(LocalProtocolError, match="SEND_200_699 not allowed in state COMPLETED"):
        layer.respond(key, answer(register, 500), 2.0)
    assert run_until(layer, 100.0) == [(33.0, TransactionTerminated(transaction_key=key))]


def test_nist_proceeding_resends_last_provisional(layer: TransactionLayer) -> None:
    register = parse_request(REGISTER)
    out = layer.receive(register, UA_UDP, 0.0)
    assert isinstance(out[0], RequestReceived)
    key = out[0].transaction_key
    pushing = answer(register, 110)
    layer.respond(key, pushing, 0.1)
    assert layer.state_of(key) is NistState.PROCEEDING
    assert layer.receive(parse_request(REGISTER), UA_UDP, 0.5) == [
        SendMessage(message=pushing, peer=UA_UDP)
    ]


def test_nist_tcp_final_terminates_at_once(layer: TransactionLayer) -> None:
    register = parse_request(REGISTER)
    out = layer.receive(register, UA_TCP, 0.0)
    assert isinstance(out[0], RequestReceived)
    key = out[0].transaction_key
    ok = answer(register, 200)
    assert layer.respond(key, ok, 0.1) == [
        SendMessage(message=ok, peer=UA_TCP),
        TransactionTerminated(transaction_key=key),
    ]
    with pytest.raises(LocalProtocolError, match="no server transaction"):
        layer.respond(key, ok, 0.2)
