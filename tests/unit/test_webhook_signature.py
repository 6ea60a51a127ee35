"""Webhook signatures (sign/verify, replay window, tampering), the pure builder and classifier."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from sipwake.push.base import PushRequest
from sipwake.push.webhook import (
    SIGNATURE_HEADER,
    build_webhook_request,
    classify_webhook_response,
    sign,
    verify_signature,
)
from sipwake.sip.pushtarget import PushTarget

SECRET = "lab-webhook-secret"
NOW = 1_800_000_000.0
BODY = b'{"kind":"call","prid":"abc"}'
TOKEN = "0f1e2d3c" * 8


def test_signature_is_documented_hmac_over_timestamp_dot_body() -> None:
    header = sign(SECRET, BODY, NOW)
    mac = hmac.new(SECRET.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={mac}"


def test_verify_accepts_own_signature_within_tolerance() -> None:
    header = sign(SECRET, BODY, NOW)
    assert verify_signature(SECRET, header, BODY, NOW)
    assert verify_signature(SECRET.encode(), header, BODY, NOW + 300)
    assert verify_signature(SECRET, header, BODY, NOW - 300)


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_verify_refuses_outside_tolerance(skew: float) -> None:
    header = sign(SECRET, BODY, NOW)
    assert not verify_signature(SECRET, header, BODY, NOW + skew)
    assert verify_signature(SECRET, header, BODY, NOW + skew, tolerance_s=abs(skew))


def test_verify_refuses_tampering() -> None:
    header = sign(SECRET, BODY, NOW)
    assert not verify_signature(SECRET, header, BODY + b" ", NOW)
    assert not verify_signature(SECRET, header, BODY.replace(b"abc", b"abd"), NOW)
    assert not verify_signature("other-secret", header, BODY, NOW)
    # Moving the timestamp invalidates the MAC even inside the window.
    forged = header.replace("t=1800000000", "t=1800000001")
    assert not verify_signature(SECRET, forged, BODY, NOW)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "v1=00",
        "t=1800000000",
        "t=abc,v1=00",
        "t=1800000000,t=1800000000,v1=00",
        "t=-5,v1=00",
    ],
)
def test_verify_refuses_malformed_headers(header: str | None) -> None:
    assert not verify_signature(SECRET, header, BODY, NOW)


def test_verify_accepts_any_of_several_v1() -> None:
    good = sign(SECRET, BODY, NOW).split(",")[1]
    header = f"t=1800000000,v1={'0' * 64},{good}"
    assert verify_signature(SECRET, header, BODY, NOW)


def test_built_request_carries_the_documented_body_and_a_valid_signature() -> None:
    target = PushTarget(provider="apns.dev", prid=TOKEN, param="TEAM.org.lab.phone.voip")
    request = PushRequest(kind="call", target=target, call_id="c-1", caller="Bob", call_uuid="u-1")
    built = build_webhook_request(request, SECRET, wall_now=NOW + 0.25)
    assert json.loads(built.body) == {
        "kind": "call",
        "call_id": "c-1",
        "caller": "Bob",
        "call_uuid": "u-1",
        "body": None,
        "provider": "apns.dev",
        "prid": TOKEN,
        "param": "TEAM.org.lab.phone.voip",
        "sent_at": NOW + 0.25,
    }
    header = built.headers[SIGNATURE_HEADER.lower()]
    assert header.startswith("t=1800000000,v1=")
    assert verify_signature(SECRET, header, built.body, NOW)
    assert built.headers["content-type"] == "application/json"
    assert TOKEN not in repr(built)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (404, "invalid_target"),
        (410, "invalid_target"),
        (429, "retry"),
        (503, "retry"),
        (500, "retry"),
        (502, "retry"),
        (400, "error"),
        (401, "error"),
        (403, "error"),
        (301, "error"),
    ],
)
def test_status_mapping(status: int, expected: str) -> None:
    outcome = classify_webhook_response(status, b"", {})
    assert outcome.status == expected
    assert outcome.http_status == status
    assert outcome.provider == "webhook"
    assert (outcome.reason is None) == (expected == "delivered")


def test_retry_after_and_reason_read_from_answer() -> None:
    outcome = classify_webhook_response(
        429, b'{"reason": "slow down"}', {"retry-after": "7"}, wall_now=NOW
    )
    assert (outcome.status, outcome.reason, outcome.retry_after) == ("retry", "slow down", 7.0)
    gone = classify_webhook_response(410, b'{"reason": "uninstalled"}', {"retry-after": "7"})
    assert (gone.status, gone.reason, gone.retry_after) == ("invalid_target", "uninstalled", None)
    plain = classify_webhook_response(400, b"not json", {})
    assert plain.reason == "HTTP 400"
