"""Call details sealed in pushes (``calls.encrypt_push``, the innovaphone preset) through
``sipwake serve`` on loopback: a phone registers over TLS with push parameters and gets
its push key in the 200 OK; a call comes in while it sleeps; the mock APNs records a
payload without the caller in clear, and the key opens ``enc`` to the caller and Call-ID.
A phone registering over plain TCP gets no key, and its pushes no details."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sipua import Ua, udp_address

from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.push.mock import MockApns, RecordedPush
from sipwake.server import Server
from sipwake.sip.framing import StreamFramer
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message

pytestmark = pytest.mark.timeout(30)

TLS_TOKEN = "7a11ce00" * 8
TCP_TOKEN = "7c90c0de" * 8
KEY_HEADER = "Sipwake-Push-Key"


class StreamPhone:
    """A phone app over TLS or TCP that registers with push parameters; closing the
    connection is what iOS does when it suspends the app."""

    def __init__(self, port: int, *, token: str, instance: str, tls: ssl.SSLContext | None):
        self.port = port
        self.token = token
        self.instance = instance
        self.tls = tls
        self.cseq = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    async def register(self) -> Response:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.tls
        )
        local = self.writer.get_extra_info("sockname")[1]
        transport = "TLS" if self.tls else "TCP"
        self.cseq += 1
        push = f"pn-provider=apns;pn-param=TEAM123456.org.lab.phone.voip;pn-prid={self.token}"
        self.writer.write(
            f"REGISTER sip:lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 127.0.0.1:{local};branch=z9hG4bKpv{self.cseq};rport\r\n"
            f"From: <sip:bob@lab.test>;tag=pv\r\nTo: <sip:bob@lab.test>\r\n"
            f"Call-ID: reg-{self.instance}\r\nCSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:bob@127.0.0.1:{local};transport={transport.lower()};{push}>"
            f';+sip.instance="<urn:uuid:{self.instance}>"\r\n'
            f"Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode()
        )
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "connection closed"
            self.pending += [f for f in self.framer.feed(data) if isinstance(f, bytes) and f]
        response = parse_message(self.pending.pop(0), stream=True)
        assert isinstance(response, Response)
        return response

    async def suspend(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.writer = None
        await asyncio.sleep(0.1)  # the server notices the closed flow


@dataclass
class Lab:
    server: Server
    apns: MockApns
    tls_port: int
    tcp_port: int
    trust: ssl.SSLContext


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with MockApns(
        tmp_path / "apns", public_key=public, team_id="TEAM123456", key_id="KEY1234567"
    ) as apns:
        for token in (TLS_TOKEN, TCP_TOKEN):  # PushKit VoIP tokens of the two phones
            apns.issue_token(token, "org.lab.phone.voip")
        assert apns.cert_file is not None
        config = Config(
            domain="lab.test",
            listen=[
                ListenerSpec(transport="udp", host="127.0.0.1", port=0),
                ListenerSpec(transport="tcp", host="127.0.0.1", port=0),
                ListenerSpec(transport="tls", host="127.0.0.1", port=0),
            ],
            store=StoreConfig(backend="memory"),
            tls=TlsConfig(dir=tmp_path / "tls"),
            users={"alice": UserConfig(password="a"), "bob": UserConfig(password="b")},
            secret_file=tmp_path / "secret",
            auth={"open": True},  # type: ignore[arg-type]
            admin=None,
            calls={"preset": "innovaphone", "no_answer_s": 8.0},  # type: ignore[arg-type]
            push={  # type: ignore[arg-type]
                "apns": {
                    "team_id": "TEAM123456",
                    "key_id": "KEY1234567",
                    "key_file": str(key_file),
                    "bundle_id": "org.lab.phone",
                    "base_url": apns.base_url,
                    "ca_file": str(apns.cert_file),
                }
            },
        )
        server = Server(config, trace=True)
        await server.start()
        trust = ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))
        trust.check_hostname = False  # the lab certificate names the host, not 127.0.0.1
        try:
            yield Lab(
                server=server,
                apns=apns,
                tls_port=next(b.port for b in server.bound if b.transport == "tls"),
                tcp_port=next(b.port for b in server.bound if b.transport == "tcp"),
                trust=trust,
            )
        finally:
            await server.close()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _call(lab: Lab, alice: Ua) -> tuple[Request, RecordedPush]:
    """Alice ("Alice Example", number alice) calls bob; the VoIP push APNs received."""
    plain = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
    named = parse_message(
        plain.to_bytes().replace(b"From: <sip:alice", b'From: "Alice Example" <sip:alice')
    )
    assert isinstance(named, Request)
    alice.send(named)
    await alice.expect(180)
    for _ in range(60):
        if lab.apns.pushes:
            break
        await asyncio.sleep(0.05)
    (push,) = lab.apns.pushes
    return named, push


def _raw(push: RecordedPush) -> str:
    """Everything APNs saw of the push except the device token and provider token."""
    headers: dict[str, Any] = {
        k: v for k, v in push.headers.items() if k not in (":path", "authorization")
    }
    return json.dumps({"headers": headers, "body": push.body}, ensure_ascii=False)


async def test_tls_phone_gets_a_key_and_opens_the_sealed_caller(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    phone = StreamPhone(
        lab.tls_port,
        token=TLS_TOKEN,
        instance="00000000-0000-4000-8000-00000000c0de",
        tls=lab.trust,
    )
    ok = await phone.register()
    assert ok.status == 200
    [header] = ok.headers.values(KEY_HEADER)
    key = _b64url_decode(header)
    assert len(key) == 32
    await phone.suspend()
    alice = await Ua("alice", "a", udp_address(lab.server), "lab.test").start()
    try:
        invite, push = await _call(lab, alice)
    finally:
        alice.close()
    assert push.token == TLS_TOKEN
    assert push.headers["apns-push-type"] == "voip"
    assert push.headers["apns-topic"] == "org.lab.phone.voip"
    assert set(push.body) == {"type", "enc", "aps"}
    assert push.body["type"] == "call"
    raw = _raw(push)
    for secret in ("alice", "Alice", invite.call_id):
        assert secret not in raw, secret
    sealed = _b64url_decode(push.body["enc"])
    details = json.loads(AESGCM(key).decrypt(sealed[:12], sealed[12:], None))
    assert details["caller"] == "alice"
    assert details["name"] == "Alice Example"
    assert details["call_id"] == invite.call_id
    assert details["type"] == "call"
    # The key went to the phone only: never into a log line or the trace.
    assert header not in caplog.text
    assert f"{KEY_HEADER}: ***" in caplog.text  # the trace shows the 200, key hidden
    assert lab.server.node is not None
    assert header not in json.dumps(lab.server.node.snapshot(0.0), default=str)


async def test_tcp_phone_gets_no_key_and_its_push_no_details(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    phone = StreamPhone(
        lab.tcp_port,
        token=TCP_TOKEN,
        instance="00000000-0000-4000-8000-0000000007c9",
        tls=None,
    )
    ok = await phone.register()
    assert ok.status == 200
    assert ok.headers.values(KEY_HEADER) == []
    await phone.suspend()
    alice = await Ua("alice", "a", udp_address(lab.server), "lab.test").start()
    caplog.set_level(logging.WARNING, logger="sipwake.push.registry")
    try:
        invite, push = await _call(lab, alice)
    finally:
        alice.close()
    assert push.token == TCP_TOKEN
    assert push.body == {"type": "call", "aps": {}}  # privacy wins: no details at all
    assert invite.call_id not in _raw(push)
    [warning] = [r for r in caplog.records if "registered without TLS" in r.getMessage()]
    assert TCP_TOKEN not in warning.getMessage()
