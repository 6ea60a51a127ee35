"""ApnsProvider against the mock APNs: real HTTP/2 over TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.apns import ApnsProvider
from sipwake.push.base import PushKind, PushProvider, PushRequest
from sipwake.push.mock import MockApns
from sipwake.push.payload import ApnsSettings
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

TEAM, KID, BUNDLE = "TEAM123456", "KEY1234567", "org.lab.phone"
TOKEN = "0f1e2d3c" * 8
"""The phone's PushKit VoIP token (topic ``org.lab.phone.voip``)."""
REMOTE = "4b5a6978" * 8
"""Its remote-notification token (topic ``org.lab.phone``): alerts go there."""
START = 1_800_000_000.0


def _key_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Lab:
    mock: MockApns
    clock: FakeClock
    private_key: bytes
    make: Callable[..., ApnsProvider]


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    private, public = _key_pair()
    clock = FakeClock()
    providers: list[ApnsProvider] = []
    async with MockApns(
        tmp_path / "tls", public_key=public, team_id=TEAM, key_id=KID, clock=clock
    ) as mock:
        mock.issue_token(TOKEN, f"{BUNDLE}.voip")
        mock.issue_token(REMOTE, BUNDLE)

        def make(key: bytes = private) -> ApnsProvider:
            provider = ApnsProvider(
                ApnsSettings(team_id=TEAM, key_id=KID, bundle_id=BUNDLE, environment="sandbox"),
                private_key=key,
                base_url=mock.base_url,
                clock=clock,
                ssl_context=mock.client_ssl(),
                timeout=5.0,
            )
            providers.append(provider)
            return provider

        try:
            yield Lab(mock=mock, clock=clock, private_key=private, make=make)
        finally:
            for provider in providers:
                await provider.close()


def _push(kind: PushKind = "call", token: str = TOKEN, call_id: str = "c1@lab") -> PushRequest:
    # Both tokens, as Linphone registers them: calls go to the first, alerts to the second.
    prid = f"{token}:voip&{REMOTE}:remote"
    target = PushTarget(provider="apns", prid=prid, param=f"{TEAM}.{BUNDLE}.voip&remote")
    return PushRequest(kind=kind, target=target, call_id=call_id, caller="Alice")


async def test_voip_push_accepted_with_headers_and_verified_jwt(lab: Lab) -> None:
    provider = lab.make()
    outcome = await provider.send(_push())
    assert outcome.status == "delivered", outcome
    assert outcome.http_status == 200
    assert outcome.apns_id
    assert outcome.latency > 0
    [push] = lab.mock.pushes
    assert push.token == TOKEN
    assert push.headers[":method"] == "POST"
    assert push.headers["apns-push-type"] == "voip"
    assert push.headers["apns-topic"] == f"{BUNDLE}.voip"
    assert push.headers["apns-priority"] == "10"
    assert push.headers["apns-expiration"] == "0"
    assert push.body["call-id"] == "c1@lab"
    assert push.body["aps"] == {}
    assert jwt.get_unverified_header(push.jwt)["kid"] == KID
    claims = jwt.decode(push.jwt, options={"verify_signature": False})
    assert claims == {"iss": TEAM, "iat": int(START)}


async def test_alert_push_uses_bundle_topic(lab: Lab) -> None:
    provider: PushProvider = lab.make()
    outcome = await provider.send(_push("cancel"))
    assert outcome.status == "delivered", outcome
    [push] = lab.mock.pushes
    assert push.token == REMOTE
    assert push.headers["apns-push-type"] == "alert"
    assert push.headers["apns-topic"] == BUNDLE


async def test_jwt_reused_then_refreshed_after_55_minutes(lab: Lab) -> None:
    provider = lab.make()
    for n in range(3):
        lab.clock.now += 60
        assert (await provider.send(_push(call_id=f"c{n}"))).status == "delivered"
    assert len(lab.mock.jwts) == 1
    lab.clock.now = START + 55 * 60
    assert (await provider.send(_push(call_id="late"))).status == "delivered"
    assert len(lab.mock.jwts) == 2
    assert provider.tokens_minted == 2
    claims = jwt.decode(lab.mock.jwts[1], options={"verify_signature": False})
    assert claims["iat"] == int(START + 55 * 60)


async def test_expired_provider_token_is_reminted_and_retried_once(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push())).status == "delivered"
    lab.mock.fail_next(403, "ExpiredProviderToken")
    lab.clock.now += 25 * 60
    outcome = await provider.send(_push(call_id="again"))
    assert outcome.status == "delivered", outcome
    assert provider.tokens_minted == 2


async def test_unregistered_token_is_invalid_target(lab: Lab) -> None:
    lab.mock.unregister(TOKEN, timestamp_ms=1_700_000_000_000)
    outcome = await lab.make().send(_push())
    assert outcome.status == "invalid_target"
    assert (outcome.http_status, outcome.reason) == (410, "Unregistered")
    assert outcome.unregistered_at == 1_700_000_000.0
    assert lab.mock.pushes == []


async def test_malformed_device_token_never_reaches_apns(lab: Lab) -> None:
    outcome = await lab.make().send(_push(token="../../2/evil"))
    assert (outcome.status, outcome.http_status) == ("invalid_target", None)
    assert outcome.reason is not None
    assert outcome.reason.startswith("BadDeviceToken")
    assert lab.mock.connections == 0


async def test_too_many_requests_is_retry_with_retry_after(lab: Lab) -> None:
    lab.mock.fail_next(429, "TooManyRequests", retry_after=7)
    provider = lab.make()
    outcome = await provider.send(_push())
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "retry",
        429,
        "TooManyRequests",
    )
    assert outcome.retry_after == 7.0
    assert (await provider.send(_push())).status == "delivered"


async def test_service_unavailable_is_retry(lab: Lab) -> None:
    lab.mock.fail_next(503, "ServiceUnavailable")
    outcome = await lab.make().send(_push())
    assert (outcome.status, outcome.http_status, outcome.retry_after) == ("retry", 503, None)


async def test_wrong_key_is_error(lab: Lab) -> None:
    other_key, _ = _key_pair()
    outcome = await lab.make(other_key).send(_push())
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "error",
        403,
        "InvalidProviderToken",
    )
    assert lab.mock.pushes == []


async def _raw_post(mock: MockApns, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    async with httpx.AsyncClient(http1=False, http2=True, verify=mock.client_ssl()) as client:
        response = await client.post(
            f"{mock.base_url}/3/device/{TOKEN}", headers=headers, content=body
        )
    assert response.http_version == "HTTP/2"
    return response.status_code, response.json()["reason"]


def _voip_headers(provider_token: str) -> dict[str, str]:
    return {
        "authorization": f"bearer {provider_token}",
        "apns-push-type": "voip",
        "apns-topic": f"{BUNDLE}.voip",
    }


async def test_mock_rejects_a_token_older_than_an_hour(lab: Lab) -> None:
    provider = lab.make()
    assert (await provider.send(_push())).status == "delivered"
    lab.clock.now += 61 * 60
    status = await _raw_post(lab.mock, _voip_headers(lab.mock.jwts[0]), b'{"aps":{}}')
    assert status == (403, "ExpiredProviderToken")


async def test_mock_checks_topic_payload_and_auth(lab: Lab) -> None:
    fresh = jwt.encode(
        {"iss": TEAM, "iat": int(lab.clock.now)},
        lab.private_key,
        algorithm="ES256",
        headers={"kid": KID},
    )
    wrong_kid = jwt.encode(
        {"iss": TEAM, "iat": int(lab.clock.now)},
        lab.private_key,
        algorithm="ES256",
        headers={"kid": "OTHERKEY00"},
    )
    headers = _voip_headers(fresh)
    assert await _raw_post(lab.mock, {**headers, "apns-topic": BUNDLE}, b"{}") == (
        400,
        "BadTopic",
    )
    big = b'{"aps":{},"x":"' + b"y" * 5200 + b'"}'
    assert await _raw_post(lab.mock, headers, big) == (413, "PayloadTooLarge")
    assert await _raw_post(lab.mock, _voip_headers(wrong_kid), b"{}") == (
        403,
        "InvalidProviderToken",
    )
    no_auth = {k: v for k, v in headers.items() if k != "authorization"}
    assert await _raw_post(lab.mock, no_auth, b"{}") == (403, "MissingProviderToken")
    assert lab.mock.pushes == []


async def test_fifty_concurrent_pushes_share_one_connection(lab: Lab) -> None:
    lab.mock.latency = 0.05
    provider = lab.make()
    tokens = [f"{n:064x}" for n in range(50)]
    for token in tokens:
        lab.mock.issue_token(token, f"{BUNDLE}.voip")
    outcomes = await asyncio.gather(
        *(provider.send(_push(token=token, call_id=f"c{n}")) for n, token in enumerate(tokens))
    )
    assert [o.status for o in outcomes] == ["delivered"] * 50
    assert lab.mock.connections == 1
    assert sorted(p.token for p in lab.mock.pushes) == sorted(tokens)
    assert {p.connection for p in lab.mock.pushes} == {1}
    assert len(lab.mock.jwts) == 1


async def test_device_token_and_jwt_never_logged(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = lab.make()
    lab.mock.fail_next(429, "TooManyRequests", retry_after=1)
    await provider.send(_push())
    await provider.send(_push())
    assert len(lab.mock.pushes) == 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "0f1e" in text  # the masked token is there, so something was logged
    assert TOKEN not in text
    assert lab.mock.jwts[0] not in text
    assert lab.private_key.decode().splitlines()[1] not in text
    assert TOKEN not in repr(provider)
