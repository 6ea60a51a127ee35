"""Refresh pushes (RFC 8599 §5.5) on hand-moved time: a suspended phone is woken to
re-register before its push binding expires, so it stays reachable for days."""

from __future__ import annotations

import json

from sipwake.push.apns_rules import TokenBook, check_apns_request
from sipwake.push.base import PushRequest
from sipwake.push.fcm_payload import FcmSettings, build_fcm_request
from sipwake.push.payload import ApnsSettings, build_apns_request
from sipwake.push.webpush import build_webpush_request
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import BindingRefreshed
from sipwake.registrar.refresh import refresh_at
from sipwake.sip.pushtarget import PushTarget
from tests.unit.wakelab import Phone, WakeLab

TOKEN = "a1b2c3d4" * 8
REMOTE = "e5f6a7b8" * 8
DAY = 86400


def _iphone(*, remote: str | None = REMOTE, transport: str = "tcp") -> Phone:
    return Phone(
        user="bob",
        port=7001,
        instance="urn:uuid:phone-1",
        token=TOKEN,
        remote=remote,
        transport=transport,
    )


def _asleep(lab: WakeLab, phone: Phone, expires: int = DAY) -> None:
    assert lab.register(phone, expires=expires).status == 200
    lab.suspend(phone)


def _binding(lab: WakeLab) -> Binding:
    (binding,) = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)
    return binding


def test_a_suspended_push_binding_is_pushed_to_refresh_at_90_percent() -> None:
    lab = WakeLab()
    phone = _iphone()
    _asleep(lab, phone)
    assert _binding(lab).expires_at == lab.now + DAY  # not cut to max_expires (3600)
    lab.advance(0.9 * DAY - 1)
    assert lab.pushes("refresh") == []
    lab.advance(1)
    (push,) = lab.pushes("refresh")
    assert push.request.target.prid == REMOTE  # the remote token: never a VoIP push
    assert push.binding_id == _binding(lab).binding_id
    built = build_apns_request(push.request, ApnsSettings(bundle_id="org.lab.phone"), wall_now=0)
    assert built.headers["apns-push-type"] == "background"
    assert built.headers["apns-priority"] == "5"
    assert built.headers["apns-topic"] == "org.lab.phone"
    assert json.loads(built.body) == {"type": "refresh", "aps": {"content-available": 1}}
    lab.push_result(push, "delivered")
    lab.advance(2)
    assert lab.register(phone, expires=DAY).status == 200  # the app wakes and refreshes
    lab.suspend(phone)
    lab.advance(0.9 * DAY - 1)
    assert len(lab.pushes("refresh")) == 1  # the next one is 90 % of the new lifetime
    lab.advance(1)
    assert len(lab.pushes("refresh")) == 2


def test_an_hour_long_binding_is_refreshed_ten_minutes_before_expiry() -> None:
    lab = WakeLab()
    _asleep(lab, _iphone(), expires=3600)
    lab.advance(2999)
    assert lab.pushes("refresh") == []
    lab.advance(1)
    assert len(lab.pushes("refresh")) == 1
    lab.advance(700)
    assert len(lab.pushes("refresh")) == 1  # once per registration


def test_a_phone_that_never_refreshes_is_lost_at_expiry_and_pushed_no_more() -> None:
    lab = WakeLab()
    _asleep(lab, _iphone(), expires=3600)
    lab.advance(3000)
    lab.push_result(lab.pushes("refresh")[0], "delivered")
    lab.advance(601)
    assert lab.node.registrar.lookup("sip:bob@lab.test", lab.now) == []
    lab.advance(7 * DAY)
    assert len(lab.pushes()) == 1  # RFC 8599 §5.5: never push a binding that expired


def test_a_dead_token_refused_for_a_refresh_is_dropped() -> None:
    lab = WakeLab()
    _asleep(lab, _iphone(), expires=3600)
    lab.advance(3000)
    (push,) = lab.pushes("refresh")
    lab.push_result(push, "invalid_target", reason="Unregistered", http_status=410)
    binding = _binding(lab)
    assert binding.push is not None
    assert not binding.push.holds(REMOTE)
    assert binding.push.holds(TOKEN)  # the VoIP token stays for calls


def test_an_ios_app_with_only_its_voip_token_gets_no_refresh_push() -> None:
    # PushKit: every VoIP push must be reported as a call; a refresh is not one.
    lab = WakeLab()
    _asleep(lab, _iphone(remote=None), expires=3600)
    lab.advance(3600)
    assert lab.pushes() == []


def test_a_foreground_phone_refreshes_by_itself_and_is_not_pushed() -> None:
    lab = WakeLab()
    assert lab.register(_iphone(), expires=3600).status == 200  # connection stays open
    lab.advance(3599)
    assert lab.pushes() == []


def test_a_udp_phone_is_pushed_once_its_foreground_window_is_over() -> None:
    lab = WakeLab()
    phone = _iphone(transport="udp")
    assert lab.register(phone, expires=180).status == 200
    lab.advance(60)  # due 120 s before expiry, but it registered 60 s ago: foreground
    assert lab.pushes() == []
    lab.advance(60.001)  # udp_foreground_s (120 s) over: suspended, pushed at once
    assert len(lab.pushes("refresh")) == 1


def test_refresh_time_rules() -> None:
    lab = WakeLab()
    assert lab.register(_iphone(), expires=DAY).status == 200
    day = _binding(lab)
    assert refresh_at(day) == day.expires_at - 0.1 * DAY  # 90 % of its lifetime
    asked = Binding(**_fields(day) | {"pnsreg": True})  # type: ignore[arg-type]
    assert refresh_at(asked) == day.expires_at - 120
    short = Binding(**_fields(day) | {"expires_at": day.registered_at + 180})  # type: ignore[arg-type]
    assert refresh_at(short) == short.expires_at - 120  # never sooner than 60 s in
    assert refresh_at(Binding(**_fields(day) | {"push": None})) is None  # type: ignore[arg-type]


def _fields(binding: object) -> dict[str, object]:
    names = [
        "binding_id",
        "aor",
        "contact",
        "expires_at",
        "registered_at",
        "call_id",
        "cseq",
        "source",
        "q",
        "instance",
        "reg_id",
        "path",
        "push",
        "user_agent",
        "pnsreg",
        "seal_key",
        "nat",
    ]
    return {n: getattr(binding, n) for n in names}


def test_a_phone_that_said_pnsreg_is_pushed_only_120_s_before_expiry() -> None:
    lab = WakeLab()
    phone = _iphone()
    assert lab.register(phone, expires=3600).status == 200
    lab.suspend(phone)
    binding = _binding(lab)  # as if its Contact had carried +sip.pnsreg
    asked = Binding(**_fields(binding) | {"pnsreg": True})  # type: ignore[arg-type]
    lab.node.registrar.restore([asked])
    lab.node.restore([BindingRefreshed(binding=asked, previous=binding)])
    lab.advance(3479)
    assert lab.pushes() == []
    lab.advance(1)
    assert len(lab.pushes("refresh")) == 1


def test_fcm_and_webpush_refresh_pushes_are_low_priority_data() -> None:
    fcm = PushTarget(provider="fcm", prid="tok:APA91b-refresh", param="lab-project")
    request = PushRequest(kind="refresh", target=fcm, call_id="")
    built = build_fcm_request(request, FcmSettings(), default_project="lab-project")
    message = json.loads(built.body)["message"]
    assert message["android"]["priority"] == "NORMAL"
    assert message["data"] == {"type": "refresh"}
    web = PushTarget(provider="webpush", prid="https://push.lab.test/wp/abc")
    built_web = build_webpush_request(
        PushRequest(kind="refresh", target=web, call_id=""), authorization="vapid t=x, k=y"
    )
    assert built_web.headers["urgency"] == "low"


def test_the_strict_apns_rules_take_the_refresh_push_only_on_the_remote_token() -> None:
    book = TokenBook()
    book.issue(REMOTE, "org.lab.phone")
    book.issue(TOKEN, "org.lab.phone.voip")
    target = PushTarget(
        provider="apns",
        prid=f"{TOKEN}:voip&{REMOTE}:remote",
        param="TEAM123456.org.lab.phone.voip&remote",
    )
    request = PushRequest(kind="refresh", target=target, call_id="")
    built = build_apns_request(request, ApnsSettings(bundle_id="org.lab.phone"), wall_now=0)
    token = built.path.rsplit("/", 1)[-1]
    assert token == REMOTE
    assert check_apns_request(token, built.headers, built.body, book=book) is None
    at_ten = {**built.headers, "apns-priority": "10"}  # what Apple refuses
    assert check_apns_request(token, at_ten, built.body, book=book) == (400, "BadPriority")
