"""WebhookProvider against a real HTTP/1.1 server on 127.0.0.1 (asyncio streams)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sipwake.push.base import PushRequest
from sipwake.push.webhook import SIGNATURE_HEADER, WebhookProvider, verify_signature
from sipwake.sip.pushtarget import PushTarget, mask_token
from sipwake.transport.tls import client_context, ensure_self_signed, server_context

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cret-webhook-key"
TOKEN = "feedface" * 8
START = 1_800_000_000.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class HookServer:
    """A minimal HTTP/1.1 server: records each request, answers with ``answer``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.answer = Answer()
        self._tls = tls
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{'https' if self._tls else 'http'}://{host}:{port}/wake"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(method, path, headers, body))
            answer = self.answer
            if answer.delay:
                await asyncio.sleep(answer.delay)
            extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items())
            writer.write(
                f"HTTP/1.1 {answer.status} X\r\nContent-Length: {len(answer.body)}\r\n"
                f"Connection: close\r\n{extra}\r\n".encode()
                + answer.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def hook() -> AsyncIterator[HookServer]:
    server = HookServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def clock() -> float:
    return START


def call(prid: str = TOKEN) -> PushRequest:
    return PushRequest(
        kind="call",
        target=PushTarget(provider="apns", prid=prid, param="TEAM.org.lab.phone.voip"),
        call_id="call-42@lab.test",
        caller="Bob",
        call_uuid="6f1a4a6e-0000-4000-8000-000000000001",
    )


async def test_post_is_signed_and_carries_the_push(
    hook: HookServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with WebhookProvider(hook.url, SECRET, clock=clock) as provider:
        outcome = await provider.send(call())
    assert outcome.status == "delivered"
    assert outcome.http_status == 200
    assert outcome.provider == "webhook"
    assert outcome.latency > 0
    [got] = hook.received
    assert (got.method, got.path) == ("POST", "/wake")
    assert got.headers["content-type"] == "application/json"
    signature = got.headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(SECRET, signature, got.body, START + 1)
    assert not verify_signature("wrong", signature, got.body, START)
    assert json.loads(got.body) == {
        "kind": "call",
        "call_id": "call-42@lab.test",
        "caller": "Bob",
        "call_uuid": "6f1a4a6e-0000-4000-8000-000000000001",
        "body": None,
        "provider": "apns",
        "prid": TOKEN,
        "param": "TEAM.org.lab.phone.voip",
        "sent_at": START,
    }
    logged = caplog.text
    assert SECRET not in logged
    assert TOKEN not in logged
    assert mask_token(TOKEN) in logged


async def test_https_with_a_trusted_certificate(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "tls", ["127.0.0.1"])
    server = HookServer(tls=server_context(cert, key))
    await server.start()
    try:
        trusting = client_context(cafile=cert)
        async with WebhookProvider(server.url, SECRET, clock=clock, ssl_context=trusting) as ok:
            outcome = await ok.send(call())
        assert outcome.status == "delivered"
        [got] = server.received
        assert verify_signature(SECRET, got.headers[SIGNATURE_HEADER.lower()], got.body, START)
        # The system trust store does not know the lab's certificate: no delivery.
        async with WebhookProvider(server.url, SECRET, clock=clock) as untrusting:
            refused = await untrusting.send(call())
        assert refused.status == "retry"
        assert refused.reason is not None
        assert refused.reason.startswith("transport:")
        assert len(server.received) == 1
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("answer", "status", "reason", "retry_after"),
    [
        (Answer(200), "delivered", None, None),
        (Answer(204), "delivered", None, None),
        (Answer(410, body=b'{"reason":"Unregistered"}'), "invalid_target", "Unregistered", None),
        (Answer(404), "invalid_target", "HTTP 404", None),
        (Answer(429, headers={"Retry-After": "3"}), "retry", "HTTP 429", 3.0),
        (Answer(503, headers={"Retry-After": "11"}), "retry", "HTTP 503", 11.0),
        (Answer(500, body=b'{"reason":"boom"}'), "retry", "boom", None),
        (Answer(400), "error", "HTTP 400", None),
    ],
)
async def test_status_mapping_over_http(
    hook: HookServer,
    answer: Answer,
    status: str,
    reason: str | None,
    retry_after: float | None,
) -> None:
    hook.answer = answer
    async with WebhookProvider(hook.url, SECRET, clock=clock) as provider:
        outcome = await provider.send(call())
    assert (outcome.status, outcome.reason, outcome.retry_after) == (status, reason, retry_after)
    assert outcome.http_status == answer.status
    assert len(hook.received) == 1


async def test_timeout_is_retry(hook: HookServer) -> None:
    hook.answer = Answer(200, delay=2.0)
    async with WebhookProvider(hook.url, SECRET, clock=clock, timeout_s=0.2) as provider:
        outcome = await asyncio.wait_for(provider.send(call()), 5)
    assert outcome.status == "retry"
    assert outcome.reason is not None
    assert outcome.reason.startswith("timeout:")
    assert outcome.http_status is None
    assert 0.15 < outcome.latency < 2.0


async def test_refused_connection_is_retry() -> None:
    server = HookServer()
    await server.start()
    url = server.url
    await server.close()  # nothing listens on that port any more
    async with WebhookProvider(url, SECRET, clock=clock, timeout_s=2) as provider:
        outcome = await provider.send(call())
    assert outcome.status == "retry"
    assert outcome.reason is not None
    assert outcome.reason.startswith("transport:")


async def test_concurrent_pushes_each_arrive_signed(hook: HookServer) -> None:
    tokens = [f"{i:02d}" + "ab" * 31 for i in range(8)]
    async with WebhookProvider(hook.url, SECRET, clock=clock) as provider:
        outcomes = await asyncio.gather(*(provider.send(call(t)) for t in tokens))
    assert [o.status for o in outcomes] == ["delivered"] * len(tokens)
    assert sorted(json.loads(r.body)["prid"] for r in hook.received) == sorted(tokens)
    for r in hook.received:
        assert verify_signature(SECRET, r.headers[SIGNATURE_HEADER.lower()], r.body, START)


def test_bad_configuration_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        WebhookProvider("ftp://example.test/x", SECRET, clock=clock)
    with pytest.raises(ValueError, match="secret"):
        WebhookProvider("http://127.0.0.1:9/x", "", clock=clock)


async def test_repr_hides_the_secret(hook: HookServer) -> None:
    async with WebhookProvider(hook.url, SECRET, clock=clock) as provider:
        assert SECRET not in repr(provider)
        assert hook.url in repr(provider)
