"""FCM HTTP v1 builders and classifiers (pure; PROTOCOLS.md §5)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sipwake.errors import ConfigError, PushError
from sipwake.push.base import PushKind, PushOutcome, PushRequest
from sipwake.push.fcm_payload import (
    FCM_DATA_LIMIT,
    FCM_ERROR_TYPE,
    FCM_SCOPE,
    JWT_BEARER_GRANT,
    FcmSettings,
    ServiceAccount,
    build_fcm_request,
    build_token_request,
    classify_fcm_response,
    data_size,
    fcm_error_reason,
    outcome_for_build_error,
    parse_token_response,
    wants_new_access_token,
)
from sipwake.sip.pushtarget import PushTarget

TOKEN = "dXk3bN2oQ8e:APA91bH-" + "x_Y9z" * 30
PROJECT = "lab-phone-1234"
NOW = 1_800_000_000.0
SETTINGS = FcmSettings()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def _account_doc(key: rsa.RSAPrivateKey, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": _pem(key),
        "client_email": f"push@{PROJECT}.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def _request(kind: PushKind = "call", **kw: Any) -> PushRequest:
    fields: dict[str, Any] = {
        "kind": kind,
        "target": PushTarget(provider="fcm", prid=TOKEN, param=PROJECT),
        "call_id": "c1@lab",
        "caller": "Alice <sip:alice@lab.test>",
    }
    fields.update(kw)
    return PushRequest(**fields)


def _message(built_body: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(built_body)["message"]
    return message


# -- service account and token request -----------------------------------------------------


def test_service_account_read_and_repr_hides_the_key(rsa_key: rsa.RSAPrivateKey) -> None:
    account = ServiceAccount.from_mapping(_account_doc(rsa_key))
    assert account.project_id == PROJECT
    assert account.token_uri == "https://oauth2.googleapis.com/token"
    assert "PRIVATE" not in repr(account)
    assert "0123456789abcdef0123" not in repr(account)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"type": "authorized_user"}, "type"),
        ({"client_email": None}, "client_email"),
        ({"private_key_id": 7}, "private_key_id"),
        ({"project_id": "bad/project"}, "project_id"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}, None),
        ({"token_uri": "ftp://x"}, "token_uri"),
    ],
)
def test_unusable_service_account_names_the_key(
    rsa_key: rsa.RSAPrivateKey, changes: dict[str, Any], key: str | None
) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceAccount.from_mapping(_account_doc(rsa_key, **changes), source="sa.json")
    assert info.value.path == "sa.json"
    assert info.value.key == (key or "private_key")
    assert "nope" not in str(info.value)


def test_service_account_refuses_a_non_rsa_key() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    doc = {**_account_doc(rsa.generate_private_key(65537, 2048)), "private_key": _pem(ec_key)}
    with pytest.raises(ConfigError, match="expected an RSA key"):
        ServiceAccount.from_mapping(doc)


def test_token_request_is_a_signed_jwt_bearer_grant(rsa_key: rsa.RSAPrivateKey) -> None:
    account = ServiceAccount.from_mapping(_account_doc(rsa_key))
    built = build_token_request(account, wall_now=NOW + 0.7)
    assert built.url == "https://oauth2.googleapis.com/token"
    assert built.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(built.body.decode())
    assert form["grant_type"] == [JWT_BEARER_GRANT]
    [assertion] = form["assertion"]
    assert jwt.get_unverified_header(assertion) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": account.private_key_id,
    }
    claims = jwt.decode(
        assertion,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience=account.token_uri,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": account.client_email,
        "scope": FCM_SCOPE,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
    }
    assert "assertion" not in repr(built)


def test_token_uri_override_sets_url_and_audience(rsa_key: rsa.RSAPrivateKey) -> None:
    account = ServiceAccount.from_mapping(_account_doc(rsa_key))
    built = build_token_request(account, wall_now=NOW, token_uri="https://127.0.0.1:9/token")
    assert built.url == "https://127.0.0.1:9/token"
    [assertion] = parse_qs(built.body.decode())["assertion"]
    assert jwt.decode(assertion, options={"verify_signature": False})["aud"] == built.url


def test_token_response_read_with_refresh_five_minutes_early() -> None:
    body = b'{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}'
    token = parse_token_response(200, body, wall_now=NOW)
    assert (token.value, token.issued_at, token.expires_at) == ("ya29.abc", NOW, NOW + 3599)
    assert token.refresh_at == NOW + 3599 - 300
    assert "ya29.abc" not in repr(token)


def test_short_lived_token_is_kept_for_half_its_life() -> None:
    body = b'{"access_token":"t","expires_in":120,"token_type":"Bearer"}'
    assert parse_token_response(200, body, wall_now=NOW).refresh_at == NOW + 60


@pytest.mark.parametrize(
    ("status", "body", "retryable", "reason"),
    [
        (400, b'{"error":"invalid_grant","error_description":"Invalid JWT"}', False, "400 inv"),
        (401, b'{"error":"unauthorized_client"}', False, "401"),
        (503, b"", True, "503"),
        (429, b"{}", True, "429"),
        (200, b'{"access_token":"","expires_in":3599}', False, "lacks"),
        (200, b'{"access_token":"t","expires_in":0}', False, "lacks"),
        (200, b'{"access_token":"t","expires_in":60,"token_type":"MAC"}', False, "lacks"),
        (200, b"not json", False, "lacks"),
    ],
)
def test_token_endpoint_failures(status: int, body: bytes, retryable: bool, reason: str) -> None:
    with pytest.raises(PushError) as info:
        parse_token_response(status, body, wall_now=NOW)
    assert info.value.retryable is retryable
    assert reason in info.value.reason
    assert info.value.reason.startswith("oauth: ")


# -- messages:send builder -----------------------------------------------------------------


def test_call_is_a_high_priority_data_message_with_the_ring_window_ttl() -> None:
    built = build_fcm_request(_request("call", call_uuid="u-1"), SETTINGS, default_project="x")
    assert built.method == "POST"
    assert built.path == f"/v1/projects/{PROJECT}/messages:send"
    assert built.headers["content-type"].startswith("application/json")
    assert "authorization" not in built.headers
    assert _message(built.body) == {
        "token": TOKEN,
        "data": {
            "type": "call",
            "call-id": "c1@lab",
            "caller": "Alice <sip:alice@lab.test>",
            "uuid": "u-1",
        },
        "android": {"priority": "HIGH", "ttl": "30s", "collapse_key": "c1@lab"},
    }
    assert (built.priority, built.ttl_s) == ("HIGH", 30)
    assert TOKEN not in repr(built)


def test_call_ttl_follows_the_setting() -> None:
    settings = FcmSettings(call_ttl_s=45, alert_ttl_s=600)
    built = build_fcm_request(_request("call"), settings, default_project="x")
    assert _message(built.body)["android"]["ttl"] == "45s"
    built = build_fcm_request(_request("message", body="hi"), settings, default_project="x")
    assert _message(built.body)["android"]["ttl"] == "600s"


def test_missed_call_is_high_priority_with_a_text() -> None:
    built = build_fcm_request(_request("cancel", caller="Bob"), SETTINGS, default_project="x")
    message = _message(built.body)
    assert message["data"]["type"] == "cancel"
    assert message["data"]["body"] == "Missed call from Bob"
    assert message["android"] == {"priority": "HIGH", "ttl": "3600s", "collapse_key": "c1@lab"}


def test_message_is_normal_priority_with_its_body() -> None:
    built = build_fcm_request(_request("message", body="hello"), SETTINGS, default_project="x")
    message = _message(built.body)
    assert message["data"]["body"] == "hello"
    assert message["data"]["type"] == "message"
    assert message["android"]["priority"] == "NORMAL"


@pytest.mark.parametrize("kind", ["call", "cancel", "message"])
def test_every_data_value_is_a_string_and_no_key_is_reserved(kind: PushKind) -> None:
    request = _request(kind, body="b", call_uuid="u")
    data = _message(build_fcm_request(request, SETTINGS, default_project="x").body)["data"]
    assert data
    assert all(isinstance(value, str) for value in data.values())
    assert not any(k in ("from", "message_type") or k.startswith(("google", "gcm")) for k in data)


def test_project_defaults_to_the_service_account_project() -> None:
    target = PushTarget(provider="fcm", prid=TOKEN)
    built = build_fcm_request(_request(target=target), SETTINGS, default_project="sa-project")
    assert (built.project, built.path) == ("sa-project", "/v1/projects/sa-project/messages:send")


@pytest.mark.parametrize("prid", ["short", "has space in it", "../../../v1/x", "é" * 20])
def test_malformed_registration_token_is_refused_without_echoing_it(prid: str) -> None:
    target = PushTarget(provider="fcm", prid=prid, param=PROJECT)
    with pytest.raises(PushError, match="BadToken") as info:
        build_fcm_request(_request(target=target), SETTINGS, default_project="x")
    assert info.value.retryable is False
    if len(prid) > 8:
        assert prid not in str(info.value)
    assert outcome_for_build_error(info.value).status == "invalid_target"


@pytest.mark.parametrize("param", ["a/b", "proj?x=1", "-dash"])
def test_malformed_project_is_refused(param: str) -> None:
    target = PushTarget(provider="fcm", prid=TOKEN, param=param)
    with pytest.raises(PushError, match="BadProject") as info:
        build_fcm_request(_request(target=target), SETTINGS, default_project="x")
    assert outcome_for_build_error(info.value).status == "invalid_target"


def test_domain_scoped_project_is_accepted() -> None:
    target = PushTarget(provider="fcm", prid=TOKEN, param="example.com:lab-app")
    built = build_fcm_request(_request(target=target), SETTINGS, default_project="x")
    assert built.path == "/v1/projects/example.com:lab-app/messages:send"


@pytest.mark.parametrize(
    "text",
    ["é" * 5000, "x" * 10_000, '"\\' * 3000, "\u0001" * 3000],
    ids=["utf8", "ascii", "escaped", "control"],
)
def test_long_text_is_cut_to_the_data_limit(text: str) -> None:
    built = build_fcm_request(_request("message", body=text), SETTINGS, default_project="x")
    data = _message(built.body)["data"]
    assert data_size(data) <= FCM_DATA_LIMIT
    assert data_size(data) > FCM_DATA_LIMIT - 16
    assert data["body"].endswith("…")


def test_data_that_cannot_fit_is_refused() -> None:
    with pytest.raises(PushError, match="PayloadTooLarge") as info:
        build_fcm_request(_request("call", call_id="c" * 5000), SETTINGS, default_project="x")
    assert outcome_for_build_error(info.value).status == "error"


def test_caller_is_bounded_and_collapse_key_cut() -> None:
    request = _request("call", caller="x" * 10_000, call_id="k" * 100)
    message = _message(build_fcm_request(request, SETTINGS, default_project="x").body)
    assert len(message["data"]["caller"]) == 256
    assert message["android"]["collapse_key"] == "k" * 64


def test_settings_refuse_a_ttl_out_of_range() -> None:
    with pytest.raises(ValueError, match="call_ttl_s"):
        FcmSettings(call_ttl_s=-1)
    with pytest.raises(ValueError, match="alert_ttl_s"):
        FcmSettings(alert_ttl_s=2_419_201)


# -- classifier ----------------------------------------------------------------------------


def _error_body(
    status: int, rpc_status: str, code: str | None = None, *, message: str = "m", field: str = ""
) -> bytes:
    details: list[dict[str, Any]] = []
    if code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": code})
    if field:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": "bad"}],
            }
        )
    error = {"code": status, "message": message, "status": rpc_status, "details": details}
    return json.dumps({"error": error}).encode()


def _classify(status: int, body: bytes, **headers: str) -> PushOutcome:
    return classify_fcm_response(status, body, headers, latency=0.01, wall_now=NOW)


def test_success_is_delivered() -> None:
    outcome = _classify(200, b'{"name":"projects/p/messages/0:1"}')
    assert (outcome.status, outcome.http_status, outcome.reason) == ("delivered", 200, None)
    assert outcome.provider == "fcm"
    assert outcome.latency == 0.01


@pytest.mark.parametrize(
    ("status", "body", "expected", "reason"),
    [
        (404, _error_body(404, "NOT_FOUND", "UNREGISTERED"), "invalid_target", "UNREGISTERED"),
        (
            403,
            _error_body(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
            "error",  # another project's token: our project_id is wrong, keep the token
            "SENDER_ID_MISMATCH",
        ),
        (
            400,
            _error_body(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", field="message.token"),
            "invalid_target",
            "INVALID_ARGUMENT",
        ),
        (
            400,
            _error_body(
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                message="The registration token is not a valid FCM registration token",
            ),
            "invalid_target",
            "INVALID_ARGUMENT",
        ),
        (
            400,
            _error_body(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", field="message.android.ttl"),
            "error",
            "INVALID_ARGUMENT",
        ),
        (429, _error_body(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), "retry", "QUOTA_EXCEEDED"),
        (503, _error_body(503, "UNAVAILABLE", "UNAVAILABLE"), "retry", "UNAVAILABLE"),
        (500, _error_body(500, "INTERNAL", "INTERNAL"), "retry", "INTERNAL"),
        (502, b"<html>bad gateway</html>", "retry", None),
        (
            401,
            _error_body(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
            "error",
            "THIRD_PARTY_AUTH_ERROR",
        ),
        (401, _error_body(401, "UNAUTHENTICATED"), "error", "UNAUTHENTICATED"),
        (403, _error_body(403, "PERMISSION_DENIED"), "error", "PERMISSION_DENIED"),
        (404, _error_body(404, "NOT_FOUND"), "error", "NOT_FOUND"),
        (418, b"", "error", None),
    ],
)
def test_error_classification(status: int, body: bytes, expected: str, reason: str | None) -> None:
    outcome = _classify(status, body)
    assert (outcome.status, outcome.http_status, outcome.reason) == (expected, status, reason)


def test_retry_after_honoured_on_retry_only() -> None:
    quota = _error_body(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    assert _classify(429, quota, **{"retry-after": "60"}).retry_after == 60.0
    date = "Fri, 15 Jan 2027 08:00:30 GMT"
    unavailable = _error_body(503, "UNAVAILABLE", "UNAVAILABLE")
    outcome = classify_fcm_response(
        503, unavailable, {"retry-after": date}, wall_now=1_800_000_000.0
    )
    assert outcome.retry_after == pytest.approx(1_800_000_030.0 - 1_800_000_000.0)
    gone = _error_body(404, "NOT_FOUND", "UNREGISTERED")
    assert _classify(404, gone, **{"retry-after": "60"}).retry_after is None


def test_fcm_error_code_wins_over_rpc_status() -> None:
    assert fcm_error_reason(_error_body(404, "NOT_FOUND", "UNREGISTERED")) == (
        "UNREGISTERED",
        False,
    )
    assert fcm_error_reason(b'{"error":"flat"}') == (None, False)
    assert fcm_error_reason(b"[1,2]") == (None, False)


def test_only_an_unauthenticated_401_asks_for_a_new_access_token() -> None:
    assert wants_new_access_token(_classify(401, _error_body(401, "UNAUTHENTICATED")))
    assert wants_new_access_token(_classify(401, b""))
    third_party = _error_body(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")
    assert not wants_new_access_token(_classify(401, third_party))
    assert not wants_new_access_token(_classify(403, _error_body(403, "PERMISSION_DENIED")))
    assert not wants_new_access_token(_classify(200, b"{}"))
