"""A server over UDP past its bound of answered (settled) transactions: it keeps
answering new REGISTERs 200 rather than 503, ends the transaction answered longest ago,
and says so once in its log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving import running
from sipua import udp_address

from sipwake.config import AuthConfig, Config, LimitsConfig, ListenerSpec, StoreConfig, TlsConfig
from sipwake.server import Server
from sipwake.sip.message import Response
from sipwake.sip.parser import parse_message
from sipwake.transaction.layer import LINGER_FACTOR

pytestmark = pytest.mark.timeout(20)

LIMIT = 10


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Server]:
    config = Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        auth=AuthConfig(open=True),
        limits=LimitsConfig(max_transactions=LIMIT),
        secret_file=tmp_path / "secret",
    )
    async with running(config) as server:
        yield server


def register(i: int, port: int) -> bytes:
    return (
        "REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-linger-{i};rport\r\n"
        f"From: <sip:u{i}@lab.test>;tag=f{i}\r\nTo: <sip:u{i}@lab.test>\r\n"
        f"Call-ID: linger-{i}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:u{i}@127.0.0.1:{port}>\r\nExpires: 600\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def ask(sock: socket.socket, data: bytes, server: tuple[str, int]) -> tuple[Response, bytes]:
    loop = asyncio.get_running_loop()
    sock.sendto(data, server)
    reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2.0)
    response = parse_message(reply)
    assert isinstance(response, Response)
    return response, reply


async def test_past_the_bound_new_registers_are_served_and_the_oldest_end(
    small: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    addr = udp_address(small)
    bound = LIMIT * LINGER_FACTOR
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        answers = []
        for i in range(bound + 15):
            response, data = await ask(sock, register(i, port), addr)
            answers.append(data)
            assert response.status == 200, f"REGISTER {i}: {response.status} {response.reason}"
        # Fifteen of them ended early: their retransmission reaches the registrar again,
        # which refuses an unchanged CSeq (RFC 3261 §10.3 step 7) ...
        response, _ = await ask(sock, register(0, port), addr)
        assert (response.status, response.reason) == (500, "CSeq Out of Order")
        # ... while a kept one absorbs its retransmission with the very 200 it sent.
        _, again = await ask(sock, register(bound + 14, port), addr)
        assert again == answers[bound + 14]
        await asyncio.sleep(0.6)  # two load samples
    said = [r.getMessage() for r in caplog.records if "settled transactions held" in r.message]
    assert len(said) == 1, said
    assert f"{bound} settled transactions held" in said[0]
