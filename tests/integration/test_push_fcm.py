"""FcmProvider against the mock FCM and token endpoint: real HTTP/2 over TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from sipwake.errors import ConfigError
from sipwake.push.base import PushKind, PushProvider, PushRequest
from sipwake.push.fcm import FcmProvider, load_service_account
from sipwake.push.fcm_payload import FCM_SCOPE, JWT_BEARER_GRANT, FcmSettings
from sipwake.push.mock import MockFcm, ServiceAccountFile, write_service_account
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

PROJECT = "lab-phone-1234"
TOKEN = "fG7hJ2kL9mN:APA91bE-" + "q_R4s" * 28
START = 1_800_000_000.0
LIFETIME = 3599
MARGIN = 300


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Lab:
    mock: MockFcm
    clock: FakeClock
    account: ServiceAccountFile
    make: Callable[..., FcmProvider]


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    clock = FakeClock()
    providers: list[FcmProvider] = []
    async with MockFcm(tmp_path / "tls", project_id=PROJECT, clock=clock) as mock:
        mock.issue_token(TOKEN)  # the app's registration token, issued to PROJECT
        account = mock.new_service_account(tmp_path / "keys")

        def make(source: Any = account.path, **kw: Any) -> FcmProvider:
            options: dict[str, Any] = {
                "base_url": mock.base_url,
                "clock": clock,
                "ssl_context": mock.client_ssl(),
                "timeout": 5.0,
            }
            options.update(kw)
            provider = FcmProvider(source, **options)
            providers.append(provider)
            return provider

        try:
            yield Lab(mock=mock, clock=clock, account=account, make=make)
        finally:
            for provider in providers:
                await provider.close()


def _push(
    kind: PushKind = "call",
    token: str = TOKEN,
    call_id: str = "c1@lab",
    project: str | None = PROJECT,
    body: str | None = None,
) -> PushRequest:
    target = PushTarget(provider="fcm", prid=token, param=project)
    return PushRequest(kind=kind, target=target, call_id=call_id, caller="Alice", body=body)


async def test_call_push_accepted_with_body_and_bearer_token(lab: Lab) -> None:
    provider = lab.make()
    outcome = await provider.send(_push(call_id="call-1@lab"))
    assert outcome.status == "delivered", outcome
    assert (outcome.http_status, outcome.provider) == (200, "fcm")
    assert outcome.latency > 0
    [message] = lab.mock.messages
    assert message.project == PROJECT
    assert message.headers[":path"] == f"/v1/projects/{PROJECT}/messages:send"
    assert message.headers["authorization"] == f"Bearer {lab.mock.issued[0].value}"
    assert message.message == {
        "token": TOKEN,
        "data": {"type": "call", "call-id": "call-1@lab", "caller": "Alice"},
        "android": {"priority": "HIGH", "ttl": "30s", "collapse_key": "call-1@lab"},
    }
    assert message.name.startswith(f"projects/{PROJECT}/messages/")
    assert lab.mock.token_requests == 1
    assert provider.tokens.fetches == 1


async def test_message_and_missed_call_kinds(lab: Lab) -> None:
    provider: PushProvider = lab.make(settings=FcmSettings(alert_ttl_s=600))
    assert (await provider.send(_push("message", body="hi there"))).status == "delivered"
    assert (await provider.send(_push("cancel"))).status == "delivered"
    message, cancel = (m.message for m in lab.mock.messages)
    assert message["android"]["priority"] == "NORMAL"
    assert message["android"]["ttl"] == "600s"
    assert message["data"] == {
        "type": "message",
        "call-id": "c1@lab",
        "caller": "Alice",
        "body": "hi there",
    }
    assert cancel["android"]["priority"] == "HIGH"
    assert cancel["data"]["body"] == "Missed call from Alice"


async def test_project_comes_from_pn_param_else_the_service_account(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push(project=None))).status == "delivered"
    assert lab.mock.messages[0].project == PROJECT
    outcome = await provider.send(_push(project="someone-else"))
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "error",
        403,
        "PERMISSION_DENIED",
    )


async def test_provider_takes_the_parsed_json_too(lab: Lab) -> None:
    doc = json.loads(lab.account.path.read_text())
    provider = lab.make(doc)
    assert (await provider.send(_push())).status == "delivered"
    assert provider.account.client_email == lab.account.client_email


async def test_fifty_concurrent_pushes_fetch_one_token_over_one_connection(lab: Lab) -> None:
    lab.mock.latency = 0.05
    provider = lab.make()
    tokens = [f"tok{n:03d}:APA91b-{n:060x}" for n in range(50)]
    for token in tokens:
        lab.mock.issue_token(token)
    outcomes = await asyncio.gather(
        *(provider.send(_push(token=token, call_id=f"c{n}")) for n, token in enumerate(tokens))
    )
    assert [o.status for o in outcomes] == ["delivered"] * 50
    assert lab.mock.token_requests == 1
    assert len(lab.mock.access_tokens) == 1
    assert lab.mock.connections == 1
    assert {m.connection for m in lab.mock.messages} == {1}
    assert sorted(m.token for m in lab.mock.messages) == sorted(tokens)


async def test_token_refreshed_at_expiry_minus_margin_not_before(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push(call_id="a"))).status == "delivered"
    lab.clock.now = START + LIFETIME - MARGIN - 1
    assert (await provider.send(_push(call_id="b"))).status == "delivered"
    assert lab.mock.token_requests == 1
    lab.clock.now = START + LIFETIME - MARGIN
    assert (await provider.send(_push(call_id="c"))).status == "delivered"
    assert lab.mock.token_requests == 2
    assert len(lab.mock.access_tokens) == 2
    assert lab.mock.messages[2].access_token == lab.mock.issued[1].value
    assert provider.tokens.fetches == 2


@pytest.mark.parametrize(
    ("code", "retry_after", "status", "http_status"),
    [
        ("QUOTA_EXCEEDED", 7, "retry", 429),
        ("UNAVAILABLE", 3, "retry", 503),
        ("INTERNAL", None, "retry", 500),
        ("THIRD_PARTY_AUTH_ERROR", None, "error", 401),
        ("INVALID_ARGUMENT", None, "error", 400),
        ("UNREGISTERED", None, "invalid_target", 404),
        ("SENDER_ID_MISMATCH", None, "error", 403),  # our project is wrong: keep the token
    ],
)
async def test_each_fault_maps_to_its_outcome(
    lab: Lab, code: str, retry_after: int | None, status: str, http_status: int
) -> None:
    provider = lab.make()
    lab.mock.fail_next(code, retry_after=retry_after)
    outcome = await provider.send(_push())
    assert (outcome.status, outcome.http_status, outcome.reason) == (status, http_status, code)
    assert outcome.retry_after == (float(retry_after) if retry_after is not None else None)
    assert lab.mock.token_requests == 1  # none of these asks for a new access token
    assert (await provider.send(_push())).status == "delivered"


async def test_unregistered_token_is_invalid_target(lab: Lab) -> None:
    lab.mock.unregister(TOKEN)
    outcome = await lab.make().send(_push())
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "invalid_target",
        404,
        "UNREGISTERED",
    )
    assert lab.mock.messages == []
    assert lab.mock.rejected == [(404, "UNREGISTERED")]


async def test_token_of_another_sender_is_a_configuration_error(lab: Lab) -> None:
    """The token belongs to another Firebase project: our project_id is wrong, the
    token is fine (PROTOCOLS.md §5): keep it, report the error."""
    lab.mock.issue_token(TOKEN, "someone-elses-app")
    outcome = await lab.make().send(_push())
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "error",
        403,
        "SENDER_ID_MISMATCH",
    )
    assert lab.mock.messages == []


async def test_quota_exceeded_surfaces_retry_after(lab: Lab) -> None:
    lab.mock.fail_next("QUOTA_EXCEEDED", retry_after=60)
    outcome = await lab.make().send(_push())
    assert (outcome.status, outcome.retry_after) == ("retry", 60.0)


async def test_a_401_triggers_exactly_one_refresh(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push(call_id="a"))).status == "delivered"
    lab.clock.now += 120
    lab.mock.revoke_access_tokens()
    outcome = await provider.send(_push(call_id="b"))
    assert outcome.status == "delivered", outcome
    assert lab.mock.token_requests == 2
    assert provider.tokens.refreshes_on_401 == 1
    assert lab.mock.messages[-1].access_token == lab.mock.issued[1].value
    # FCM refusing the fresh token too: no second refresh within the hold-off.
    lab.mock.revoke_access_tokens()
    outcome = await provider.send(_push(call_id="c"))
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "error",
        401,
        "UNAUTHENTICATED",
    )
    assert lab.mock.token_requests == 2


async def test_injected_unauthenticated_is_retried_once_with_a_new_token(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push())).status == "delivered"
    lab.clock.now += 120
    lab.mock.fail_next("UNAUTHENTICATED", times=2)
    outcome = await provider.send(_push())
    assert (outcome.status, outcome.reason) == ("error", "UNAUTHENTICATED")
    assert lab.mock.token_requests == 2  # one refresh, then the error
    assert (await provider.send(_push())).status == "delivered"
    assert lab.mock.token_requests == 2


async def test_concurrent_401s_share_one_refresh(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push())).status == "delivered"
    lab.clock.now += 120
    lab.mock.revoke_access_tokens()
    lab.mock.latency = 0.02
    outcomes = await asyncio.gather(*(provider.send(_push(call_id=f"c{n}")) for n in range(10)))
    assert [o.status for o in outcomes] == ["delivered"] * 10
    assert lab.mock.token_requests == 2


async def test_token_endpoint_failure_is_retry_and_not_asked_per_push(lab: Lab) -> None:
    provider = lab.make(fetch_retry_s=10.0)
    lab.mock.fail_token_next(503, "backend_error")
    outcome = await provider.send(_push())
    assert outcome.status == "retry"
    assert outcome.reason is not None
    assert outcome.reason.startswith("oauth: token endpoint answered 503")
    assert (await provider.send(_push())).status == "retry"
    assert lab.mock.token_requests == 1
    lab.clock.now += 11
    assert (await provider.send(_push())).status == "delivered"
    assert lab.mock.token_requests == 2


async def test_old_token_kept_when_refresh_fails_before_expiry(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push())).status == "delivered"
    lab.clock.now = START + LIFETIME - 60
    lab.mock.fail_token_next(500, "internal_failure")
    assert (await provider.send(_push())).status == "delivered"
    assert lab.mock.token_requests == 2
    assert lab.mock.access_tokens == [lab.mock.issued[0].value]


async def test_unknown_service_account_is_error(lab: Lab, tmp_path: Path) -> None:
    stranger = write_service_account(tmp_path / "other", PROJECT, lab.mock.token_uri)
    outcome = await lab.make(stranger.path).send(_push())
    assert (outcome.status, outcome.http_status) == ("error", None)
    assert outcome.reason == "oauth: token endpoint answered 400 invalid_grant"
    assert lab.mock.messages == []


async def test_token_uri_override(lab: Lab, tmp_path: Path) -> None:
    doc = json.loads(lab.account.path.read_text())
    doc["token_uri"] = "https://oauth2.googleapis.com/token"
    provider = lab.make(doc, token_uri=lab.mock.token_uri)
    assert (await provider.send(_push())).status == "delivered"


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_transport_failure_is_retry(lab: Lab) -> None:
    dead = f"https://127.0.0.1:{_dead_port()}"
    provider = lab.make(base_url=dead, token_uri=lab.mock.token_uri)
    outcome = await provider.send(_push())
    assert (outcome.status, outcome.http_status) == ("retry", None)
    assert outcome.reason is not None
    assert outcome.reason.startswith("transport: ")
    unreachable = lab.make(token_uri=f"{dead}/token")
    outcome = await unreachable.send(_push())
    assert outcome.status == "retry"
    assert outcome.reason is not None
    assert outcome.reason.startswith("oauth: token endpoint unreachable")


async def test_malformed_token_never_reaches_fcm(lab: Lab) -> None:
    outcome = await lab.make().send(_push(token="not a token"))
    assert (outcome.status, outcome.http_status) == ("invalid_target", None)
    assert outcome.reason is not None
    assert outcome.reason.startswith("BadToken")
    assert lab.mock.connections == 0


async def test_secrets_never_logged(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = lab.make()
    lab.mock.fail_next("QUOTA_EXCEEDED", retry_after=1)
    await provider.send(_push())
    await provider.send(_push())
    assert len(lab.mock.messages) == 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "fG7h" in text  # the masked token is there, so something was logged
    assert "authorization" in text.lower()  # hpack's header logs were captured and masked
    assert TOKEN not in text
    assert lab.mock.issued[0].value not in text
    key_line = json.loads(lab.account.path.read_text())["private_key"].splitlines()[1]
    assert key_line not in text
    assert "eyJ" not in text
    assert TOKEN not in repr(provider)
    assert "PRIVATE" not in repr(provider)


# -- the mock's own checks, driven by raw requests ---------------------------------------


async def _raw(
    mock: MockFcm, path: str, *, headers: dict[str, str], content: bytes
) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(http1=False, http2=True, verify=mock.client_ssl()) as client:
        response = await client.post(f"{mock.base_url}{path}", headers=headers, content=content)
    assert response.http_version == "HTTP/2"
    document: dict[str, Any] = response.json()
    return response.status_code, document


def _assertion(lab: Lab, **claims: Any) -> str:
    account = load_service_account(lab.account.path)
    now = int(lab.clock.now)
    payload = {
        "iss": account.client_email,
        "scope": FCM_SCOPE,
        "aud": lab.mock.token_uri,
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(claims)
    return jwt.encode(
        payload, account.private_key, algorithm="RS256", headers={"kid": account.private_key_id}
    )


class _NonEmptyText:
    """Equal to any non-empty string (an error description)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY: Any = _NonEmptyText()


async def _grant(lab: Lab, assertion: str) -> tuple[int, dict[str, Any]]:
    form = f"grant_type={JWT_BEARER_GRANT}&assertion={assertion}".encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return await _raw(lab.mock, "/token", headers=headers, content=form)


async def test_mock_token_endpoint_checks_the_assertion(lab: Lab) -> None:
    status, answer = await _grant(lab, _assertion(lab))
    assert status == 200
    assert answer["expires_in"] == LIFETIME
    assert answer["token_type"] == "Bearer"
    refusals = [
        (_assertion(lab, aud="https://oauth2.googleapis.com/token"), "invalid_grant"),
        (_assertion(lab, scope="https://www.googleapis.com/auth/cloud-platform"), "invalid_scope"),
        (
            _assertion(lab, exp=int(lab.clock.now) - 1, iat=int(lab.clock.now) - 100),
            "invalid_grant",
        ),
        (_assertion(lab, exp=int(lab.clock.now) + 7200), "invalid_grant"),
        (_assertion(lab, iss="nobody@x.iam.gserviceaccount.com"), "invalid_grant"),
        (_assertion(lab)[:-4] + "AAAA", "invalid_grant"),
    ]
    for assertion, error in refusals:
        assert await _grant(lab, assertion) == (400, {"error": error, "error_description": ANY})


async def test_mock_send_checks_auth_and_message_shape(lab: Lab) -> None:
    _, granted = await _grant(lab, _assertion(lab))
    bearer = {"authorization": f"Bearer {granted['access_token']}"}
    path = f"/v1/projects/{PROJECT}/messages:send"

    async def send(message: dict[str, Any], headers: dict[str, str] = bearer) -> tuple[int, str]:
        status, answer = await _raw(
            lab.mock, path, headers=headers, content=json.dumps({"message": message}).encode()
        )
        if status == 200:
            return status, answer["name"]
        return status, answer["error"]["status"]

    good = {"token": TOKEN, "data": {"a": "1"}, "android": {"priority": "HIGH", "ttl": "3.5s"}}
    status, name = await send(good)
    assert (status, name.startswith(f"projects/{PROJECT}/messages/")) == (200, True)
    assert await send({**good, "data": {"n": 1}}) == (400, "INVALID_ARGUMENT")
    assert await send({**good, "data": {"from": "x"}}) == (400, "INVALID_ARGUMENT")
    assert await send({**good, "data": {"google.x": "x"}}) == (400, "INVALID_ARGUMENT")
    assert await send({**good, "data": {"b": "y" * 4100}}) == (400, "INVALID_ARGUMENT")
    assert await send({**good, "android": {"priority": "URGENT"}}) == (400, "INVALID_ARGUMENT")
    assert await send({**good, "android": {"ttl": "30"}}) == (400, "INVALID_ARGUMENT")
    assert await send({**good, "android": {"ttl": "2419201s"}}) == (400, "INVALID_ARGUMENT")
    assert await send({k: v for k, v in good.items() if k != "token"}) == (400, "INVALID_ARGUMENT")
    assert await send(good, {"authorization": "Bearer ya29.forged"}) == (401, "UNAUTHENTICATED")
    assert await send(good, {}) == (401, "UNAUTHENTICATED")
    lab.clock.now += LIFETIME
    assert await send(good) == (401, "UNAUTHENTICATED")
    assert len(lab.mock.messages) == 1


async def test_mock_bad_token_error_names_the_token_field(lab: Lab) -> None:
    _, granted = await _grant(lab, _assertion(lab))
    message = {"token": "bad token!", "data": {}}
    status, answer = await _raw(
        lab.mock,
        f"/v1/projects/{PROJECT}/messages:send",
        headers={"authorization": f"Bearer {granted['access_token']}"},
        content=json.dumps({"message": message}).encode(),
    )
    assert status == 400
    details = answer["error"]["details"]
    assert {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    } in details
    assert details[1]["fieldViolations"][0]["field"] == "message.token"


def test_unreadable_service_account_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_service_account(missing)
    assert info.value.path == str(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_service_account(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_service_account(listed)
