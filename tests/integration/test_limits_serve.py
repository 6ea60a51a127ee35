"""Rate limits through ``sipwake serve`` over real UDP: a flooding source is cut off
(unanswered, logged, counted in ``sipwake status``) while another is served; an outside
caller's calls stop waking a sleeping phone past the wake-push limit."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest
from serving import running

from sipwake.config import (
    AuthConfig,
    Config,
    LimitsConfig,
    ListenerSpec,
    StoreConfig,
    TlsConfig,
    UserConfig,
)

pytestmark = pytest.mark.timeout(60)


def _config(tmp_path: Path, **limits: object) -> Config:
    return Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={"alice": UserConfig(password="a"), "bob": UserConfig(password="b")},
        secret_file=tmp_path / "secret",
        admin="127.0.0.1:0",
        limits=LimitsConfig(**limits),
    )


def _options(host: str, port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:lab.test SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bKfl{n}\r\n"
        f"From: <sip:scan@example.test>;tag=f{n}\r\nTo: <sip:lab.test>\r\nCall-ID: fl{n}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def _answers(sock: socket.socket, settle: float = 0.5) -> int:
    count = 0
    loop = asyncio.get_running_loop()
    while True:
        try:
            await asyncio.wait_for(loop.sock_recv(sock, 65535), settle)
            count += 1
        except TimeoutError:
            return count


async def test_a_flooding_source_is_cut_off_and_others_are_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, requests_per_source="20/2s", trusted_sources=[])
    caplog.set_level("WARNING", logger="sipwake")
    async with running(config) as server:
        port = next(b.port for b in server.bound if b.transport == "udp")
        flood = _socket("127.0.0.2")
        other = _socket("127.0.0.3")
        try:
            for n in range(200):
                flood.sendto(_options("127.0.0.2", flood.getsockname()[1], n), ("127.0.0.1", port))
            answered = await _answers(flood)
            assert 20 <= answered <= 22  # the burst, and what refilled while it was sent
            other.sendto(_options("127.0.0.3", other.getsockname()[1], 999), ("127.0.0.1", port))
            assert await _answers(other) == 1
            assert "rate limit: requests from 127.0.0.2 over 20/2s" in caplog.text
            warnings = [r for r in caplog.records if "rate limit" in r.getMessage()]
            assert len(warnings) <= 3  # 1st, 10th, 100th refusal: not one per packet
            assert server.admin is not None
            async with httpx.AsyncClient() as client:
                status = (await client.get(f"{server.admin.url}/status")).json()
            limits = status["limits"]["requests_per_source"]
            assert limits["refused"] >= 170
            assert limits["top"][0]["key"] == "127.0.0.2"
            # The flood stopped: a second later the source is served again.
            await asyncio.sleep(1.2)
            flood.sendto(_options("127.0.0.2", flood.getsockname()[1], 1000), ("127.0.0.1", port))
            assert await _answers(flood) == 1
        finally:
            flood.close()
            other.close()


async def test_loopback_is_trusted_by_default(tmp_path: Path) -> None:
    config = _config(tmp_path, requests_per_source="20/2s")
    async with running(config) as server:
        port = next(b.port for b in server.bound if b.transport == "udp")
        sock = _socket("127.0.0.1")
        try:
            for n in range(100):
                sock.sendto(_options("127.0.0.1", sock.getsockname()[1], n), ("127.0.0.1", port))
            assert await _answers(sock) == 100
        finally:
            sock.close()


async def test_status_command_prints_what_the_limits_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, requests_per_source="5/60s", trusted_sources=[])
    async with running(config) as server:
        port = next(b.port for b in server.bound if b.transport == "udp")
        sock = _socket("127.0.0.4")
        try:
            for n in range(30):
                sock.sendto(_options("127.0.0.4", sock.getsockname()[1], n), ("127.0.0.1", port))
            await _answers(sock)
        finally:
            sock.close()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipwake",
            "status",
            "--server",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0
        text = out.decode()
        assert "rate limit requests_per_source 5/60s: 25 refused (127.0.0.4 25)" in text
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipwake",
            "status",
            "--json",
            "--server",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert json.loads(out)["limits"]["requests_per_source"]["refused"] == 25


async def test_outside_calls_stop_waking_a_sleeping_phone_with_the_default_limit(
    tmp_path: Path,
) -> None:
    """Issue 18 finding 10: ten INVITEs from one outside address to a sleeping user made
    ten rounds of VoIP pushes. With the defaults, five (5/60s per source and user)."""
    from tests.integration.test_wake_serve import TcpPhone

    config = _config(tmp_path).model_copy(
        update={
            "listen": [
                ListenerSpec(transport="udp", host="127.0.0.1", port=0),
                ListenerSpec(transport="tcp", host="127.0.0.1", port=0),
            ],
            "auth": AuthConfig(open=True),  # the phone registers without digest
        }
    )
    config.calls.no_answer_s = 2.0
    async with running(config) as server:
        assert server.sandbox is not None
        pushes = server.sandbox.subscribe()
        tcp = next(b.port for b in server.bound if b.transport == "tcp")
        udp = next(b.port for b in server.bound if b.transport == "udp")
        phone = TcpPhone(tcp)
        assert (await phone.register()).status == 200
        await phone.suspend()
        sock = _socket("127.0.0.5")
        try:
            for n in range(10):
                sock.sendto(_invite(sock.getsockname()[1], n), ("127.0.0.1", udp))
            await _answers(sock, settle=1.0)
        finally:
            sock.close()
        received = 0
        while not pushes.empty():
            push = pushes.get_nowait()
            received += push.kind == "call"
        assert received == 5


def _invite(port: int, n: int) -> bytes:
    return (
        "INVITE sip:bob@lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.5:{port};branch=z9hG4bKtf{n}\r\n"
        f"From: <sip:+19005550100@fraud.example.test>;tag=t{n}\r\nTo: <sip:bob@lab.test>\r\n"
        f"Call-ID: toll-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.5:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
