"""APNs request builder and response classifier (pure; PROTOCOLS.md §3, §4)."""

from __future__ import annotations

import json

import pytest

from sipwake.errors import PushError
from sipwake.push.base import PushKind, PushRequest
from sipwake.push.payload import (
    ALERT_PAYLOAD_LIMIT,
    VOIP_PAYLOAD_LIMIT,
    ApnsSettings,
    build_apns_request,
    classify_apns_response,
    parse_retry_after,
)
from sipwake.sip.pushtarget import PushTarget

TOKEN = "a1b2c3d4" * 8
REMOTE = "e5f6a7b8" * 8
SETTINGS = ApnsSettings(team_id="TEAM123456", key_id="KEY1234567", bundle_id="org.lab.phone")
NOW = 1_800_000_000.0


def _target(param: str | None = "TEAM123456.org.lab.phone.voip", prid: str = TOKEN) -> PushTarget:
    return PushTarget(provider="apns", prid=prid, param=param)


def _request(kind: PushKind = "call", **kw: object) -> PushRequest:
    fields: dict[str, object] = {
        "kind": kind,
        "target": _target(),
        "call_id": "c1@lab",
        "caller": "Alice <sip:alice@lab.test>",
    }
    fields.update(kw)
    return PushRequest(**fields)  # type: ignore[arg-type]


def test_voip_call_request() -> None:
    built = build_apns_request(_request("call", call_uuid="u-1"), SETTINGS, wall_now=NOW)
    assert built.method == "POST"
    assert built.path == f"/3/device/{TOKEN}"
    assert built.headers["apns-push-type"] == "voip"
    assert built.headers["apns-topic"] == "org.lab.phone.voip"
    assert built.headers["apns-priority"] == "10"
    assert built.headers["apns-expiration"] == "0"
    assert "authorization" not in built.headers
    body = json.loads(built.body)
    assert body == {
        "aps": {},
        "type": "call",
        "call-id": "c1@lab",
        "caller": "Alice <sip:alice@lab.test>",
        "uuid": "u-1",
    }


def _two_tokens(order: str = "voip&remote") -> PushTarget:
    """Linphone's form: a VoIP and a remote-notification token in one contact."""
    tokens = {"voip": TOKEN, "remote": REMOTE}
    prid = "&".join(f"{tokens[s]}:{s}" for s in order.split("&"))
    return _target(param=f"TEAM123456.org.lab.phone.{order}", prid=prid)


@pytest.mark.parametrize("order", ["voip&remote", "remote&voip"])
@pytest.mark.parametrize("kind", ["cancel", "message"])
def test_cancel_and_message_are_alert_pushes_on_the_bundle_topic(
    kind: PushKind, order: str
) -> None:
    request = _request(kind, body="hello", target=_two_tokens(order))
    built = build_apns_request(request, SETTINGS, wall_now=NOW)
    assert built.path == f"/3/device/{REMOTE}"  # the remote token, not the VoIP one
    assert built.headers["apns-push-type"] == "alert"
    assert built.headers["apns-topic"] == "org.lab.phone"
    assert built.headers["apns-priority"] == "10"
    assert built.headers["apns-expiration"] == str(int(NOW) + SETTINGS.alert_ttl_s)
    body = json.loads(built.body)
    assert body["call-id"] == "c1@lab"
    assert body["aps"]["alert"]["body"] == "hello"


@pytest.mark.parametrize("order", ["voip&remote", "remote&voip"])
def test_call_goes_to_the_voip_token_of_two(order: str) -> None:
    built = build_apns_request(_request("call", target=_two_tokens(order)), SETTINGS, wall_now=NOW)
    assert built.path == f"/3/device/{TOKEN}"
    assert built.headers["apns-push-type"] == "voip"
    assert built.headers["apns-topic"] == "org.lab.phone.voip"


@pytest.mark.parametrize("kind", ["cancel", "message"])
def test_no_alert_to_a_voip_token(kind: PushKind) -> None:
    """APNs would answer DeviceTokenNotForTopic; PushKit forbids a VoIP push that is not a
    call: a device with only a VoIP token gets no alert at all."""
    with pytest.raises(PushError, match="NoAlertToken") as info:
        build_apns_request(_request(kind), SETTINGS, wall_now=NOW)
    assert info.value.retryable is False


def test_call_to_an_app_without_voip_token_is_an_alert() -> None:
    target = _target(param="TEAM123456.org.lab.phone", prid=REMOTE)
    built = build_apns_request(_request("call", target=target), SETTINGS, wall_now=NOW)
    assert built.headers["apns-push-type"] == "alert"
    assert built.headers["apns-topic"] == "org.lab.phone"
    assert built.headers["apns-expiration"] == "0"
    aps = json.loads(built.body)["aps"]
    assert aps["alert"]["title"] == "Incoming call"
    assert aps["sound"] == "default"


def test_missed_call_text_names_the_caller() -> None:
    request = _request("cancel", caller="Bob", target=_two_tokens())
    built = build_apns_request(request, SETTINGS, wall_now=NOW)
    assert json.loads(built.body)["aps"]["alert"] == {
        "title": "Missed call",
        "body": "Missed call from Bob",
    }


def test_bundle_defaults_to_settings_when_target_has_no_param() -> None:
    request = _request("call", target=_target(param=None))
    built = build_apns_request(request, SETTINGS, wall_now=NOW)
    assert built.headers["apns-topic"] == "org.lab.phone.voip"


def test_legacy_target_topic() -> None:
    target = PushTarget(provider="apns", prid=TOKEN, param="legacy.org.old.app.voip", legacy=True)
    built = build_apns_request(_request("call", target=target), SETTINGS, wall_now=NOW)
    assert built.headers["apns-topic"] == "org.old.app.voip"
    remote = PushTarget(provider="apns", prid=TOKEN, param="legacy.org.old.app", legacy=True)
    built = build_apns_request(_request("message", target=remote), SETTINGS, wall_now=NOW)
    assert built.headers["apns-topic"] == "org.old.app"


def test_apns_id_passed_through_and_checked() -> None:
    apns_id = "123e4567-e89b-12d3-a456-426614174000"
    built = build_apns_request(_request(apns_id=apns_id), SETTINGS, wall_now=NOW)
    assert built.headers["apns-id"] == apns_id
    with pytest.raises(PushError, match="BadMessageId"):
        build_apns_request(_request(apns_id="NOT-A-UUID"), SETTINGS, wall_now=NOW)


@pytest.mark.parametrize("prid", ["../../evil", "abc def0", "", "zz" * 32])
def test_non_hex_token_refused_without_echoing_it(prid: str) -> None:
    with pytest.raises(PushError, match="BadDeviceToken") as info:
        build_apns_request(_request(target=_target(prid=prid)), SETTINGS, wall_now=NOW)
    assert info.value.retryable is False
    if len(prid) > 8:
        assert prid not in str(info.value)


@pytest.mark.parametrize(("kind", "limit"), [("message", ALERT_PAYLOAD_LIMIT), ("cancel", 4096)])
def test_long_alert_text_is_cut_to_fit(kind: PushKind, limit: int) -> None:
    request = _request(kind, body="é" * 5000, target=_two_tokens())
    built = build_apns_request(request, SETTINGS, wall_now=NOW)
    assert len(built.body) <= limit
    text = json.loads(built.body)["aps"]["alert"]["body"]
    assert text.endswith("…")
    assert len(built.body) > limit - 16


def test_voip_limit_is_5120_and_caller_is_bounded() -> None:
    built = build_apns_request(_request("call", caller="x" * 10_000), SETTINGS, wall_now=NOW)
    assert len(built.body) <= VOIP_PAYLOAD_LIMIT
    assert len(json.loads(built.body)["caller"]) == 256


def test_oversized_voip_payload_raises() -> None:
    with pytest.raises(PushError, match="PayloadTooLarge"):
        build_apns_request(_request("call", call_id="c" * 6000), SETTINGS, wall_now=NOW)


def test_repr_masks_the_token() -> None:
    built = build_apns_request(_request(), SETTINGS, wall_now=NOW)
    assert TOKEN not in repr(built)
    assert TOKEN not in repr(_request())


def _reason(reason: str, **extra: object) -> bytes:
    return json.dumps({"reason": reason, **extra}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b"", "delivered"),
        (400, _reason("BadDeviceToken"), "invalid_target"),
        (400, _reason("DeviceTokenNotForTopic"), "error"),  # our topic: keep the token
        (400, _reason("TopicDisallowed"), "error"),
        (400, _reason("BadTopic"), "error"),
        (410, _reason("Unregistered", timestamp=1_700_000_000_000), "invalid_target"),
        (410, _reason("ExpiredToken"), "invalid_target"),
        (403, _reason("ExpiredProviderToken"), "retry"),
        (403, _reason("InvalidProviderToken"), "error"),
        (403, _reason("Forbidden"), "error"),
        (413, _reason("PayloadTooLarge"), "error"),
        (429, _reason("TooManyRequests"), "retry"),
        (500, _reason("InternalServerError"), "retry"),
        (503, _reason("ServiceUnavailable"), "retry"),
        (404, _reason("BadPath"), "error"),
        (502, b"<html>", "error"),
    ],
)
def test_classifier(status: int, body: bytes, expected: str) -> None:
    outcome = classify_apns_response(status, body, {"apns-id": "id-1"}, latency=0.25)
    assert outcome.status == expected
    assert outcome.provider == "apns"
    assert outcome.http_status == status
    assert outcome.apns_id == "id-1"
    assert outcome.latency == 0.25
    if body.startswith(b"{"):
        assert outcome.reason == json.loads(body)["reason"]


def test_410_carries_the_unregistration_time() -> None:
    outcome = classify_apns_response(410, _reason("Unregistered", timestamp=1_700_000_000_500), {})
    assert outcome.unregistered_at == pytest.approx(1_700_000_000.5)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retry_after_honoured(status: int) -> None:
    outcome = classify_apns_response(status, _reason("x"), {"retry-after": "30"})
    assert (outcome.status, outcome.retry_after) == ("retry", 30.0)


def test_retry_after_ignored_on_errors() -> None:
    outcome = classify_apns_response(400, _reason("BadTopic"), {"retry-after": "30"})
    assert outcome.retry_after is None


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", wall_now=1445412450.0) == 30.0
    assert parse_retry_after("garbage", wall_now=NOW) is None


def test_garbage_bodies_do_not_raise() -> None:
    for body in (b"[]", b"\xff\xfe", b'{"reason": 5}', b"null"):
        assert classify_apns_response(400, body, {}).reason is None
