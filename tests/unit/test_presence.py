"""Presence (RFC 3856 over RFC 6665) through the pure node, on hand-moved time."""

from __future__ import annotations

import math
from xml.etree import ElementTree

import pytest

from sipwake.presence import pidf_document, presence_of
from sipwake.proxy.plan import CallPlan
from sipwake.registrar.bindings import Binding
from sipwake.registrar.state import client_state, foreground_ends_at
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import push_target_from_uri
from sipwake.sip.uri import SipUri, parse_uri
from tests.unit.wakelab import TEAM_PARAM as TEAM
from tests.unit.wakelab import UDP, Phone, WakeLab

WATCHER = Peer(transport="udp", host="127.0.0.1", port=6100)
TOKEN = "a1b2c3d4" * 8
NS = {
    "p": "urn:ietf:params:xml:ns:pidf",
    "dm": "urn:ietf:params:xml:ns:pidf:data-model",
    "rpid": "urn:ietf:params:xml:ns:pidf:rpid",
}


def _subscribe(
    lab: WakeLab,
    *,
    expires: int | None = 600,
    to_tag: str | None = None,
    cseq: int = 1,
    event: str = "presence",
    user: str = "bob",
) -> None:
    tag = f";tag={to_tag}" if to_tag else ""
    expires_line = f"Expires: {expires}\r\n" if expires is not None else ""
    uri = f"sip:{user}@lab.test"
    target = "sip:127.0.0.1:5060" if to_tag else uri  # refreshes go to our Contact
    data = (
        f"SUBSCRIBE {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6100;branch=z9hG4bKs{cseq}x{to_tag};rport\r\n"
        f"From: <sip:alice@lab.test>;tag=w1\r\nTo: <{uri}>{tag}\r\n"
        f"Call-ID: watch-1\r\nCSeq: {cseq} SUBSCRIBE\r\n"
        f"Contact: <sip:alice@127.0.0.1:6100>\r\nEvent: {event}\r\n"
        f"Accept: application/pidf+xml\r\n{expires_line}"
        f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    lab.outputs += lab.node.receive(data, WATCHER, UDP, lab.now)


def _responses(lab: WakeLab) -> list[Response]:
    return [
        s.message
        for s in lab.sent_to(WATCHER)
        if isinstance(s.message, Response) and s.message.cseq.method == "SUBSCRIBE"
    ]


def _notifies(lab: WakeLab) -> list[Request]:
    return [
        s.message for s in lab.invites_to(WATCHER.port, "NOTIFY") if isinstance(s.message, Request)
    ]


def _state(notify: Request) -> str:
    """available / away / offline, read back from the PIDF body."""
    root = ElementTree.fromstring(notify.body)
    basic = root.findtext("p:tuple/p:status/p:basic", namespaces=NS)
    if basic == "closed":
        return "offline"
    away = root.find("dm:person/rpid:activities/rpid:away", NS)
    return "away" if away is not None else "available"


def _ack_notifies(lab: WakeLab, status: int = 200) -> None:
    for notify in _notifies(lab):
        response = make_response(notify, status)
        lab.outputs += lab.node.receive(response.to_bytes(), WATCHER, UDP, lab.now)


def test_pidf_documents_for_each_presence() -> None:
    for presence, basic, activity in (
        ("available", "open", None),
        ("away", "open", "away"),
        ("offline", "closed", None),
    ):
        root = ElementTree.fromstring(pidf_document("sip:bob@lab.test", presence))  # type: ignore[arg-type]
        assert root.get("entity") == "sip:bob@lab.test"
        assert root.findtext("p:tuple/p:status/p:basic", namespaces=NS) == basic
        found = root.find("dm:person/rpid:activities/rpid:away", NS) is not None
        assert found == (activity == "away")
    assert presence_of(["suspended", "foreground"]) == "available"
    assert presence_of(["suspended", "offline"]) == "away"
    assert presence_of([]) == "offline"


def test_subscribe_gets_200_and_a_notify_with_the_current_presence() -> None:
    lab = WakeLab()
    phone = Phone(user="bob", port=7001, instance="urn:uuid:p", token=TOKEN)
    lab.register(phone)
    lab.suspend(phone)
    _subscribe(lab, expires=600)
    (ok,) = _responses(lab)
    assert ok.status == 200
    assert ok.to.tag
    assert ok.headers.get("Contact") == "<sip:127.0.0.1:5060>"
    assert ok.headers.get("Expires") == "600"
    (notify,) = _notifies(lab)
    assert notify.call_id == "watch-1"
    assert notify.from_.tag == ok.to.tag
    assert notify.to.tag == "w1"
    assert notify.headers.get("Event") == "presence"
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.headers.get("Content-Type") == "application/pidf+xml"
    assert _state(notify) == "away"  # suspended: reachable only by a push


def test_notify_follows_registration_flow_loss_and_removal() -> None:
    lab = WakeLab()
    _subscribe(lab)
    phone = Phone(user="bob", port=7001, instance="urn:uuid:p", token=TOKEN)
    assert _state(_notifies(lab)[-1]) == "offline"
    lab.register(phone)
    assert _state(_notifies(lab)[-1]) == "available"
    lab.register(phone)  # a refresh over a new flow changes nothing for a watcher
    assert len(_notifies(lab)) == 2
    lab.suspend(phone)
    assert _state(_notifies(lab)[-1]) == "away"
    lab.register(phone, expires=0)
    assert _state(_notifies(lab)[-1]) == "offline"
    cseqs = [n.cseq.seq for n in _notifies(lab)]
    assert cseqs == list(range(1, len(cseqs) + 1))


def test_binding_expiry_is_notified() -> None:
    lab = WakeLab()
    phone = Phone(user="bob", port=7001, transport="udp")
    lab.register(phone, expires=120)
    _subscribe(lab, expires=3600)
    assert _state(_notifies(lab)[-1]) == "available"
    _ack_notifies(lab)  # an unanswered NOTIFY times out (Timer F) and ends it
    lab.advance(121)
    assert _state(_notifies(lab)[-1]) == "offline"


def test_unsubscribe_sends_a_final_notify() -> None:
    lab = WakeLab()
    _subscribe(lab)
    tag = _responses(lab)[0].to.tag
    _subscribe(lab, expires=0, to_tag=tag, cseq=2)
    assert [r.status for r in _responses(lab)] == [200, 200]
    final = _notifies(lab)[-1]
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert len(lab.node.presence) == 0
    lab.register(Phone(user="bob", port=7001, transport="udp"))
    assert len(_notifies(lab)) == 2  # nobody watches any more


def test_refresh_extends_and_expiry_terminates() -> None:
    lab = WakeLab()
    _subscribe(lab, expires=100)
    _ack_notifies(lab)
    tag = _responses(lab)[0].to.tag
    lab.advance(90)
    _subscribe(lab, expires=100, to_tag=tag, cseq=2)
    assert _notifies(lab)[-1].headers.get("Subscription-State") == "active;expires=100"
    _ack_notifies(lab)
    lab.advance(99)
    assert len(lab.node.presence) == 1
    lab.advance(2)
    assert _notifies(lab)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    assert len(lab.node.presence) == 0


def test_unknown_event_short_expiry_and_unknown_dialog_are_refused() -> None:
    lab = WakeLab()
    _subscribe(lab, event="dialog")
    _subscribe(lab, expires=10, cseq=2)
    _subscribe(lab, to_tag="nosuch", cseq=3)
    bad_event, too_brief, no_dialog = _responses(lab)
    assert bad_event.status == 489
    assert bad_event.headers.get("Allow-Events") == "presence"
    assert too_brief.status == 423
    assert too_brief.headers.get("Min-Expires") == "60"
    assert no_dialog.status == 481
    assert _notifies(lab) == []


def test_unanswered_notify_ends_the_subscription() -> None:
    lab = WakeLab()
    _subscribe(lab)
    lab.advance(33)  # Timer F: 64*T1 without an answer
    assert len(lab.node.presence) == 0


def test_notify_refused_with_481_ends_the_subscription() -> None:
    lab = WakeLab()
    _subscribe(lab)
    _ack_notifies(lab, 481)
    assert len(lab.node.presence) == 0
    lab.register(Phone(user="bob", port=7001, transport="udp"))
    assert len(_notifies(lab)) == 1


def test_a_udp_push_phone_that_stops_registering_turns_away_by_time_alone() -> None:
    lab = WakeLab(plan=CallPlan(udp_foreground_s=120.0))
    phone = Phone(user="bob", port=7001, transport="udp", instance="urn:uuid:u", token=TOKEN)
    lab.register(phone)
    registered = lab.now
    _subscribe(lab, expires=3600)
    _ack_notifies(lab)
    assert _state(_notifies(lab)[-1]) == "available"  # fresh UDP traffic: foreground
    deadline = lab.node.presence.next_deadline()
    assert deadline is not None
    assert registered + 120.0 < deadline < registered + 120.001  # the window's end, no later
    lab.advance(119.9)
    assert len(_notifies(lab)) == 1
    lab.advance(0.2)  # nothing but time happened: the binding is stale, the phone asleep
    (first, away) = _notifies(lab)
    assert _state(away) == "away"
    assert away.cseq.seq == first.cseq.seq + 1
    assert away.headers.get("Subscription-State", "").startswith("active;expires=")
    _ack_notifies(lab)
    lab.advance(600)
    assert len(_notifies(lab)) == 2  # suspended stays suspended: no more NOTIFYs


def test_a_re_register_moves_the_time_the_phone_turns_away() -> None:
    lab = WakeLab(plan=CallPlan(udp_foreground_s=120.0))
    phone = Phone(user="bob", port=7001, transport="udp", instance="urn:uuid:u", token=TOKEN)
    lab.register(phone)
    _subscribe(lab, expires=3600)
    _ack_notifies(lab)
    lab.advance(100)
    lab.register(phone)  # the app refreshes its binding: foreground for another 120 s
    refreshed = lab.now
    lab.advance(100)
    assert len(_notifies(lab)) == 1
    deadline = lab.node.presence.next_deadline()
    assert deadline is not None
    assert refreshed + 120.0 < deadline < refreshed + 120.001
    lab.advance(21)
    assert [_state(n) for n in _notifies(lab)] == ["available", "away"]


def test_no_time_check_without_a_watcher_or_for_connections_and_plain_udp() -> None:
    lab = WakeLab(plan=CallPlan(udp_foreground_s=120.0))
    phone = Phone(user="bob", port=7001, transport="udp", instance="urn:uuid:u", token=TOKEN)
    lab.register(phone)
    assert lab.node.presence_changes_at("sip:bob@lab.test", lab.now) is not None
    assert lab.node.presence.next_deadline() is None  # nobody watches bob
    # A TCP phone and a UDP phone without push parameters: only a REGISTER or a lost
    # connection changes their state, never time alone.
    tcp = Phone(user="dave", port=7002, transport="tcp", instance="urn:uuid:t", token=TOKEN)
    lab.register(tcp)
    lab.register(Phone(user="erin", port=7003, transport="udp"))
    assert lab.node.presence_changes_at("sip:dave@lab.test", lab.now) is None
    assert lab.node.presence_changes_at("sip:erin@lab.test", lab.now) is None
    _subscribe(lab, expires=3600, user="dave")
    _subscribe(lab, expires=600, user="erin", cseq=5)
    _ack_notifies(lab)
    assert [_state(n) for n in _notifies(lab)] == ["available", "available"]
    assert lab.node.presence.next_deadline() == lab.now + 600  # an expiry, no re-check
    lab.advance(599)
    # Erin's silent UDP phone is not re-checked by the clock but pinged once quiet for
    # udp_foreground_s (sipwake.proxy.qualify); it never answers, so it reads offline.
    notifies = _notifies(lab)
    assert [_state(n) for n in notifies] == ["available", "available", "offline"]
    assert notifies[-1].uri == notifies[1].uri


def test_the_re_check_goes_when_the_watcher_does() -> None:
    lab = WakeLab(plan=CallPlan(udp_foreground_s=120.0))
    lab.register(Phone(user="bob", port=7001, transport="udp", instance="urn:uuid:u", token=TOKEN))
    _subscribe(lab, expires=3600)
    _ack_notifies(lab)
    assert lab.node.presence.next_deadline() is not None
    _subscribe(lab, expires=0, to_tag=_responses(lab)[0].to.tag, cseq=2)
    assert lab.node.presence.next_deadline() is None
    lab.advance(200)
    assert len(_notifies(lab)) == 2  # the first one and the final one, nothing at 120 s


@pytest.mark.parametrize("registered", [0.1, 10003.01, 1e6 + 0.3, 123456.789])
@pytest.mark.parametrize("window", [0.0, 0.3, 120.0, 7.7])
def test_foreground_ends_exactly_where_client_state_says_so(
    registered: float, window: float
) -> None:
    uri = parse_uri(f"sip:bob@127.0.0.1:7001;pn-provider=apns;pn-param={TEAM};pn-prid={TOKEN}")
    assert isinstance(uri, SipUri)
    binding = Binding(
        binding_id="b1",
        aor="sip:bob@lab.test",
        contact=uri,
        call_id="c",
        cseq=1,
        expires_at=registered + 3600,
        registered_at=registered,
        source=Peer(transport="udp", host="127.0.0.1", port=7001),
        push=push_target_from_uri(uri),
    )

    def state(now: float) -> str:
        return client_state(binding, flow_open=True, now=now, udp_foreground_s=window)

    at = foreground_ends_at(binding, now=registered, udp_foreground_s=window)
    assert at is not None
    assert state(at) == "suspended"
    assert state(math.nextafter(at, -math.inf)) == "foreground"
    assert foreground_ends_at(binding, now=at, udp_foreground_s=window) is None
