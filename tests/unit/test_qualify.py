"""Liveness of UDP bindings without push parameters (OPTIONS pings), on hand-moved time.

What a PBX does for a softphone that vanished without unregistering (Asterisk
``qualify``, Kamailio nathelper pings): once a UDP binding has been quiet for
``udp_foreground_s`` the server sends it an OPTIONS (RFC 3261 §11); no answer within
``udp_qualify_timeout_s`` and it is offline — not rung (a call gets 480 at once instead
of waiting Timer B, 32 s), presence closed (RFC 3856) — until it shows any sign of life.
The binding itself stays until it expires (RFC 3261 §10.3).
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from sipwake.node import ReachabilityChanged
from sipwake.proxy.plan import CallPlan
from sipwake.proxy.qualify import QualifySettings
from sipwake.sip.message import Request, make_response
from sipwake.sip.peer import Peer
from sipwake.transport.stun import binding_request, binding_response
from tests.unit.test_presence import _ack_notifies, _notifies, _subscribe
from tests.unit.test_presence import _state as presence
from tests.unit.wakelab import UDP, Phone, Sent, WakeLab

TOKEN = "a1b2c3d4" * 8
WINDOW = 120.0
TIMEOUT = 6.0


def _lab(**qualify: object) -> WakeLab:
    return WakeLab(
        plan=CallPlan(udp_foreground_s=WINDOW),
        qualify=QualifySettings(**qualify),  # type: ignore[arg-type]
    )


def _softphone(lab: WakeLab, user: str = "erin", port: int = 7003) -> Phone:
    phone = Phone(user=user, port=port, transport="udp")
    assert lab.register(phone, expires=3600).status == 200
    return phone


def _pings(lab: WakeLab, phone: Phone) -> list[Sent]:
    """The OPTIONS transactions sent to ``phone`` (retransmissions left out)."""
    return lab.invites_to(phone.port, "OPTIONS")


def _state(lab: WakeLab, user: str = "erin") -> tuple[str, list[str]]:
    """(presence, device states) as ``sipwake status`` shows them."""
    for entry in lab.node.snapshot(lab.now):
        if entry["aor"] == f"sip:{user}@lab.test":
            devices = entry["devices"]
            assert isinstance(devices, list)
            return str(entry["presence"]), [str(d["state"]) for d in devices]
    return "none", []


def _answer(lab: WakeLab, ping: Sent, status: int) -> None:
    assert isinstance(ping.message, Request)
    response = make_response(ping.message, status, to_tag="e1")
    lab.outputs += lab.node.receive(response.to_bytes(), ping.peer, UDP, lab.now)


def _silenced(lab: WakeLab, phone: Phone) -> None:
    """Let the phone's binding be pinged and the ping go unanswered."""
    lab.advance(WINDOW + TIMEOUT + 0.1)
    assert len(_pings(lab, phone)) == 1
    assert _state(lab) == ("offline", ["offline"])


def test_a_quiet_binding_is_pinged_once_udp_foreground_s_has_passed() -> None:
    lab = _lab()
    registered = lab.now
    phone = _softphone(lab)
    lab.advance(WINDOW - 0.1)
    assert _pings(lab, phone) == []
    lab.advance(0.2)
    (ping,) = _pings(lab, phone)
    request = ping.message
    assert isinstance(request, Request)
    assert ping.peer == phone.peer  # where the REGISTER came from: through the NAT
    assert str(request.uri) == f"sip:erin@127.0.0.1:{phone.port}"
    assert request.max_forwards == 70
    assert request.top_via.transport == "UDP"
    assert (request.top_via.branch or "").startswith("z9hG4bK")
    assert request.from_.tag is not None
    assert request.to.tag is None
    assert str(request.to.uri) == "sip:erin@lab.test"
    assert request.headers.get("CSeq") == "1 OPTIONS"
    assert lab.node.qualifier.pings_sent == 1
    assert _state(lab) == ("available", ["foreground"])  # still, until the timeout
    assert registered + WINDOW <= lab.now


@pytest.mark.parametrize("status", [200, 404, 501])
def test_any_answer_keeps_it_foreground_and_the_next_ping_is_a_window_later(status: int) -> None:
    lab = _lab()
    phone = _softphone(lab)
    lab.advance(WINDOW + 0.5)
    (ping,) = _pings(lab, phone)
    _answer(lab, ping, status)
    answered = lab.now
    lab.advance(TIMEOUT + 1)
    assert _state(lab) == ("available", ["foreground"])
    lab.call("erin")
    assert len(lab.invites_to(phone.port)) == 1  # rung
    lab.advance(answered + WINDOW - 0.1 - lab.now)
    assert len(_pings(lab, phone)) == 1
    lab.advance(0.2)
    assert len(_pings(lab, phone)) == 2


def test_no_answer_makes_it_offline_and_a_call_gets_480_at_once() -> None:
    lab = _lab()
    phone = _softphone(lab)
    lab.advance(WINDOW + 0.05)
    assert len(_pings(lab, phone)) == 1
    lab.advance(TIMEOUT - 0.1)
    assert _state(lab) == ("available", ["foreground"])
    lab.advance(0.1)
    assert _state(lab) == ("offline", ["offline"])
    (change,) = [o for o in lab.outputs if isinstance(o, ReachabilityChanged)]
    assert change.aor == "sip:erin@lab.test"
    assert not change.reachable
    # RFC 3261 §10.3: the binding stays registered; only the device or expiry removes it.
    assert len(lab.node.registrar.lookup("sip:erin@lab.test", lab.now)) == 1
    lab.call("erin")
    assert lab.invites_to(phone.port) == []
    assert lab.to_caller() == [100, 480]  # now, not after Timer B


def test_offline_devices_are_left_out_while_others_ring() -> None:
    lab = _lab()
    desk = _softphone(lab, port=7003)
    lab.advance(WINDOW + TIMEOUT + 0.1)
    laptop = _softphone(lab, port=7004)  # registered later: alive
    assert sorted(_state(lab)[1]) == ["foreground", "offline"]
    lab.call("erin")
    assert lab.invites_to(desk.port) == []
    assert len(lab.invites_to(laptop.port)) == 1


def test_a_late_answer_to_the_ping_brings_it_back() -> None:
    lab = _lab()
    phone = _softphone(lab)
    lab.advance(WINDOW + 0.05)
    (ping,) = _pings(lab, phone)
    lab.advance(TIMEOUT + 1)
    assert _state(lab) == ("offline", ["offline"])
    _answer(lab, ping, 200)  # within Timer F: the transaction is still there
    assert _state(lab) == ("available", ["foreground"])
    changes = [o for o in lab.outputs if isinstance(o, ReachabilityChanged)]
    assert [c.reachable for c in changes] == [False, True]


def test_any_request_from_its_address_brings_it_back() -> None:
    lab = _lab()
    phone = _softphone(lab)
    _silenced(lab, phone)
    data = (
        f"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bKo1;rport\r\n"
        f"From: <sip:erin@lab.test>;tag=o1\r\nTo: <sip:127.0.0.1:5060>\r\n"
        f"Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    lab.outputs += lab.node.receive(data, phone.peer, UDP, lab.now)
    assert _state(lab) == ("available", ["foreground"])
    lab.call("erin")
    assert len(lab.invites_to(phone.port)) == 1


def test_a_keepalive_brings_it_back_and_one_from_elsewhere_does_not() -> None:
    lab = _lab()
    phone = _softphone(lab)
    _silenced(lab, phone)
    other = Peer(transport="udp", host="127.0.0.1", port=phone.port + 1)
    assert lab.node.keepalive(other, lab.now) == []
    assert _state(lab) == ("offline", ["offline"])
    lab.outputs += lab.node.keepalive(phone.peer, lab.now)
    assert _state(lab) == ("available", ["foreground"])


def test_a_refresh_brings_it_back() -> None:
    lab = _lab()
    phone = _softphone(lab)
    _silenced(lab, phone)
    assert lab.register(phone).status == 200
    assert _state(lab) == ("available", ["foreground"])


def test_traffic_resets_the_window_so_a_busy_phone_is_never_pinged() -> None:
    lab = _lab()
    phone = _softphone(lab)
    for _ in range(5):
        lab.advance(WINDOW - 10)
        lab.outputs += lab.node.keepalive(phone.peer, lab.now)
    assert _pings(lab, phone) == []


def test_presence_watchers_are_notified_of_both_changes() -> None:
    lab = _lab()
    phone = _softphone(lab)
    _subscribe(lab, expires=3600, user="erin")
    _ack_notifies(lab)
    _silenced(lab, phone)
    _ack_notifies(lab)
    lab.outputs += lab.node.keepalive(phone.peer, lab.now)
    assert [presence(n) for n in _notifies(lab)] == ["available", "offline", "available"]


def test_one_ping_at_a_time_and_an_offline_binding_once_a_window() -> None:
    # A window shorter than Timer F: the unanswered ping's transaction (32 s) holds back
    # the next one; after it the next goes a window after the last ping.
    lab = WakeLab(plan=CallPlan(udp_foreground_s=10.0), qualify=QualifySettings(timeout_s=5.0))
    phone = _softphone(lab)
    lab.advance(10.05)
    assert len(_pings(lab, phone)) == 1
    lab.advance(31.9)
    assert len(_pings(lab, phone)) == 1
    lab.advance(0.2)  # Timer F ended the first one
    assert len(_pings(lab, phone)) == 2
    lab.advance(400)
    pings = len(_pings(lab, phone))
    assert 400 / 33 - 1 <= pings - 2 <= 400 / 32 + 1


def test_pushable_udp_bindings_are_never_pinged_and_turn_suspended() -> None:
    lab = _lab()
    iphone = Phone(user="bob", port=7001, transport="udp", instance="urn:uuid:i", token=TOKEN)
    assert lab.register(iphone).status == 200
    lab.advance(1000)
    assert _pings(lab, iphone) == []
    assert _state(lab, "bob") == ("away", ["suspended"])
    assert len(lab.node.qualifier) == 0


def test_connections_are_not_pinged() -> None:
    lab = _lab()
    tcp = Phone(user="dave", port=7002, transport="tcp")
    assert lab.register(tcp).status == 200
    lab.advance(1000)
    assert _pings(lab, tcp) == []


def test_a_binding_that_loses_its_push_token_is_pinged_from_then_on() -> None:
    lab = _lab()
    phone = Phone(user="bob", port=7001, transport="udp", instance="urn:uuid:i", token=TOKEN)
    assert lab.register(phone).status == 200
    lab.advance(WINDOW + 1)  # suspended: a call pushes it, and the token is dead
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(push, "invalid_target", reason="Unregistered", http_status=410)
    assert len(lab.node.qualifier) == 1
    assert _pings(lab, phone) == []
    lab.advance(1)  # a window after its REGISTER, long past: due at once
    assert len(_pings(lab, phone)) == 1


def test_the_rate_cap_spreads_pings_that_fall_due_together() -> None:
    # A registration storm: 50 softphones registered in the same instant fall due
    # together a window later; at 10 pings/s they go out over five seconds.
    lab = _lab(per_s=10.0)
    phones = [_softphone(lab, user=f"u{i}", port=8000 + i) for i in range(50)]
    lab.advance(WINDOW + 0.001)
    sent = [sum(len(_pings(lab, p)) for p in phones)]
    for _ in range(5):
        lab.advance(1.0)
        sent.append(sum(len(_pings(lab, p)) for p in phones))
    assert sent[0] == 10  # the bucket's one second's worth
    assert [b - a for a, b in itertools.pairwise(sent)] == [10, 10, 10, 10, 0]


def test_qualify_off_leaves_them_foreground() -> None:
    lab = _lab(enabled=False)
    phone = _softphone(lab)
    lab.advance(1000)
    assert _pings(lab, phone) == []
    assert _state(lab) == ("available", ["foreground"])


def test_an_offline_binding_still_expires() -> None:
    lab = _lab()
    phone = Phone(user="erin", port=7003, transport="udp")
    assert lab.register(phone, expires=300).status == 200
    _silenced(lab, phone)
    lab.advance(300)
    assert lab.node.registrar.lookup("sip:erin@lab.test", lab.now) == []
    assert len(lab.node.qualifier) == 0


def test_registered_through_an_edge_proxy_only_pings_count() -> None:
    # With a Path, the source address is the edge proxy carrying everyone's traffic.
    lab = _lab()
    proxy = Peer(transport="udp", host="127.0.0.1", port=7100)
    data = (
        b"REGISTER sip:lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:7100;branch=z9hG4bKp1;rport\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKd1;rport\r\n"
        b"Path: <sip:127.0.0.1:7100;lr>\r\nSupported: path\r\n"
        b"From: <sip:erin@lab.test>;tag=p1\r\nTo: <sip:erin@lab.test>\r\n"
        b"Call-ID: p1\r\nCSeq: 1 REGISTER\r\nContact: <sip:erin@10.0.0.9:5060>\r\n"
        b"Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    for output in lab.node.receive(data, proxy, UDP, lab.now):
        token = getattr(output, "token", None)
        if token is not None:
            lab.outputs += lab.node.changes_stored(token, True, lab.now)
    lab.advance(WINDOW + 0.05)
    (ping,) = lab.invites_to(proxy.port, "OPTIONS")
    assert isinstance(ping.message, Request)
    assert ping.message.headers.get("Route") == "<sip:127.0.0.1:7100;lr>"
    assert str(ping.message.uri) == "sip:erin@10.0.0.9:5060"
    lab.advance(TIMEOUT)
    assert lab.node.keepalive(proxy, lab.now) == []  # the proxy's traffic is not erin's
    assert _state(lab) == ("offline", ["offline"])


# -- STUN keep-alives (RFC 5626 §4.4.2), test vectors of RFC 5769 ---------------------------

RFC5769_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_stun_binding_response_ipv4_as_rfc5769() -> None:
    response = binding_response(RFC5769_ID, "192.0.2.1", 32853)
    assert response is not None
    assert response[:2] == b"\x01\x01"
    assert response[4:8] == bytes.fromhex("2112a442")
    assert response[8:20] == RFC5769_ID
    # XOR-MAPPED-ADDRESS as RFC 5769 §2.2 gives it.
    assert response[20:] == bytes.fromhex("0020 0008 0001 a147 e112a643".replace(" ", ""))


def test_stun_binding_response_ipv6_as_rfc5769() -> None:
    response = binding_response(RFC5769_ID, "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert response is not None
    expected = "0020 0014 0002 a147 0113a9faa5d3f179bc25f4b5bed2b9d9"
    assert response[20:] == bytes.fromhex(expected.replace(" ", ""))


def test_stun_binding_requests_are_told_from_sip() -> None:
    request = bytes.fromhex("0001 0000 2112a442".replace(" ", "")) + RFC5769_ID
    assert binding_request(request) == RFC5769_ID
    assert binding_request(b"OPTIONS sip:x SIP/2.0\r\n\r\n") is None
    assert binding_request(b"\r\n\r\n") is None
    assert binding_request(request[:19]) is None
    assert binding_request(request + b"\x00\x00\x00\x00") is None  # length mismatch
    response = binding_response(RFC5769_ID, "127.0.0.1", 5060)
    assert response is not None
    assert binding_request(response) is None  # a response, not a request


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        QualifySettings().per_s = 1.0  # type: ignore[misc]


def test_an_answered_ping_does_not_hold_back_the_next_while_its_transaction_lingers() -> None:
    # A window shorter than Timer K (T4, 5 s over UDP): the answered ping's transaction
    # still lingers to absorb retransmitted responses, but the next ping is due a window
    # after the answer.
    lab = WakeLab(plan=CallPlan(udp_foreground_s=2.0))
    phone = _softphone(lab)
    lab.advance(2.05)
    (ping,) = _pings(lab, phone)
    _answer(lab, ping, 200)
    lab.advance(1.9)
    assert len(_pings(lab, phone)) == 1
    lab.advance(0.2)
    assert len(_pings(lab, phone)) == 2


def test_a_third_party_registered_binding_is_pinged_at_its_contact() -> None:
    """Registered from one port for a Contact on another (RFC 3261 §10.2, no NAT): calls
    go to the Contact (sipwake.registrar.reach), and so do pings; its answers from there
    are its signs of life."""
    lab = _lab()
    data = (
        b"REGISTER sip:lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:6300;branch=z9hG4bKtp1;rport\r\n"
        b"From: <sip:erin@lab.test>;tag=tp\r\nTo: <sip:erin@lab.test>\r\n"
        b"Call-ID: third-party\r\nCSeq: 1 REGISTER\r\n"
        b"Contact: <sip:erin@127.0.0.1:6200>\r\nExpires: 3600\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    registering = Peer(transport="udp", host="127.0.0.1", port=6300)
    from sipwake.node import PersistChanges

    for output in lab.node.receive(data, registering, UDP, lab.now):
        if isinstance(output, PersistChanges) and output.token is not None:
            lab.outputs += lab.node.changes_stored(output.token, True, lab.now)
    lab.advance(WINDOW + 0.1)
    device = Phone(user="erin", port=6200, transport="udp")
    (ping,) = _pings(lab, device)
    assert ping.peer.port == 6200
    _answer(lab, ping, 200)
    lab.advance(TIMEOUT + 1)
    assert _state(lab) == ("available", ["foreground"])
