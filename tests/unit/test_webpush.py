"""Web Push pure parts: RFC 8291 encryption, RFC 8292 VAPID, RFC 8030 request rules."""

from __future__ import annotations

import json
import re

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.errors import PushError
from sipwake.push.base import PushKind, PushRequest
from sipwake.push.webpush import (
    MAX_PLAINTEXT,
    VapidTokens,
    b64url_decode,
    b64url_encode,
    build_webpush_request,
    classify_webpush_response,
    encrypt_aes128gcm,
    endpoint_origin,
    mask_endpoint,
    topic_for,
    vapid_header,
    webpush_plaintext,
)
from sipwake.sip.pushtarget import PushTarget

# RFC 8291 Appendix A (and §5): the example message and every input that produced it.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_AS_PUBLIC = (
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_HEADER = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
    "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
    "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT"
    "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

ENDPOINT = "https://push.example.net:8443/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV?x=1"
NOW = 1_800_000_000.0


def _private(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


def _request(kind: PushKind = "call", *, keys: bool = True, **extra: str) -> PushRequest:
    target = PushTarget(
        provider="webpush",
        prid=ENDPOINT,
        p256dh=RFC_UA_PUBLIC if keys else None,
        auth=RFC_AUTH if keys else None,
    )
    return PushRequest(kind=kind, target=target, call_id="c1@lab", caller="Alice", **extra)


def _decrypt(body: bytes) -> bytes:
    """Decrypt with http_ece, an implementation independent of ours."""
    result: bytes = http_ece.decrypt(
        body,
        private_key=_private(RFC_UA_PRIVATE),
        auth_secret=b64url_decode(RFC_AUTH),
        version="aes128gcm",
    )
    return result


# -- RFC 8291 encryption ---------------------------------------------------------------


def test_rfc8291_appendix_a_vector() -> None:
    body = encrypt_aes128gcm(
        RFC_PLAINTEXT,
        RFC_UA_PUBLIC,
        RFC_AUTH,
        private_key=_private(RFC_AS_PRIVATE),
        salt=b64url_decode(RFC_SALT),
    )
    assert b64url_encode(body[:86]) == RFC_HEADER
    assert b64url_encode(body) == RFC_BODY
    assert b64url_encode(body[21:86]) == RFC_AS_PUBLIC
    assert _decrypt(body) == RFC_PLAINTEXT


def test_fresh_key_and_salt_per_message() -> None:
    first = encrypt_aes128gcm(RFC_PLAINTEXT, RFC_UA_PUBLIC, RFC_AUTH)
    second = encrypt_aes128gcm(RFC_PLAINTEXT, RFC_UA_PUBLIC, RFC_AUTH)
    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # application server public key
    assert _decrypt(first) == _decrypt(second) == RFC_PLAINTEXT


def test_largest_plaintext_fills_4096_bytes() -> None:
    body = encrypt_aes128gcm(b"x" * MAX_PLAINTEXT, RFC_UA_PUBLIC, RFC_AUTH)
    assert len(body) == 4096
    assert _decrypt(body) == b"x" * MAX_PLAINTEXT
    with pytest.raises(ValueError, match="exceeds 3993"):
        encrypt_aes128gcm(b"x" * (MAX_PLAINTEXT + 1), RFC_UA_PUBLIC, RFC_AUTH)


@pytest.mark.parametrize(
    ("p256dh", "auth", "salt", "reason"),
    [
        (RFC_UA_PUBLIC, RFC_AUTH[:-2], None, "auth secret must be 16 bytes"),
        ("B" + "A" * 86, RFC_AUTH, None, "not a valid P-256 public key"),  # off the curve
        (RFC_UA_PUBLIC, "no!", None, "must be base64url"),
        (RFC_UA_PUBLIC, RFC_AUTH, b"short", "salt must be 16 bytes"),
    ],
)
def test_unusable_keys_are_refused(p256dh: str, auth: str, salt: bytes | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encrypt_aes128gcm(b"hi", p256dh, auth, salt=salt)


# -- RFC 8292 VAPID --------------------------------------------------------------------


def test_vapid_header_claims_and_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    value = vapid_header(ENDPOINT, key, "mailto:ops@example.org", NOW)
    match = re.fullmatch(r"vapid t=([\w.-]+), k=([\w-]+)", value)
    assert match is not None
    token, k = match.groups()
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(k))
    assert len(b64url_decode(k)) == 65
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "ES256"}
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        audience="https://push.example.net:8443",
        options={"verify_exp": False},
    )
    assert claims == {
        "aud": "https://push.example.net:8443",
        "exp": int(NOW) + 12 * 3600,
        "sub": "mailto:ops@example.org",
    }
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.public_key(), algorithms=["ES256"], options={"verify_aud": False})


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        ("https://Push.Example.NET:443/x", "https://push.example.net"),
        ("https://127.0.0.1:5000/push/x?y=z", "https://127.0.0.1:5000"),
        ("https://[::1]:8443/p", "https://[::1]:8443"),
    ],
)
def test_endpoint_origin(endpoint: str, origin: str) -> None:
    assert endpoint_origin(endpoint) == origin


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://push.example.net/x", "scheme must be https"),
        ("https://user:pw@push.example.net/x", "no user information"),
        ("https:///x", "needs a host"),
        ("https://push.example.net/x#frag", "no fragment"),
        ("https://push.example.net:99999/x", "malformed"),
    ],
)
def test_endpoint_must_be_plain_https(endpoint: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        endpoint_origin(endpoint)


def test_vapid_subject_must_be_mailto_or_https() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="mailto: or https:"):
        vapid_header(ENDPOINT, key, "ops@example.org", NOW)
    with pytest.raises(ValueError, match="P-256"):
        VapidTokens(ec.generate_private_key(ec.SECP384R1()), "mailto:a@b.example")


def test_vapid_tokens_cached_per_origin_until_near_expiry() -> None:
    tokens = VapidTokens(ec.generate_private_key(ec.SECP256R1()), "https://example.org/contact")
    first = tokens.get(ENDPOINT, NOW)
    assert tokens.get(ENDPOINT.replace("JzLQ", "other"), NOW + 60) == first
    assert tokens.get(ENDPOINT, NOW + 10 * 3600) == first
    assert tokens.minted == 1
    elsewhere = tokens.get("https://updates.push.services.mozilla.com/wpush/v2/x", NOW)
    assert elsewhere != first
    assert tokens.minted == 2
    renewed = tokens.get(ENDPOINT, NOW + 11 * 3600)
    assert renewed != first
    assert tokens.minted == 3
    tokens.forget(ENDPOINT)
    assert tokens.get(ENDPOINT, NOW + 11 * 3600 + 1) != renewed
    assert tokens.minted == 4


def test_vapid_token_cache_is_bounded() -> None:
    tokens = VapidTokens(
        ec.generate_private_key(ec.SECP256R1()), "mailto:a@b.example", max_origins=2
    )
    a = tokens.get("https://a.example/x", NOW)
    tokens.get("https://b.example/x", NOW)
    tokens.get("https://c.example/x", NOW)
    assert tokens.minted == 3
    assert tokens.get("https://a.example/x", NOW) != a  # evicted, signed again
    assert tokens.minted == 4


# -- RFC 8030 request rules ------------------------------------------------------------


def test_topic_is_32_base64url_chars_and_hides_the_call_id() -> None:
    topic = topic_for("c1@lab.example")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", topic)
    assert topic == topic_for("c1@lab.example")
    assert topic != topic_for("c2@lab.example")
    assert "c1" not in topic


def test_call_push_is_short_lived_high_urgency_with_topic() -> None:
    built = build_webpush_request(_request("call"), authorization="vapid t=x, k=y")
    assert built.url == ENDPOINT
    assert built.headers["ttl"] == "30"
    assert built.headers["urgency"] == "high"
    assert built.headers["topic"] == topic_for("c1@lab")
    assert built.headers["authorization"] == "vapid t=x, k=y"
    assert built.headers["content-encoding"] == "aes128gcm"
    assert json.loads(_decrypt(built.body)) == {
        "type": "call",
        "call-id": "c1@lab",
        "caller": "Alice",
    }


def test_cancel_replaces_the_call_push_and_message_lives_longer() -> None:
    cancel = build_webpush_request(_request("cancel"), authorization="a", message_ttl_s=600)
    assert cancel.headers["topic"] == topic_for("c1@lab")
    assert (cancel.headers["ttl"], cancel.headers["urgency"]) == ("600", "normal")
    assert json.loads(_decrypt(cancel.body))["body"] == "Missed call from Alice"
    message = build_webpush_request(_request("message", body="hello"), authorization="a")
    assert "topic" not in message.headers
    assert (message.headers["ttl"], message.headers["urgency"]) == ("3600", "normal")
    assert json.loads(_decrypt(message.body)) == {
        "type": "message",
        "call-id": "c1@lab",
        "caller": "Alice",
        "body": "hello",
    }


def test_without_subscription_keys_the_body_is_empty() -> None:
    built = build_webpush_request(_request(keys=False), authorization="a")
    assert built.body == b""
    assert "content-encoding" not in built.headers
    assert built.headers["ttl"] == "30"


def test_long_message_is_cut_to_fit_one_record() -> None:
    request = _request("message", body="é\n" * 4000)
    plaintext = webpush_plaintext(request)
    assert len(plaintext) <= MAX_PLAINTEXT
    assert json.loads(plaintext)["body"].endswith("…")
    built = build_webpush_request(request, authorization="a")
    assert len(built.body) <= 4096


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (PushTarget(provider="webpush", prid="http://push.example.net/x"), "BadEndpoint"),
        (
            PushTarget(provider="webpush", prid=ENDPOINT, p256dh="B" + "A" * 86, auth=RFC_AUTH),
            "BadSubscriptionKeys",
        ),
    ],
)
def test_unusable_targets_raise_push_error(target: PushTarget, reason: str) -> None:
    with pytest.raises(PushError, match=reason) as caught:
        build_webpush_request(
            PushRequest(kind="call", target=target, call_id="c"), authorization="a"
        )
    assert not caught.value.retryable


def test_request_repr_masks_the_endpoint() -> None:
    built = build_webpush_request(_request(), authorization="a")
    assert "JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV" not in repr(built)
    assert "https://push.example.net:8443/" in repr(built)
    assert mask_endpoint(ENDPOINT).startswith("https://push.example.net:8443/push…")


# -- answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected", "reason"),
    [
        (201, "delivered", None),
        (202, "delivered", None),
        (404, "invalid_target", "NotFound"),
        (410, "invalid_target", "Gone"),
        (413, "error", "PayloadTooLarge"),
        (400, "error", "BadRequest"),
        (401, "error", "Unauthorized"),
        (403, "error", "Forbidden"),
        (429, "retry", "TooManyRequests"),
        (500, "retry", "HTTP500"),
        (503, "retry", "HTTP503"),
        (301, "error", "HTTP301"),
    ],
)
def test_classify_status(status: int, expected: str, reason: str | None) -> None:
    outcome = classify_webpush_response(status, b"", {})
    assert (outcome.status, outcome.reason, outcome.http_status) == (expected, reason, status)
    assert outcome.provider == "webpush"


def test_classify_reads_reason_and_retry_after() -> None:
    body = json.dumps({"code": 403, "errno": 109, "error": "Forbidden", "message": "bad jwt"})
    outcome = classify_webpush_response(403, body.encode(), {})
    assert outcome.reason == "Forbidden: bad jwt"
    throttled = classify_webpush_response(429, b"slow down", {"retry-after": "12"})
    assert (throttled.retry_after, throttled.reason) == (12.0, "TooManyRequests: slow down")
    gone = classify_webpush_response(410, b"", {"retry-after": "12"})
    assert gone.retry_after is None
