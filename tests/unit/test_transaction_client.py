"""Client transactions (RFC 3261 §17.1): Timer A/B/D/E/F/K/M schedules on hand-moved time."""

from __future__ import annotations

import pytest

from sipwake.errors import LocalProtocolError
from sipwake.ids import SeededIds
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction import (
    ClientKey,
    Output,
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    add_via,
)
from sipwake.transaction.client import IctState, NictState

UDP_HOP = Peer(transport="udp", host="192.0.2.20", port=5060)
TCP_HOP = Peer(transport="tcp", host="192.0.2.20", port=5060, flow=7)
FROM_HOP = Peer(transport="udp", host="192.0.2.20", port=5060)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:edge.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OPTIONS = (
    b"OPTIONS sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKopt1\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@biloxi.example.com>\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=88\r\n"
    b"Call-ID: opt-1@pc33\r\n"
    b"CSeq: 7 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def request(data: bytes, ids: SeededIds, transport: str = "udp") -> Request:
    """A parsed request with our own top Via on it, as a proxy forwards it."""
    msg = parse_message(data)
    assert isinstance(msg, Request)
    add_via(msg, transport=transport, host="192.0.2.1", port=5060, ids=ids)
    return msg


def reply(req: Request, status: int, tag: str = "b0b") -> Response:
    """The response a peer would send, through bytes and back."""
    msg = parse_message(make_response(req, status, to_tag=tag).to_bytes())
    assert isinstance(msg, Response)
    return msg


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Output]]:
    """Fire every deadline up to ``end``, as a driver would: (time, output) pairs."""
    events: list[tuple[float, Output]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        events += [(deadline, out) for out in layer.handle_timeout(deadline)]
    return events


def sent_at(events: list[tuple[float, Output]]) -> list[float]:
    return [t for t, out in events if isinstance(out, SendMessage)]


def others(events: list[tuple[float, Output]]) -> list[tuple[float, Output]]:
    return [(t, out) for t, out in events if not isinstance(out, SendMessage)]


@pytest.fixture
def ids() -> SeededIds:
    return SeededIds(0)


@pytest.fixture
def layer(ids: SeededIds) -> TransactionLayer:
    return TransactionLayer(ids)


# -- ICT over UDP ----------------------------------------------------------


def test_ict_udp_timer_a_schedule_then_timer_b(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, out = layer.send_request(invite, UDP_HOP, 0.0)
    assert out == [SendMessage(message=invite, peer=UDP_HOP)]
    assert key == ClientKey(branch=invite.top_via.branch or "", method="INVITE")
    events = run_until(layer, 100.0)
    # Intervals 0.5, 1, 2, 4, 8, 16: Timer A doubles without a cap for INVITE.
    assert sent_at(events) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(out == SendMessage(message=invite, peer=UDP_HOP) for _, out in events[:6])
    assert others(events) == [
        (32.0, TransactionTimedOut(transaction_key=key)),
        (32.0, TransactionTerminated(transaction_key=key)),
    ]
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_ict_timers_follow_t1(ids: SeededIds) -> None:
    layer = TransactionLayer(ids, TimerConfig(T1=0.25))
    layer.send_request(request(INVITE, ids), UDP_HOP, 10.0)
    events = run_until(layer, 100.0)
    assert sent_at(events) == [10.25, 10.75, 11.75, 13.75, 17.75, 25.75]
    assert others(events)[0][0] == 26.0


def test_ict_provisional_stops_retransmissions(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    assert layer.handle_timeout(0.5) == [SendMessage(message=invite, peer=UDP_HOP)]
    ringing = reply(invite, 180)
    assert layer.receive(ringing, FROM_HOP, 0.7) == [
        ResponseReceived(response=ringing, transaction_key=key)
    ]
    assert layer.state_of(key) is IctState.PROCEEDING
    assert layer.next_deadline() is None  # A and B stop; Timer C is the proxy's
    again = reply(invite, 183)
    assert layer.receive(again, FROM_HOP, 5.0) == [
        ResponseReceived(response=again, transaction_key=key)
    ]


def test_ict_non_2xx_final_acks_and_waits_timer_d(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    layer.receive(reply(invite, 180), FROM_HOP, 0.2)
    busy = reply(invite, 486, tag="busy1")
    out = layer.receive(busy, FROM_HOP, 1.0)
    assert out[0] == ResponseReceived(response=busy, transaction_key=key)
    assert isinstance(out[1], SendMessage)
    assert out[1].peer == UDP_HOP
    ack = out[1].message
    assert len(out) == 2
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.via == [invite.top_via]  # one Via: the INVITE's, same branch
    assert ack.to.tag == "busy1"
    assert ack.from_ == invite.from_
    assert ack.call_id == invite.call_id
    assert str(ack.cseq) == "314159 ACK"
    assert ack.headers.get_all("Route") == ["<sip:edge.example.com;lr>"]
    assert layer.state_of(key) is IctState.COMPLETED
    assert layer.next_deadline() == 33.0  # Timer D: 32 s over UDP

    # A retransmitted final is absorbed (not passed up) and the same ACK re-sent.
    again = layer.receive(reply(invite, 486, tag="busy1"), FROM_HOP, 2.0)
    assert len(again) == 1
    assert isinstance(again[0], SendMessage)
    assert (again[0].message.to_bytes(), again[0].peer) == (ack.to_bytes(), UDP_HOP)
    assert layer.receive(reply(invite, 180), FROM_HOP, 2.5) == []
    # A late 2xx (a downstream proxy forwards it even after a 6xx) still reaches the TU.
    late_ok = reply(invite, 200, tag="late")
    assert layer.receive(late_ok, FROM_HOP, 2.7) == [
        ResponseReceived(response=late_ok, transaction_key=key)
    ]
    assert layer.state_of(key) is IctState.COMPLETED
    assert layer.handle_timeout(33.0) == [TransactionTerminated(transaction_key=key)]
    late = reply(invite, 486, tag="busy1")
    assert layer.receive(late, FROM_HOP, 34.0) == [StrayResponse(response=late, source=FROM_HOP)]


def test_ict_final_without_provisional(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    out = layer.receive(reply(invite, 404), FROM_HOP, 0.1)
    assert [type(o) for o in out] == [ResponseReceived, SendMessage]
    assert layer.state_of(key) is IctState.COMPLETED
    assert layer.next_deadline() == 32.1  # only Timer D remains
    assert sent_at(run_until(layer, 100.0)) == []


def test_ict_2xx_accepted_passes_retransmissions_up_until_timer_m(
    layer: TransactionLayer, ids: SeededIds
) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    ok = reply(invite, 200)
    assert layer.receive(ok, FROM_HOP, 1.0) == [ResponseReceived(response=ok, transaction_key=key)]
    assert layer.state_of(key) is IctState.ACCEPTED
    assert layer.next_deadline() == 33.0  # Timer M = 64*T1 (RFC 6026)
    again = reply(invite, 200)
    forked = reply(invite, 200, tag="other-fork")
    # Every 2xx goes up (the TU sends an ACK for each); the layer never ACKs a 2xx.
    assert layer.receive(again, FROM_HOP, 2.0) == [
        ResponseReceived(response=again, transaction_key=key)
    ]
    assert layer.receive(forked, FROM_HOP, 3.0) == [
        ResponseReceived(response=forked, transaction_key=key)
    ]
    assert layer.receive(reply(invite, 486), FROM_HOP, 4.0) == []
    assert run_until(layer, 100.0) == [(33.0, TransactionTerminated(transaction_key=key))]
    late = reply(invite, 200)
    assert layer.receive(late, FROM_HOP, 40.0) == [StrayResponse(response=late, source=FROM_HOP)]


def test_ict_late_handle_timeout_sends_one_retransmission(
    layer: TransactionLayer, ids: SeededIds
) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    assert layer.handle_timeout(40.0) == [
        SendMessage(message=invite, peer=UDP_HOP),
        TransactionTimedOut(transaction_key=key),
        TransactionTerminated(transaction_key=key),
    ]


# -- ICT over TCP ----------------------------------------------------------


def test_ict_tcp_no_retransmissions_timer_b_fires(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids, transport="tcp")
    key, _ = layer.send_request(invite, TCP_HOP, 0.0)
    assert layer.next_deadline() == 32.0
    assert run_until(layer, 100.0) == [
        (32.0, TransactionTimedOut(transaction_key=key)),
        (32.0, TransactionTerminated(transaction_key=key)),
    ]


def test_ict_tcp_non_2xx_terminates_at_once(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids, transport="tcp")
    key, _ = layer.send_request(invite, TCP_HOP, 0.0)
    busy = reply(invite, 486)
    out = layer.receive(busy, TCP_HOP, 1.0)
    assert [type(o) for o in out] == [ResponseReceived, SendMessage, TransactionTerminated]
    assert out[2] == TransactionTerminated(transaction_key=key)
    assert isinstance(out[1], SendMessage)
    assert out[1].peer == TCP_HOP  # the ACK goes over the INVITE's flow
    assert len(layer) == 0


def test_ict_tcp_2xx_still_waits_timer_m(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids, transport="tcp")
    key, _ = layer.send_request(invite, TCP_HOP, 0.0)
    layer.receive(reply(invite, 200), TCP_HOP, 1.0)
    assert layer.state_of(key) is IctState.ACCEPTED
    assert layer.next_deadline() == 33.0


# -- NICT ------------------------------------------------------------------


def test_nict_timer_e_capped_at_t2_then_timer_f(layer: TransactionLayer, ids: SeededIds) -> None:
    options = request(OPTIONS, ids)
    key, out = layer.send_request(options, UDP_HOP, 0.0)
    assert out == [SendMessage(message=options, peer=UDP_HOP)]
    events = run_until(layer, 100.0)
    # Intervals 0.5, 1, 2, 4, 4, 4 ...: doubling capped at T2.
    times = sent_at(events)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert others(events) == [
        (32.0, TransactionTimedOut(transaction_key=key)),
        (32.0, TransactionTerminated(transaction_key=key)),
    ]


def test_nict_proceeding_retransmits_every_t2(layer: TransactionLayer, ids: SeededIds) -> None:
    options = request(OPTIONS, ids)
    key, _ = layer.send_request(options, UDP_HOP, 0.0)
    layer.handle_timeout(0.5)
    trying = reply(options, 100)
    assert layer.receive(trying, FROM_HOP, 0.6) == [
        ResponseReceived(response=trying, transaction_key=key)
    ]
    assert layer.state_of(key) is NictState.PROCEEDING
    events = run_until(layer, 100.0)
    # The running Timer E fires at 1.5, then every T2 = 4 s (RFC 3261 §17.1.2.2).
    assert sent_at(events) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert others(events)[0] == (32.0, TransactionTimedOut(transaction_key=key))


def test_nict_final_then_timer_k(layer: TransactionLayer, ids: SeededIds) -> None:
    options = request(OPTIONS, ids)
    key, _ = layer.send_request(options, UDP_HOP, 0.0)
    ok = reply(options, 200)
    assert layer.receive(ok, FROM_HOP, 2.0) == [ResponseReceived(response=ok, transaction_key=key)]
    assert layer.state_of(key) is NictState.COMPLETED
    assert layer.next_deadline() == 7.0  # Timer K = T4
    assert layer.receive(reply(options, 200), FROM_HOP, 3.0) == []  # absorbed
    assert layer.receive(reply(options, 180), FROM_HOP, 3.5) == []
    assert run_until(layer, 100.0) == [(7.0, TransactionTerminated(transaction_key=key))]


def test_nict_tcp_final_terminates_at_once(layer: TransactionLayer, ids: SeededIds) -> None:
    options = request(OPTIONS, ids, transport="tcp")
    key, _ = layer.send_request(options, TCP_HOP, 0.0)
    assert layer.next_deadline() == 32.0  # Timer F only
    ok = reply(options, 404)
    assert layer.receive(ok, TCP_HOP, 1.0) == [
        ResponseReceived(response=ok, transaction_key=key),
        TransactionTerminated(transaction_key=key),
    ]


# -- CANCEL (RFC 3261 §9.1) -------------------------------------------------


def test_cancel_waits_for_a_provisional(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    cancel_key, out = layer.cancel(key, 0.2)
    assert out == []
    assert cancel_key == ClientKey(branch=key.branch, method="CANCEL")
    assert cancel_key not in layer
    ringing = reply(invite, 180)
    out = layer.receive(ringing, FROM_HOP, 0.3)
    assert out[0] == ResponseReceived(response=ringing, transaction_key=key)
    assert isinstance(out[1], SendMessage)
    assert out[1].peer == UDP_HOP
    cancel = out[1].message
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.via == [invite.top_via]
    assert cancel.to == invite.to
    assert cancel.from_ == invite.from_
    assert cancel.call_id == invite.call_id
    assert str(cancel.cseq) == "314159 CANCEL"
    assert cancel.headers.get_all("Route") == invite.headers.get_all("Route")
    assert layer.counts() == {"ICT": 1, "NICT": 1, "IST": 0, "NIST": 0}

    ok = reply(cancel, 200)
    assert layer.receive(ok, FROM_HOP, 0.4) == [
        ResponseReceived(response=ok, transaction_key=cancel_key)
    ]
    terminated = reply(invite, 487)
    out = layer.receive(terminated, FROM_HOP, 0.5)
    assert [type(o) for o in out] == [ResponseReceived, SendMessage]


def test_cancel_in_proceeding_is_sent_at_once(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    layer.receive(reply(invite, 180), FROM_HOP, 0.1)
    cancel_key, out = layer.cancel(key, 1.0, reason='SIP;cause=200;text="Call completed elsewhere"')
    assert len(out) == 1
    assert isinstance(out[0], SendMessage)
    assert out[0].message.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert layer.state_of(cancel_key) is NictState.TRYING
    assert layer.next_deadline() == 1.5  # the CANCEL's Timer E


def test_cancel_never_sent_when_final_comes_first(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    cancel_key, _ = layer.cancel(key, 0.1)
    out = layer.receive(reply(invite, 200), FROM_HOP, 0.2)
    assert [type(o) for o in out] == [ResponseReceived]
    assert cancel_key not in layer


def test_cancel_misuse_is_a_local_error(layer: TransactionLayer, ids: SeededIds) -> None:
    invite = request(INVITE, ids)
    key, _ = layer.send_request(invite, UDP_HOP, 0.0)
    layer.cancel(key, 0.1)
    with pytest.raises(LocalProtocolError, match="already cancelled"):
        layer.cancel(key, 0.2)
    other = request(INVITE, ids)
    other_key, _ = layer.send_request(other, UDP_HOP, 0.0)
    layer.receive(reply(other, 486), FROM_HOP, 0.3)
    with pytest.raises(LocalProtocolError, match="CANCEL not allowed in state COMPLETED"):
        layer.cancel(other_key, 0.4)
    options_key, _ = layer.send_request(request(OPTIONS, ids), UDP_HOP, 0.0)
    with pytest.raises(LocalProtocolError, match="no client INVITE transaction"):
        layer.cancel(options_key, 0.5)


# -- send_request contract --------------------------------------------------


def test_send_request_rejects_misuse(layer: TransactionLayer, ids: SeededIds) -> None:
    bare = parse_message(OPTIONS.replace(b"z9hG4bKopt1", b"opt1"))
    assert isinstance(bare, Request)
    with pytest.raises(LocalProtocolError, match="z9hG4bK"):
        layer.send_request(bare, UDP_HOP, 0.0)
    options = request(OPTIONS, ids)
    layer.send_request(options, UDP_HOP, 0.0)
    with pytest.raises(LocalProtocolError, match="exists"):
        layer.send_request(options, UDP_HOP, 0.0)
    ack = parse_message(OPTIONS.replace(b"OPTIONS", b"ACK"))
    assert isinstance(ack, Request)
    with pytest.raises(LocalProtocolError, match="send_stateless"):
        layer.send_request(ack, UDP_HOP, 0.0)
    assert layer.send_stateless(ack, UDP_HOP) == [SendMessage(message=ack, peer=UDP_HOP)]


def test_add_via_prepends_branch_and_rport(ids: SeededIds) -> None:
    msg = parse_message(OPTIONS)
    assert isinstance(msg, Request)
    branch = add_via(msg, transport="tcp", host="2001:db8::1", port=5070, ids=ids)
    assert branch.startswith("z9hG4bK")
    assert len(msg.via) == 2
    top = msg.top_via
    assert (top.transport, top.host, top.port, top.branch) == ("TCP", "[2001:db8::1]", 5070, branch)
    assert top.wants_rport
    assert msg.via[1].branch == "z9hG4bKopt1"
