"""WebPushProvider against the mock Web Push service: real HTTP/2 over TLS on 127.0.0.1.

Payloads are decrypted with ``http_ece`` (web-push-libs), an implementation independent
of ours, using a receiver key pair and auth secret made here, as a browser makes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import http_ece
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.base import PushKind, PushProvider, PushRequest
from sipwake.push.mock_webpush import MockWebPush
from sipwake.push.webpush import WebPushProvider, b64url_encode, topic_for
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

START = 1_800_000_000.0
SUBJECT = "mailto:ops@sipwake.example"


def _vapid_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Browser:
    """The receiving side of a subscription: its ECDH key pair and auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def new(cls) -> Browser:
        return cls(private_key=ec.generate_private_key(ec.SECP256R1()), auth=os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64url_encode(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def decrypt(self, body: bytes) -> object:
        plaintext: bytes = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plaintext)


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Lab:
    mock: MockWebPush
    clock: FakeClock
    vapid_pem: bytes
    make: Callable[..., WebPushProvider]


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    clock = FakeClock()
    vapid_pem = _vapid_pem()
    providers: list[WebPushProvider] = []
    async with MockWebPush(tmp_path / "tls", clock=clock) as mock:

        def make(
            key: bytes = vapid_pem,
            *,
            timeout: float = 5.0,
            allowed_hosts: tuple[str, ...] = ("127.0.0.1",),
        ) -> WebPushProvider:
            provider = WebPushProvider(
                key,
                SUBJECT,
                clock=clock,
                ssl_context=mock.client_ssl(),
                timeout=timeout,
                allowed_hosts=allowed_hosts,
            )
            providers.append(provider)
            return provider

        try:
            yield Lab(mock=mock, clock=clock, vapid_pem=vapid_pem, make=make)
        finally:
            for provider in providers:
                await provider.close()


def _push(
    endpoint: str,
    browser: Browser | None = None,
    kind: PushKind = "call",
    call_id: str = "c1@lab",
    body: str | None = None,
) -> PushRequest:
    target = PushTarget(
        provider="webpush",
        prid=endpoint,
        p256dh=browser.p256dh if browser else None,
        auth=b64url_encode(browser.auth) if browser else None,
    )
    return PushRequest(
        kind=kind,
        target=target,
        call_id=call_id,
        caller="Alice",
        call_uuid="0b5e7c3a-1111-4222-8333-444455556666",
        body=body,
    )


async def test_encrypted_call_push_decrypts_independently(lab: Lab) -> None:
    provider = lab.make()
    browser = Browser.new()
    endpoint = lab.mock.subscribe(restricted_key=provider.public_key)
    outcome = await provider.send(_push(endpoint, browser))
    assert outcome.status == "delivered", outcome
    assert outcome.http_status == 201
    assert outcome.latency > 0
    [message] = lab.mock.messages
    assert message.subscription == endpoint.rsplit("/", 1)[1]
    assert message.headers[":method"] == "POST"
    assert message.headers["ttl"] == "30"
    assert message.headers["urgency"] == "high"
    assert message.headers["topic"] == topic_for("c1@lab")
    assert message.headers["content-encoding"] == "aes128gcm"
    assert message.headers["authorization"].endswith(f", k={provider.public_key}")
    assert browser.decrypt(message.body) == {
        "type": "call",
        "call-id": "c1@lab",
        "caller": "Alice",
        "uuid": "0b5e7c3a-1111-4222-8333-444455556666",
    }
    assert message.jwt is not None
    claims = jwt.decode(message.jwt, options={"verify_signature": False})
    assert claims == {"aud": lab.mock.base_url, "exp": int(START) + 12 * 3600, "sub": SUBJECT}


async def test_message_and_cancel_payloads(lab: Lab) -> None:
    provider: PushProvider = lab.make()
    browser = Browser.new()
    endpoint = lab.mock.subscribe()
    assert (await provider.send(_push(endpoint, browser, "message", "m1", "hi"))).status == (
        "delivered"
    )
    assert (await provider.send(_push(endpoint, browser, "cancel"))).status == "delivered"
    message, cancel = lab.mock.messages
    assert (message.headers["ttl"], message.headers["urgency"]) == ("3600", "normal")
    assert "topic" not in message.headers
    assert browser.decrypt(message.body) == {
        "type": "message",
        "call-id": "m1",
        "caller": "Alice",
        "uuid": "0b5e7c3a-1111-4222-8333-444455556666",
        "body": "hi",
    }
    assert cancel.headers["topic"] == topic_for("c1@lab")
    payload = browser.decrypt(cancel.body)
    assert isinstance(payload, dict)
    assert payload["body"] == "Missed call from Alice"


async def test_without_keys_the_push_is_an_empty_wake_up(lab: Lab) -> None:
    outcome = await lab.make().send(_push(lab.mock.subscribe()))
    assert outcome.status == "delivered", outcome
    [message] = lab.mock.messages
    assert message.body == b""
    assert "content-encoding" not in message.headers
    assert message.headers["ttl"] == "30"


async def test_vapid_jwt_cached_across_pushes_then_renewed(lab: Lab) -> None:
    provider = lab.make()
    endpoints = [lab.mock.subscribe(restricted_key=provider.public_key) for _ in range(3)]
    for n, endpoint in enumerate(endpoints):
        lab.clock.now += 60
        assert (await provider.send(_push(endpoint, call_id=f"c{n}"))).status == "delivered"
    assert len(lab.mock.jwts) == 1
    assert provider.tokens_minted == 1
    assert lab.mock.connections == 1
    lab.clock.now = START + 11.5 * 3600
    assert (await provider.send(_push(endpoints[0], call_id="late"))).status == "delivered"
    assert len(lab.mock.jwts) == 2
    assert provider.tokens_minted == 2
    claims = jwt.decode(lab.mock.jwts[1], options={"verify_signature": False})
    assert claims["exp"] == int(START + 11.5 * 3600) + 12 * 3600


async def test_expired_and_unknown_subscriptions_are_invalid_targets(lab: Lab) -> None:
    provider = lab.make()
    endpoint = lab.mock.subscribe()
    lab.mock.expire(endpoint)
    gone = await provider.send(_push(endpoint))
    assert (gone.status, gone.http_status) == ("invalid_target", 410)
    assert gone.reason == "Gone: subscription expired"
    unknown = await provider.send(_push(f"{lab.mock.base_url}/push/never-subscribed"))
    assert (unknown.status, unknown.http_status) == ("invalid_target", 404)
    assert lab.mock.messages == []


async def test_too_many_requests_is_retry_with_retry_after(lab: Lab) -> None:
    provider = lab.make()
    endpoint = lab.mock.subscribe()
    lab.mock.fail_next(429, "slow down", retry_after=7)
    outcome = await provider.send(_push(endpoint))
    assert (outcome.status, outcome.http_status, outcome.retry_after) == ("retry", 429, 7.0)
    assert outcome.reason == "TooManyRequests: slow down"
    assert (await provider.send(_push(endpoint))).status == "delivered"


async def test_service_unavailable_is_retry(lab: Lab) -> None:
    lab.mock.fail_next(503, "maintenance")
    outcome = await lab.make().send(_push(lab.mock.subscribe()))
    assert (outcome.status, outcome.http_status, outcome.retry_after) == ("retry", 503, None)


async def test_payload_too_large_is_error(lab: Lab) -> None:
    lab.mock.fail_next(413, "too big")
    outcome = await lab.make().send(_push(lab.mock.subscribe(), Browser.new()))
    assert (outcome.status, outcome.http_status) == ("error", 413)
    assert outcome.reason == "PayloadTooLarge: too big"


async def test_wrong_vapid_key_for_restricted_subscription_is_error(lab: Lab) -> None:
    owner = lab.make()
    intruder = lab.make(_vapid_pem())
    endpoint = lab.mock.subscribe(restricted_key=owner.public_key)
    outcome = await intruder.send(_push(endpoint))
    assert (outcome.status, outcome.http_status) == ("error", 403)
    assert outcome.reason is not None
    assert "does not match the restricted subscription" in outcome.reason
    # The refused JWT is dropped: the next push signs a new one.
    await intruder.send(_push(endpoint))
    assert intruder.tokens_minted == 2
    assert lab.mock.messages == []


async def test_timeout_and_refused_connection_are_retry(lab: Lab) -> None:
    lab.mock.latency = 2.0
    slow = await lab.make(timeout=0.3).send(_push(lab.mock.subscribe()))
    assert (slow.status, slow.http_status) == ("retry", None)
    assert slow.reason is not None
    assert slow.reason.startswith("timeout: ")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = await lab.make().send(_push(f"https://127.0.0.1:{closed_port}/push/x"))
    assert refused.status == "retry"
    assert refused.reason is not None
    assert refused.reason.startswith("transport: ")


async def test_only_https_endpoints_on_allowed_hosts_are_posted_to(lab: Lab) -> None:
    provider = lab.make(allowed_hosts=("push.services.mozilla.com",))
    blocked = await provider.send(_push(lab.mock.subscribe()))
    assert blocked.status == "error"
    assert blocked.reason is not None
    assert blocked.reason.startswith("EndpointNotAllowed")
    plain = await provider.send(_push("http://push.services.mozilla.com/wpush/v2/abc"))
    assert plain.status == "invalid_target"
    assert plain.reason is not None
    assert plain.reason.startswith("BadEndpoint: scheme must be https")
    assert lab.mock.connections == 0


async def test_fifty_concurrent_pushes_share_one_connection(lab: Lab) -> None:
    lab.mock.latency = 0.05
    provider = lab.make()
    browser = Browser.new()
    endpoints = [lab.mock.subscribe() for _ in range(50)]
    outcomes = await asyncio.gather(
        *(provider.send(_push(e, browser, call_id=f"c{n}")) for n, e in enumerate(endpoints))
    )
    assert [o.status for o in outcomes] == ["delivered"] * 50
    assert lab.mock.connections == 1
    assert len(lab.mock.jwts) == 1
    payloads = [browser.decrypt(m.body) for m in lab.mock.messages]
    assert sorted(p["call-id"] for p in payloads if isinstance(p, dict)) == sorted(
        f"c{n}" for n in range(50)
    )


async def test_endpoint_jwt_and_auth_secret_never_logged(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = lab.make()
    browser = Browser.new()
    endpoint = lab.mock.subscribe()
    lab.mock.fail_next(429, "slow down", retry_after=1)
    await provider.send(_push(endpoint, browser))
    await provider.send(_push(endpoint, browser))
    assert len(lab.mock.messages) == 1
    secret = endpoint.rsplit("/", 1)[1]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{lab.mock.base_url}/push" in text  # the masked endpoint is there
    assert secret not in text
    assert lab.mock.jwts[0] not in text
    assert b64url_encode(browser.auth) not in text
    assert lab.vapid_pem.decode().splitlines()[1] not in text
    assert secret not in repr(provider)


# -- the mock's own checks, with a hand-made client ------------------------------------


async def _raw_post(
    mock: MockWebPush, endpoint: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, str]:
    async with httpx.AsyncClient(http1=False, http2=True, verify=mock.client_ssl()) as client:
        response = await client.post(endpoint, headers=headers, content=body)
    assert response.http_version == "HTTP/2"
    if response.status_code == 201:
        return 201, response.headers["location"]
    return response.status_code, response.json()["message"]


def _vapid(pem: bytes, claims: dict[str, object]) -> str:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    k = b64url_encode(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    return f"vapid t={jwt.encode(claims, key, algorithm='ES256')}, k={k}"


async def test_mock_checks_rfc8030_headers_and_size(lab: Lab) -> None:
    endpoint = lab.mock.subscribe()
    ok = {"ttl": "60"}
    assert (await _raw_post(lab.mock, endpoint, {}))[0] == 400
    assert await _raw_post(lab.mock, endpoint, {"ttl": "soon"}) == (
        400,
        "TTL header missing or not a number",
    )
    assert (await _raw_post(lab.mock, endpoint, {**ok, "urgency": "urgent"}))[0] == 400
    assert (await _raw_post(lab.mock, endpoint, {**ok, "topic": "x" * 33}))[0] == 400
    assert (await _raw_post(lab.mock, endpoint, {**ok, "topic": "a/b"}))[0] == 400
    assert (await _raw_post(lab.mock, endpoint, ok, b"x" * 4097))[0] == 413
    assert await _raw_post(lab.mock, endpoint, ok, b"plain text") == (
        400,
        "a payload needs Content-Encoding: aes128gcm",
    )
    status, location = await _raw_post(lab.mock, endpoint, {**ok, "urgency": "low"})
    assert status == 201
    assert location.startswith(f"{lab.mock.base_url}/message/")
    assert len(lab.mock.messages) == 1


async def test_mock_checks_vapid(lab: Lab) -> None:
    provider = lab.make()
    endpoint = lab.mock.subscribe(restricted_key=provider.public_key)
    now = int(lab.clock.now)
    good = {"aud": lab.mock.base_url, "exp": now + 3600, "sub": SUBJECT}
    ttl = {"ttl": "0"}
    assert (await _raw_post(lab.mock, endpoint, ttl))[0] == 401
    cases = [
        ({**good, "aud": "https://elsewhere.example"}, "aud is not this push service"),
        ({**good, "exp": now - 1}, "expired"),
        ({**good, "exp": now + 25 * 3600}, "more than 24 hours ahead"),
    ]
    for claims, reason in cases:
        status, message = await _raw_post(
            lab.mock, endpoint, {**ttl, "authorization": _vapid(lab.vapid_pem, claims)}
        )
        assert status == 403
        assert reason in message
    forged = _vapid(lab.vapid_pem, good).replace("k=", f"k={provider.public_key[:-4]}AAAA", 1)
    assert (await _raw_post(lab.mock, endpoint, {**ttl, "authorization": forged}))[0] == 403
    accepted = await _raw_post(
        lab.mock, endpoint, {**ttl, "authorization": _vapid(lab.vapid_pem, good)}
    )
    assert accepted[0] == 201
    assert len(lab.mock.messages) == 1
