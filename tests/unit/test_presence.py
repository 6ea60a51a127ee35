"""Presence (RFC 3856 over RFC 6665) through the pure node, on hand-moved time."""

from __future__ import annotations

from xml.etree import ElementTree

from sipwake.presence import pidf_document, presence_of
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer
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
