"""Plain TCP listeners served straight from the event loop's socket callbacks.

asyncio's ``create_server`` takes four passes of the loop from a connection's arrival
to its first read (accept and start a task; the task builds the transport; the
transport calls ``connection_made`` and adds its reader; the reader fires), and under
load each pass waits behind everything else that became ready. A phone woken by a
push connects and sends its REGISTER at once, and that REGISTER releases the held
call, so here the accept callback builds the flow, starts reading and reads what
already arrived, all in one pass. TLS listeners keep asyncio's transports (the
handshake takes round trips anyway).

``SocketTransport`` implements the part of ``asyncio.Transport`` that
``StreamFlow`` uses: ``write`` sends at once and buffers only what the kernel did
not take; ``close`` flushes first; ``connection_lost`` comes in a later pass, as
asyncio's transports do.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from sipwake.transport.common import ListenerConfig, LocalAddr

__all__ = ["SocketTransport", "TcpListener", "open_tcp_listener"]

logger = logging.getLogger("sipwake.transport")

#: Bytes asked of the kernel per read (asyncio reads the same).
READ_SIZE = 256 * 1024
#: Connections accepted per wake-up of the listening socket.
ACCEPT_BATCH = 64
#: Pending connections the kernel keeps for us (the listen backlog).
BACKLOG = 1024
#: Seconds the listener stops accepting after the process ran out of descriptors.
_ACCEPT_PAUSE = 1.0
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class SocketTransport(asyncio.Transport):
    """One accepted TCP connection, feeding a ``asyncio.Protocol``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        super().__init__(
            extra={"socket": sock, "peername": sock.getpeername(), "sockname": sock.getsockname()}
        )
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._closing = False
        self._reading = False
        self._lost = False

    def start(self) -> None:
        """``connection_made``, then read: what came with the connection is handled now."""
        self._protocol.connection_made(self)
        if self._closing:
            return
        self._loop.add_reader(self._fd, self._read_ready)
        self._reading = True
        self._read_ready()

    # -- reading -------------------------------------------------------------------
    def _read_ready(self) -> None:
        if self._closing:
            return
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        if data:
            self._protocol.data_received(data)
            return
        self._stop_reading()
        if not self._protocol.eof_received():
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    # -- writing -------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fail(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer += data

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._buffer[:sent]
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._lose(None)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def can_write_eof(self) -> bool:
        return False

    # -- ending --------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def close(self) -> None:
        """Stop reading; close once what is buffered has been sent."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._lose(None)

    def abort(self) -> None:
        self._fail(None)

    def _fail(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.debug("connection %s: %s", self.get_extra_info("peername"), exc)
        self._closing = True
        self._stop_reading()
        if self._buffer:
            self._buffer.clear()
            self._loop.remove_writer(self._fd)
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


class TcpListener:
    """Listening sockets whose connections go to ``SocketTransport``s."""

    def __init__(
        self,
        socks: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.sockets = socks
        self._factory = protocol_factory
        self._loop = asyncio.get_running_loop()
        self._closed = False
        for sock in socks:
            self._listen(sock)

    def _listen(self, sock: socket.socket) -> None:
        self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _accept_ready(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_FILES:
                    logger.warning("accept failed on %s: %s", sock.getsockname(), exc)
                    return
                # Out of descriptors: the socket stays readable, so stop watching it for
                # a while instead of spinning (the kernel keeps the connections queued).
                logger.error("cannot accept connections: %s; pausing %g s", exc, _ACCEPT_PAUSE)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(_ACCEPT_PAUSE, self._resume, sock)
                return
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                transport = SocketTransport(self._loop, conn, self._factory())
            except OSError as exc:  # the peer left before we got to it
                logger.debug("accepted connection gone: %s", exc)
                conn.close()
                continue
            transport.start()

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._listen(sock)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        return None


async def open_tcp_listener(
    config: ListenerConfig, protocol_factory: Callable[[], asyncio.Protocol]
) -> tuple[TcpListener, LocalAddr]:
    """Bind and listen on every address ``config.host`` names (as ``create_server``)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on tcp {config.host}:{config.port}: {exc.strerror}"
                ) from None
            sock.setblocking(False)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(f"cannot listen on tcp {config.host}:{config.port}: no address")
    host, port = socks[0].getsockname()[:2]
    return TcpListener(socks, protocol_factory), LocalAddr(transport="tcp", host=host, port=port)
