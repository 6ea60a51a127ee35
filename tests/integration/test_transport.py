"""TransportManager over real sockets on 127.0.0.1 (UDP, TCP, TLS, WS, WSS)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from sipwake.sip.peer import Peer
from sipwake.transport.base import ListenerConfig, LocalAddr, TransportLimits, TransportManager
from sipwake.transport.tls import client_context, ensure_self_signed

pytestmark = pytest.mark.timeout(5)

T = TypeVar("T")

REGISTER = (
    b"REGISTER sip:example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-1\r\n"
    b"Call-ID: a@b\r\nCSeq: 1 REGISTER\r\n"
    b"Content-Length: 0\r\n\r\n"
)
MESSAGE = (
    b"MESSAGE sip:bob@example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-2\r\n"
    b"Call-ID: c@d\r\nCSeq: 2 MESSAGE\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)
SIP = Subprotocol("sip")
OK = b"SIP/2.0 200 OK\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"


async def within(aw: Awaitable[T], seconds: float = 3.0) -> T:
    return await asyncio.wait_for(aw, seconds)


@dataclass
class Node:
    """A manager and what it reported to its callbacks."""

    manager: TransportManager
    received: asyncio.Queue[tuple[bytes, Peer, LocalAddr]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    def local(self, transport: str) -> LocalAddr:
        return next(b for b in self.manager.bound() if b.transport == transport)


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    nodes: list[Node] = []

    async def make(*transports: str, host: str = "127.0.0.1", **kwargs: object) -> Node:
        kwargs.setdefault("tls_dir", tmp_path / "tls")
        node = Node(manager=None)  # type: ignore[arg-type]
        node.manager = TransportManager(
            lambda data, peer, local: node.received.put_nowait((data, peer, local)),
            on_flow_closed=node.closed.put_nowait,
            **kwargs,  # type: ignore[arg-type]
        )
        await node.manager.start(
            [ListenerConfig(transport=t, host=host) for t in transports]  # type: ignore[arg-type]
        )
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.manager.close()


async def tcp_client(
    local: LocalAddr, context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await within(
        asyncio.open_connection(
            local.host, local.port, ssl=context, server_hostname=local.host if context else None
        )
    )


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


# UDP


async def test_udp_round_trip(make_node: NodeFactory) -> None:
    node = await make_node("udp")
    local = node.local("udp")
    assert local.port != 0
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.sendto(REGISTER, (local.host, local.port))
        data, peer, arrived_on = await within(node.received.get())
        assert data == REGISTER
        assert peer == Peer(transport="udp", host="127.0.0.1", port=sock.getsockname()[1])
        assert arrived_on == local
        assert node.manager.send(OK, peer)
        reply, source = await within(loop.sock_recvfrom(sock, 65535))
        assert reply == OK
        assert source == (local.host, local.port)  # from the listener socket (RFC 3581 §4)


async def test_received_messages_go_to_the_receiver_set_last(make_node: NodeFactory) -> None:
    node = await make_node("udp", "tcp")
    later: asyncio.Queue[tuple[bytes, Peer, LocalAddr]] = asyncio.Queue()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        udp = node.local("udp")
        sock.sendto(REGISTER, (udp.host, udp.port))
        assert (await within(node.received.get()))[0] == REGISTER
        node.manager.receive_with(lambda data, peer, local: later.put_nowait((data, peer, local)))
        sock.sendto(MESSAGE, (udp.host, udp.port))
        data, _, arrived_on = await within(later.get())
        assert (data, arrived_on) == (MESSAGE, udp)
    _reader, writer = await tcp_client(node.local("tcp"))
    writer.write(REGISTER)
    data, _, arrived_on = await within(later.get())
    assert (data, arrived_on) == (REGISTER, node.local("tcp"))
    assert node.received.empty()
    await close_writer(writer)


async def test_udp_burst_is_answered_after_it_in_order(tmp_path: Path) -> None:
    """Datagrams waiting together are read as one batch; what handling them sends is held
    until the batch is handled, then leaves in order (one kernel pass, not one per message)."""
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    sent_before_batch_end: list[bool] = []
    manager: TransportManager | None = None

    def answer(data: bytes, peer: Peer, local: LocalAddr) -> None:
        assert manager is not None
        number = data.split(b" ", 2)[1]
        assert manager.send(b"ANSWER " + number, peer)
        try:
            client.recv(100)
        except BlockingIOError:
            sent_before_batch_end.append(False)
        else:
            sent_before_batch_end.append(True)

    manager = TransportManager(answer, tls_dir=tmp_path / "tls")
    await manager.start([ListenerConfig(transport="udp", host="127.0.0.1")])
    try:
        (local,) = manager.bound()
        for n in range(20):  # all queued before the loop gets to read any
            client.sendto(b"REQUEST %d" % n, (local.host, local.port))
        answers = [(await within(loop.sock_recvfrom(client, 100)))[0] for _ in range(20)]
        assert answers == [b"ANSWER %d" % n for n in range(20)]
        assert sent_before_batch_end == [False] * 20
    finally:
        client.close()
        await manager.close()


async def test_udp_sends_from_the_listener_asked_for(make_node: NodeFactory) -> None:
    node = await make_node("udp", "udp")
    first, second = node.manager.bound()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        peer = Peer(transport="udp", host="127.0.0.1", port=sock.getsockname()[1])
        for local in (second, first):
            assert node.manager.send(OK, peer, local=local)
            _, source = await within(loop.sock_recvfrom(sock, 65535))
            assert source[1] == local.port


async def test_udp_ignores_keepalives_and_drops_oversized(make_node: NodeFactory) -> None:
    node = await make_node("udp", limits=TransportLimits(max_message=1000))
    local = node.local("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in (b"\r\n\r\n", b"\r\n", REGISTER + b"x" * 1000, MESSAGE):
            sock.sendto(datagram, (local.host, local.port))
        data, _, _ = await within(node.received.get())
    assert data == MESSAGE
    assert node.received.empty()
    assert node.manager.stats().messages_dropped == 1


async def test_udp_send_needs_an_ip_address(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node("udp")
    for _ in range(2):  # a failure is not remembered: each attempt warns again
        assert not node.manager.send(OK, Peer(transport="udp", host="phone.invalid", port=5060))
        assert not node.manager.send(OK, Peer(transport="udp", host="::1", port=5060))  # no v6
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        warnings
        == [
            "UDP to udp:phone.invalid:5060: expected an IP address, resolve the host first",
            "UDP to udp:[::1]:5060: no IPv6 listener",
        ]
        * 2
    )


async def test_udp_remembered_route_agrees_with_the_listener_asked_for(
    make_node: NodeFactory,
) -> None:
    """Without ``local`` the first listener sends (its route remembered per host); with
    ``local`` the one asked for, every time, in any order."""
    node = await make_node("udp", "udp")
    first, second = node.manager.bound()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        plain = Peer(transport="udp", host="127.0.0.1", port=port)
        bracketed = Peer(transport="udp", host="[127.0.0.1]", port=port)
        for peer, local, expected in [
            (plain, None, first),
            (plain, second, second),
            (plain, None, first),
            (bracketed, None, first),
            (bracketed, second, second),
            (plain, first, first),
            (bracketed, None, first),
        ]:
            assert node.manager.send(OK, peer, local=local)
            reply, source = await within(loop.sock_recvfrom(sock, 65535))
            assert (reply, source[1]) == (OK, expected.port)
    assert node.manager.stats().messages_sent == 7


# TCP


async def test_tcp_frames_coalesced_and_split_messages(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    _reader, writer = await tcp_client(node.local("tcp"))
    writer.write(REGISTER + MESSAGE)
    writer.write(MESSAGE[:30])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(MESSAGE[30:])
    got = [await within(node.received.get()) for _ in range(3)]
    assert [data for data, _, _ in got] == [REGISTER, MESSAGE, MESSAGE]
    peers = {peer for _, peer, _ in got}
    assert len(peers) == 1
    peer = peers.pop()
    assert peer.transport == "tcp"
    assert peer.flow is not None
    assert peer.port == writer.get_extra_info("sockname")[1]
    assert got[0][2] == node.local("tcp")
    await close_writer(writer)


async def test_tcp_ping_gets_pong(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    reader, writer = await tcp_client(node.local("tcp"))
    writer.write(b"\r\n\r\n")
    assert await within(reader.readexactly(2)) == b"\r\n"
    writer.write(b"\r\n")  # a pong from the client is ignored
    writer.write(REGISTER)
    data, _, _ = await within(node.received.get())
    assert data == REGISTER
    await close_writer(writer)


async def test_tcp_bad_content_length_closes_connection(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    reader, writer = await tcp_client(node.local("tcp"))
    writer.write(REGISTER.replace(b"Content-Length: 0", b"Content-Length: abc"))
    assert await within(reader.read()) == b""
    flow_id = await within(node.closed.get())
    assert not node.manager.flow_alive(flow_id)
    assert node.received.empty()
    await close_writer(writer)


async def test_tcp_response_goes_back_over_the_same_flow(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    reader, writer = await tcp_client(node.local("tcp"))
    writer.write(REGISTER)
    _, peer, _ = await within(node.received.get())
    assert peer.flow is not None
    assert node.manager.flow_alive(peer.flow)
    assert node.manager.send(OK, peer)
    assert await within(reader.readexactly(len(OK))) == OK
    assert node.manager.stats().flows == 1

    await close_writer(writer)
    assert await within(node.closed.get()) == peer.flow
    assert not node.manager.flow_alive(peer.flow)
    assert not node.manager.send(OK, peer)


async def _inbound_flow(
    node: Node, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Peer]:
    """A client connection (its receive buffer shrunk to ``rcvbuf``) and its peer."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    local = node.local("tcp")
    sock.connect((local.host, local.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
    writer.write(REGISTER)
    _, peer, _ = await within(node.received.get())
    return reader, writer, peer


async def test_tcp_slow_reader_gets_everything_in_order(make_node: NodeFactory) -> None:
    """What the kernel does not take at once is kept and sent, in order, when it can."""
    node = await make_node("tcp", limits=TransportLimits(max_write_buffer=64 << 20))
    reader, writer, peer = await _inbound_flow(node, rcvbuf=4096)
    chunks = [bytes([65 + i % 26]) * 65536 for i in range(64)]  # 4 MiB
    for chunk in chunks:
        assert node.manager.send(chunk, peer)
    got = await within(reader.readexactly(len(chunks) * 65536))
    assert got == b"".join(chunks)
    assert node.manager.flow_alive(peer.flow or 0)
    await close_writer(writer)


async def test_tcp_close_sends_what_is_buffered_first(make_node: NodeFactory) -> None:
    node = await make_node("tcp", limits=TransportLimits(max_write_buffer=64 << 20))
    reader, writer, peer = await _inbound_flow(node, rcvbuf=4096)
    data = bytes(range(256)) * 16384  # 4 MiB: more than the socket buffers hold
    assert node.manager.send(data, peer)
    assert peer.flow is not None
    assert node.manager.close_flow(peer.flow)
    assert not node.manager.send(OK, peer)  # closing: nothing new goes in
    assert await within(reader.read()) == data
    assert await within(node.closed.get()) == peer.flow
    await close_writer(writer)


async def test_tcp_peer_that_does_not_read_loses_its_flow(make_node: NodeFactory) -> None:
    node = await make_node("tcp", limits=TransportLimits(max_write_buffer=256 << 10))
    _reader, writer, peer = await _inbound_flow(node, rcvbuf=4096)
    sent = 0
    while node.manager.send(b"x" * 65536, peer):
        sent += 1
        assert sent < 1000, "the flow was never given up"
    assert await within(node.closed.get()) == peer.flow
    assert not node.manager.flow_alive(peer.flow or 0)
    await close_writer(writer)


async def test_tcp_reset_by_the_peer_ends_the_flow(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    _reader, writer, peer = await _inbound_flow(node)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()  # linger 0: RST
    assert await within(node.closed.get()) == peer.flow
    assert not node.manager.send(OK, peer)


async def test_tcp_outgoing_connection_becomes_a_flow(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.put_nowait((r, w))

    phone = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = phone.sockets[0].getsockname()[1]
    target = Peer(transport="tcp", host="127.0.0.1", port=port)
    try:
        assert node.manager.send(REGISTER, target)  # queued while connecting
        assert node.manager.send(MESSAGE, target)  # same connection, not a second one
        reader, writer = await within(accepted.get())
        assert await within(reader.readexactly(len(REGISTER + MESSAGE))) == REGISTER + MESSAGE
        writer.write(OK)
        data, peer, local = await within(node.received.get())
        assert data == OK
        assert (peer.host, peer.port) == ("127.0.0.1", port)
        assert peer.flow is not None
        assert local == node.local("tcp")
        assert accepted.empty()
        assert node.manager.stats().flows == 1
        await close_writer(writer)
        assert await within(node.closed.get()) == peer.flow
    finally:
        phone.close()
        await phone.wait_closed()


async def test_tcp_connect_failure_reports_the_flow_closed(make_node: NodeFactory) -> None:
    node = await make_node("tcp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    assert node.manager.send(REGISTER, Peer(transport="tcp", host="127.0.0.1", port=port))
    await within(node.closed.get())
    assert node.manager.stats().flows == 0


async def test_tcp_connect_failure_hands_back_what_was_queued(make_node: NodeFactory) -> None:
    failed: asyncio.Queue[tuple[bytes, Peer]] = asyncio.Queue()
    node = await make_node("tcp", on_send_failed=lambda data, peer: failed.put_nowait((data, peer)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    peer = Peer(transport="tcp", host="127.0.0.1", port=port)
    assert node.manager.send(REGISTER, peer)
    assert node.manager.send(MESSAGE, peer)  # queued on the same connecting flow
    first, second = await within(failed.get()), await within(failed.get())
    assert [first[0], second[0]] == [REGISTER, MESSAGE]
    assert (first[1].host, first[1].port) == ("127.0.0.1", port)


async def test_tcp_connection_limit_per_source(make_node: NodeFactory) -> None:
    node = await make_node("tcp", limits=TransportLimits(max_flows_per_ip=2))
    clients = [await tcp_client(node.local("tcp")) for _ in range(3)]
    assert await within(clients[2][0].read()) == b""
    for _, writer in clients[:2]:
        writer.write(REGISTER)
        data, _, _ = await within(node.received.get())
        assert data == REGISTER
    stats = node.manager.stats()
    assert (stats.flows, stats.flows_rejected) == (2, 1)
    for _, writer in clients:
        await close_writer(writer)


async def test_tcp_idle_flow_closed_unless_pinned(make_node: NodeFactory) -> None:
    node = await make_node("tcp", limits=TransportLimits(idle_timeout=0.2))
    idle_reader, idle_writer = await tcp_client(node.local("tcp"))
    _pinned_reader, pinned_writer = await tcp_client(node.local("tcp"))
    pinned_writer.write(REGISTER)
    _, pinned, _ = await within(node.received.get())
    assert pinned.flow is not None
    assert node.manager.pin_flow(pinned.flow)
    assert await within(idle_reader.read()) == b""
    idle_flow = await within(node.closed.get())
    assert idle_flow != pinned.flow
    await asyncio.sleep(0.4)
    assert node.manager.flow_alive(pinned.flow)
    for writer in (idle_writer, pinned_writer):
        await close_writer(writer)


async def test_close_ends_flows_without_callbacks(make_node: NodeFactory) -> None:
    node = await make_node("tcp", "udp")
    reader, writer = await tcp_client(node.local("tcp"))
    writer.write(REGISTER)
    _, peer, _ = await within(node.received.get())
    await within(node.manager.close())
    assert await within(reader.read()) == b""
    assert node.closed.empty()
    assert not node.manager.send(OK, peer)
    await close_writer(writer)


# TLS


def test_self_signed_certificate_is_made_once(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "tls", ["192.0.2.1"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pem = cert.read_bytes()
    assert ensure_self_signed(tmp_path / "tls", ["other.test"]) == (cert, key)
    assert cert.read_bytes() == pem


async def test_tls_with_self_signed_certificate(make_node: NodeFactory, tmp_path: Path) -> None:
    node = await make_node("tls")
    cert = tmp_path / "tls" / "cert.pem"
    reader, writer = await tcp_client(node.local("tls"), client_context(cafile=cert))
    writer.write(b"\r\n\r\n" + REGISTER)
    assert await within(reader.readexactly(2)) == b"\r\n"
    data, peer, local = await within(node.received.get())
    assert (data, peer.transport, local.transport) == (REGISTER, "tls", "tls")
    assert node.manager.send(OK, peer)
    assert await within(reader.readexactly(len(OK))) == OK
    await close_writer(writer)


async def test_tls_outgoing_flow(make_node: NodeFactory, tmp_path: Path) -> None:
    server = await make_node("tls")
    client = await make_node("tls", tls_client=client_context(verify=False))
    target = server.local("tls")
    assert client.manager.send(REGISTER, Peer(transport="tls", host=target.host, port=target.port))
    data, peer, _ = await within(server.received.get())
    assert data == REGISTER
    assert server.manager.send(OK, peer)
    data, back, local = await within(client.received.get())
    assert (data, back.transport, local) == (OK, "tls", client.local("tls"))


# WebSocket


async def test_ws_round_trip_with_sip_subprotocol(make_node: NodeFactory) -> None:
    node = await make_node("ws")
    local = node.local("ws")
    async with connect(f"ws://{local.host}:{local.port}", subprotocols=[SIP]) as ws:
        assert ws.subprotocol == "sip"
        await ws.send(REGISTER.decode())
        await ws.send(MESSAGE)  # binary frames are accepted too
        got = [await within(node.received.get()) for _ in range(2)]
        assert [data for data, _, _ in got] == [REGISTER, MESSAGE]
        peer = got[0][1]
        assert (peer.transport, peer.port) == ("ws", ws.local_address[1])
        assert peer.flow is not None
        assert node.manager.send(OK, peer)
        assert await within(ws.recv()) == OK.decode()  # valid UTF-8 goes as text
        assert node.manager.send(b"\xff" + OK, peer)
        assert await within(ws.recv()) == b"\xff" + OK
        await ws.send("\r\n\r\n")  # RFC 5626 keep-alive inside a WebSocket message
        assert await within(ws.recv()) == "\r\n"
    assert await within(node.closed.get()) == peer.flow
    assert not node.manager.send(OK, Peer(transport="ws", host="127.0.0.1", port=peer.port))


@pytest.mark.parametrize("subprotocols", [None, [Subprotocol("chat")]])
async def test_ws_refuses_handshake_without_sip(
    make_node: NodeFactory, subprotocols: list[Subprotocol] | None
) -> None:
    node = await make_node("ws")
    local = node.local("ws")
    with pytest.raises(InvalidStatus) as refused:
        await within(connect(f"ws://{local.host}:{local.port}", subprotocols=subprotocols))
    assert refused.value.response.status_code == 400
    assert node.manager.stats().flows == 0


async def test_wss_round_trip(make_node: NodeFactory, tmp_path: Path) -> None:
    node = await make_node("wss")
    local = node.local("wss")
    context = client_context(cafile=tmp_path / "tls" / "cert.pem")
    async with connect(
        f"wss://{local.host}:{local.port}",
        subprotocols=[SIP],
        ssl=context,
    ) as ws:
        await ws.send(REGISTER.decode())
        data, peer, _ = await within(node.received.get())
        assert (data, peer.transport) == (REGISTER, "wss")
        assert node.manager.send(OK, peer)
        assert await within(ws.recv()) == OK.decode()


async def test_ws_connection_limit_refuses_with_503(make_node: NodeFactory) -> None:
    node = await make_node("ws", limits=TransportLimits(max_flows_per_ip=1))
    url = f"ws://{node.local('ws').host}:{node.local('ws').port}"
    async with connect(url, subprotocols=[SIP]):
        with pytest.raises(InvalidStatus) as refused:
            await within(connect(url, subprotocols=[SIP]))
        assert refused.value.response.status_code == 503


# IPv6


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_hosts_have_no_brackets(make_node: NodeFactory) -> None:
    node = await make_node("udp", "tcp", host="::1")
    udp, tcp = node.manager.bound()
    assert (udp.host, tcp.host) == ("::1", "::1")
    _reader, writer = await within(asyncio.open_connection("::1", tcp.port))
    writer.write(REGISTER)
    _, peer, _ = await within(node.received.get())
    assert (peer.transport, peer.host) == ("tcp", "::1")
    assert str(peer).startswith("tcp:[::1]:")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        sock.sendto(REGISTER, ("::1", udp.port))
        _, peer, _ = await within(node.received.get())
        assert (peer.host, peer.port) == ("::1", sock.getsockname()[1])
        assert node.manager.send(OK, peer)
        sock.settimeout(2)
        assert sock.recv(65535) == OK
    await close_writer(writer)


HAS_PROC_UDP = Path("/proc/net/udp").exists()


@pytest.mark.skipif(not HAS_PROC_UDP, reason="no /proc/net/udp on this system (Linux only)")
async def test_udp_backlog_reads_the_receive_queue() -> None:
    """A listener that is not read from fills its queue; the manager sees it (Linux)."""
    blocked = asyncio.Event()

    def slow(data: bytes, peer: Peer, local: LocalAddr) -> None:
        blocked.set()

    manager = TransportManager(slow)
    await manager.start([ListenerConfig(transport="udp", host="127.0.0.1", port=0)])
    try:
        port = manager.bound()[0].port
        assert manager.udp_backlog() == 0.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(200):  # sent while the loop is not running the reader
                s.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n" + b"x" * 1000, ("127.0.0.1", port))
            backlog = manager.udp_backlog()
        assert backlog is not None
        assert backlog > 0.0
        await asyncio.wait_for(blocked.wait(), 2)
    finally:
        await manager.close()
