"""Slow clients over real sockets on 127.0.0.1: a slowloris for SIP.

The attacker's playbook (slowloris, applied to SIP over TCP): open connections and
trickle a header one byte every few seconds, or send nothing at all, so that each
connection stays open and the source's connection slots
(``limits.max_connections_per_source``) fill. A server survives when a message
must be whole within a deadline counted from its first byte (Kamailio's
``tcp_msg_read_timeout``), a new connection must bring its first message in that
time, handshakes (TLS, WebSocket) have their own deadlines, and a connection that
carries no binding does not outlive an idle timeout. A connection a phone registered
over stays open as long as its binding: that is how the phone is reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from serving import running
from websockets.asyncio.client import connect as ws_connect
from websockets.protocol import State
from websockets.typing import Subprotocol

from sipwake.config import (
    Config,
    LimitsConfig,
    ListenerSpec,
    StoreConfig,
    TlsConfig,
    UserConfig,
    load_config,
)
from sipwake.errors import ConfigError
from sipwake.server import Server
from sipwake.sip.framing import StreamFramer
from sipwake.sip.message import Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transport.base import ListenerConfig, LocalAddr, TransportLimits, TransportManager

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")

SIP = Subprotocol("sip")
#: The deadlines of these tests (seconds); the trickle's pace.
DEADLINE = 1.0
TRICKLE = 0.3

REGISTER = (
    b"REGISTER sip:example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-1\r\n"
    b"Call-ID: a@b\r\nCSeq: 1 REGISTER\r\n"
    b"Content-Length: 0\r\n\r\n"
)


async def within(aw: Awaitable[T], seconds: float = 5.0) -> T:
    return await asyncio.wait_for(aw, seconds)


@contextlib.asynccontextmanager
async def manager(
    transports: tuple[str, ...], tmp_path: Path, **limits: float
) -> AsyncIterator[tuple[TransportManager, asyncio.Queue[tuple[bytes, Peer]]]]:
    """A transport manager on loopback whose received messages land in a queue."""
    received: asyncio.Queue[tuple[bytes, Peer]] = asyncio.Queue()
    transport_manager = TransportManager(
        lambda data, peer, local: received.put_nowait((data, peer)),
        limits=TransportLimits(**limits),  # type: ignore[arg-type]
        tls_dir=tmp_path / "tls",
    )
    await transport_manager.start(
        [ListenerConfig(transport=t, host="127.0.0.1") for t in transports]  # type: ignore[arg-type]
    )
    try:
        yield transport_manager, received
    finally:
        await transport_manager.close()


def _local(transport_manager: TransportManager, transport: str) -> LocalAddr:
    return next(b for b in transport_manager.bound() if b.transport == transport)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, pace: float) -> None:
    """Send ``data`` one byte every ``pace`` seconds until done or the peer is gone."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(pace)


async def _closed_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from ``started`` until the server closed the connection (read EOF)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    return asyncio.get_running_loop().time() - started


# -- the message deadline ------------------------------------------------------------


async def test_trickling_client_is_closed_at_the_message_deadline(tmp_path: Path) -> None:
    async with manager(("tcp",), tmp_path, message_timeout=DEADLINE, idle_timeout=60.0) as (
        transport_manager,
        received,
    ):
        local = _local(transport_manager, "tcp")
        reader, writer = await within(asyncio.open_connection(local.host, local.port))
        loop = asyncio.get_running_loop()
        started = loop.time()
        # One byte every 0.3 s: each byte resets an idle timer, none completes the message.
        trickler = loop.create_task(_trickle(writer, REGISTER, TRICKLE))
        took = await within(_closed_after(reader, started))
        trickler.cancel()
        writer.close()
        assert DEADLINE * 0.9 <= took <= DEADLINE + 1.0, took
        assert received.empty()
        assert transport_manager.stats().flows == 0


async def test_silent_connection_is_closed_at_the_message_deadline(tmp_path: Path) -> None:
    async with manager(("tcp",), tmp_path, message_timeout=DEADLINE) as (transport_manager, _):
        local = _local(transport_manager, "tcp")
        reader, writer = await within(asyncio.open_connection(local.host, local.port))
        took = await within(_closed_after(reader, asyncio.get_running_loop().time()))
        writer.close()
        assert DEADLINE * 0.9 <= took <= DEADLINE + 1.0, took


async def test_message_in_pieces_within_the_deadline_is_served(tmp_path: Path) -> None:
    async with manager(("tcp",), tmp_path, message_timeout=DEADLINE) as (
        transport_manager,
        received,
    ):
        local = _local(transport_manager, "tcp")
        reader, writer = await within(asyncio.open_connection(local.host, local.port))
        for _ in range(2):  # a pause longer than the deadline between messages is fine
            third = len(REGISTER) // 3
            for piece in (REGISTER[:third], REGISTER[third : 2 * third], REGISTER[2 * third :]):
                writer.write(piece)
                await asyncio.sleep(TRICKLE)  # 0.9 s in all: within the 1 s deadline
            data, peer = await within(received.get())
            assert data == REGISTER
            await asyncio.sleep(DEADLINE * 1.5)
            assert peer.flow is not None
            assert transport_manager.flow_alive(peer.flow)
        assert not reader.at_eof()
        writer.close()


async def test_tricklers_no_longer_lock_a_source_out(tmp_path: Path) -> None:
    """100 connections from one source (the per-source limit), half trickling a header,
    half silent: the 101st is refused, and once their deadline cut them it is served."""
    async with manager(
        ("tcp",), tmp_path, message_timeout=DEADLINE, max_flows_per_ip=100, idle_timeout=60.0
    ) as (transport_manager, received):
        local = _local(transport_manager, "tcp")
        loop = asyncio.get_running_loop()
        address = (local.host, local.port)
        clients = [await within(asyncio.open_connection(*address)) for _ in range(100)]
        tricklers = [
            loop.create_task(_trickle(writer, REGISTER, TRICKLE)) for _, writer in clients[::2]
        ]
        await asyncio.sleep(0.1)
        assert transport_manager.stats().flows == 100
        reader, writer = await within(asyncio.open_connection(local.host, local.port))
        assert await within(reader.read()) == b""  # locked out
        writer.close()
        await within(asyncio.gather(*(_closed_after(r, 0.0) for r, _ in clients)))
        reader, writer = await within(asyncio.open_connection(local.host, local.port))
        writer.write(REGISTER)
        data, _ = await within(received.get())
        assert data == REGISTER
        assert received.empty()  # no trickled message ever made it
        writer.close()
        for task in tricklers:
            task.cancel()
        for _, client_writer in clients:
            client_writer.close()


# -- handshakes ---------------------------------------------------------------------


async def _silent_socket_closed_after(host: str, port: int) -> float:
    """Connect over plain TCP, send nothing, and time how long the server waits."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await within(loop.sock_connect(sock, (host, port)))
        started = loop.time()
        with contextlib.suppress(ConnectionError):
            while await within(loop.sock_recv(sock, 4096)):
                pass
        return loop.time() - started


async def test_tls_client_without_client_hello_is_closed_at_the_handshake_deadline(
    tmp_path: Path,
) -> None:
    async with manager(
        ("tls",), tmp_path, tls_handshake_timeout=DEADLINE, message_timeout=30.0
    ) as (transport_manager, _):
        local = _local(transport_manager, "tls")
        took = await _silent_socket_closed_after(local.host, local.port)
        assert DEADLINE * 0.9 <= took <= DEADLINE + 1.0, took


async def test_websocket_upgrade_not_finished_is_closed_at_its_deadline(tmp_path: Path) -> None:
    async with manager(("ws",), tmp_path, ws_handshake_timeout=DEADLINE, message_timeout=30.0) as (
        transport_manager,
        _,
    ):
        local = _local(transport_manager, "ws")
        reader, writer = await within(asyncio.open_connection(local.host, local.port))
        started = asyncio.get_running_loop().time()
        # Half an HTTP upgrade request, and then nothing.
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        took = await within(_closed_after(reader, started))
        writer.close()
        assert DEADLINE * 0.9 <= took <= DEADLINE + 1.0, took


async def test_websocket_without_a_first_message_is_closed_at_the_deadline(
    tmp_path: Path,
) -> None:
    async with manager(("ws",), tmp_path, message_timeout=DEADLINE, idle_timeout=60.0) as (
        transport_manager,
        received,
    ):
        local = _local(transport_manager, "ws")
        url = f"ws://{local.host}:{local.port}"
        async with (
            ws_connect(url, subprotocols=[SIP]) as silent,
            ws_connect(url, subprotocols=[SIP]) as talking,
        ):
            started = asyncio.get_running_loop().time()
            await talking.send(REGISTER.decode())
            data, _ = await within(received.get())
            assert data == REGISTER
            await within(silent.wait_closed())
            took = asyncio.get_running_loop().time() - started
            assert DEADLINE * 0.9 <= took <= DEADLINE + 1.0, took
            await asyncio.sleep(DEADLINE)
            assert talking.state is State.OPEN


# -- connections with and without a binding (a real server) ---------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="tcp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={"alice": UserConfig(password="a")},
        secret_file=tmp_path / "secret",
        auth={"open": True},  # type: ignore[arg-type]
        limits=LimitsConfig(message_timeout_s=DEADLINE, idle_timeout_s=DEADLINE),
    )
    async with running(config) as running_server:
        yield running_server


class Client:
    """One TCP connection to the server: send bytes, read whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    @classmethod
    async def connect(cls, server: Server) -> Client:
        port = next(b.port for b in server.bound if b.transport == "tcp")
        return cls(*await within(asyncio.open_connection("127.0.0.1", port)))

    async def ask(self, data: bytes) -> Response:
        self.writer.write(data)
        while not self.pending:
            chunk = await within(self.reader.read(65536))
            assert chunk, "connection closed"
            self.pending += [f for f in self.framer.feed(chunk) if isinstance(f, bytes)]
        response = parse_message(self.pending.pop(0), stream=True)
        assert isinstance(response, Response)
        return response


def _register(expires: int, cseq: int) -> bytes:
    return (
        f"REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP alice.invalid;branch=z9hG4bKreg{cseq};rport\r\n"
        f"From: <sip:alice@lab.test>;tag=a1\r\nTo: <sip:alice@lab.test>\r\n"
        f"Call-ID: reg-alice\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:alice@alice.invalid;transport=tcp>\r\n"
        f"Expires: {expires}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


OPTIONS = (
    b"OPTIONS sip:lab.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKopt1;rport\r\n"
    b"From: <sip:probe@lab.test>;tag=p1\r\nTo: <sip:lab.test>\r\n"
    b"Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


async def test_idle_connection_without_binding_closes_registered_one_stays(
    server: Server,
) -> None:
    registered = await Client.connect(server)
    assert (await registered.ask(_register(600, 1))).status == 200
    unregistered = await Client.connect(server)
    assert (await unregistered.ask(OPTIONS)).status == 200
    loop = asyncio.get_running_loop()
    took = await within(_closed_after(unregistered.reader, loop.time()))
    assert DEADLINE * 0.9 <= took <= DEADLINE + 1.0, took
    # Three idle timeouts later, the registered connection is still open and serves.
    await asyncio.sleep(3 * DEADLINE)
    assert (await registered.ask(OPTIONS.replace(b"opt1", b"opt2"))).status == 200
    # Its binding gone (unregistered), it is idle like any other and closes.
    assert (await registered.ask(_register(0, 2))).status == 200
    took = await within(_closed_after(registered.reader, loop.time()))
    assert took <= DEADLINE + 1.0, took
    for client in (registered, unregistered):
        client.writer.close()


async def test_keepalives_alone_do_not_keep_an_unbound_connection(server: Server) -> None:
    client = await Client.connect(server)
    assert (await client.ask(OPTIONS)).status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def ping() -> None:  # RFC 5626 §4.4.1 keep-alives, several per idle timeout
        with contextlib.suppress(ConnectionError):
            while True:
                client.writer.write(b"\r\n\r\n")
                await asyncio.sleep(TRICKLE)

    pinger = loop.create_task(ping())
    took = await within(_closed_after(client.reader, started))
    pinger.cancel()
    client.writer.close()
    assert took <= DEADLINE + 1.0, took


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("message_timeout_s: 0", "limits.message_timeout_s"),
        ("idle_timeout_s: -5", "limits.idle_timeout_s"),
        ("tls_handshake_timeout_s: soon", "limits.tls_handshake_timeout_s"),
        ("ws_handshake_timeout_s: 7200", "limits.ws_handshake_timeout_s"),
    ],
)
def test_bad_deadline_names_file_line_and_field(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(f"domain: lab.test\nlimits:\n  max_transactions: 100\n  {line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:4: {field}:"), str(caught.value)


def test_deadlines_from_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "limits: {message_timeout_s: 2.5, idle_timeout_s: 300, tls_handshake_timeout_s: 4,"
        " ws_handshake_timeout_s: 6}\n"
    )
    limits = load_config(path).limits
    assert (
        limits.message_timeout_s,
        limits.idle_timeout_s,
        limits.tls_handshake_timeout_s,
        limits.ws_handshake_timeout_s,
    ) == (2.5, 300.0, 4.0, 6.0)
    defaults = LimitsConfig()
    assert (defaults.message_timeout_s, defaults.idle_timeout_s) == (10.0, 120.0)
