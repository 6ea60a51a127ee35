"""SIP over WebSocket listener, ``ws`` and ``wss`` (RFC 7118).

The handshake must offer the ``sip`` subprotocol (RFC 7118 §4.1); without it
the ``websockets`` server refuses the upgrade with HTTP 400. Each WebSocket
message, text or binary, is one SIP message (§5.1); we send text when the
bytes are valid UTF-8, else binary. WebSocket ping/pong is left to the
library; an RFC 5626 CRLFCRLF ping in a message of its own gets a CRLF pong.
Slow peers: the upgrade has ``ws_handshake_timeout`` (and a WSS handshake
``tls_handshake_timeout``), the first message ``message_timeout``; a frame
trickled byte by byte cannot answer the library's keep-alive pings (20 s).
The server only accepts connections, so WS flows can only be reused, not opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from sipwake.sip.peer import Peer
from sipwake.transport.common import FlowTable, ListenerConfig, LocalAddr

__all__ = ["WsFlow", "open_ws_server"]

logger = logging.getLogger("sipwake.transport")

SIP_SUBPROTOCOL = Subprotocol("sip")
_PING = b"\r\n\r\n"
_PONG = b"\r\n"


class WsFlow:
    """One accepted WebSocket connection; a writer task keeps sends in order."""

    def __init__(self, table: FlowTable, connection: ServerConnection, local: LocalAddr) -> None:
        self._table = table
        self._connection = connection
        self.flow_id = table.next_id()
        self.local = local
        self.inbound = True
        self.pinned = False
        self.last_activity = asyncio.get_running_loop().time()
        self.message_deadline: float | None = None
        """Until the first message: websockets reads whole messages itself, and its
        keep-alive pings (unanswerable in the middle of a frame) bound a trickled one."""
        host, port = connection.remote_address[:2]
        self.peer = Peer(
            transport=local.transport, host=str(host), port=int(port), flow=self.flow_id
        )
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._ended = False

    @property
    def closing(self) -> bool:
        return self._ended

    async def run(self) -> None:
        """Read messages until the connection ends (the ``websockets`` handler body)."""
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            async for message in self._connection:
                self._received(message.encode() if isinstance(message, str) else message)
        except ConnectionClosed:
            pass
        finally:
            self._ended = True
            self._table.remove(self)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _received(self, data: bytes) -> None:
        if data == _PING:
            self._enqueue(_PONG)
        elif data.strip(b"\r\n"):  # keep-alives are no activity (``idle_timeout``)
            self.last_activity = asyncio.get_running_loop().time()
            if self.message_deadline is not None:  # the first message came in time
                self._table.expect(self, None)
            self._table.deliver(data, self.peer, self.local)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while (data := await self._queue.get()) is not None:
                self._queued -= len(data)
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    await self._connection.send(data)
                else:
                    await self._connection.send(text)
            await self._connection.close()

    # Flow

    def send(self, data: bytes) -> bool:
        if not self._enqueue(data):
            return False
        self.last_activity = asyncio.get_running_loop().time()
        return True

    def _enqueue(self, data: bytes) -> bool:
        if self._ended:
            return False
        self._queued += len(data)
        if self._queued > self._table.limits.max_write_buffer:
            logger.warning("aborting flow %s: the peer does not read", self.peer)
            self.abort()
            return False
        self._queue.put_nowait(data)
        return True

    def close(self) -> None:
        """Close after what is queued has been sent."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)

    def abort(self) -> None:
        self._ended = True
        self._connection.transport.abort()


async def open_ws_server(
    config: ListenerConfig, table: FlowTable, context: ssl.SSLContext | None
) -> tuple[Server, LocalAddr]:
    """Listen for ``ws`` (``context`` None) or ``wss`` connections."""
    holder: list[LocalAddr] = []

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        host = str(connection.remote_address[0])
        if table.admit(host):
            return None
        response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections\n")
        response.headers["Retry-After"] = "30"
        return response

    async def handler(connection: ServerConnection) -> None:
        flow = WsFlow(table, connection, holder[0])
        if not table.admit(flow.peer.host):  # limits may have filled during the handshake
            await connection.close(1013, "too many connections")
            return
        table.add(flow)
        timeout = table.limits.message_timeout
        if timeout is not None:  # the first message is due within it
            table.expect(flow, asyncio.get_running_loop().time() + timeout)
        await flow.run()

    limits = table.limits
    server = await serve(
        handler,
        config.host,
        config.port,
        subprotocols=[SIP_SUBPROTOCOL],
        process_request=process_request,
        ssl=context,
        max_size=limits.max_message,
        open_timeout=limits.ws_handshake_timeout,
        close_timeout=limits.close_timeout,
        compression=None,
        ssl_handshake_timeout=limits.tls_handshake_timeout if context else None,
    )
    host, port = server.sockets[0].getsockname()[:2]
    holder.append(LocalAddr(transport=config.transport, host=host, port=port))
    return server, holder[0]
