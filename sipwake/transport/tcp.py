"""TCP and TLS flows: a byte stream cut into SIP messages (RFC 3261 §18.3).

Each connection has its own ``StreamFramer``. A CRLFCRLF ping is answered
with a CRLF pong (RFC 5626 §4.4.1) and a lone CRLF pong is ignored. Bad
framing cannot be resynchronised, so it closes the connection.

Slow peers (``TransportLimits``): an accepted connection must bring its first
message within ``message_timeout``, and a message must be whole within
``message_timeout`` of the read that began it; the manager's sweep closes a
flow past its deadline. The deadline is set when a read leaves part of a
message buffered and no deadline runs (or a message just completed), and
cleared when a read leaves nothing buffered: no timer per byte, and nothing
at all for a message that arrives in one read. Only whole messages count as
activity for the idle timeout, so keep-alives alone do not keep a flow that
carries no binding open. An outgoing
flow (RFC 3261 §18.1.1: a request to an address without a connection) queues
what is sent until the connection is up, and is registered at once so the
responses to it come back on the same flow.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol, cast

from sipwake.errors import SipParseError
from sipwake.sip.framing import PING, StreamFramer
from sipwake.sip.peer import Peer
from sipwake.transport.common import FlowTable, ListenerConfig, LocalAddr
from sipwake.transport.sockstream import open_tcp_listener

__all__ = ["Listening", "StreamFlow", "connect_stream", "open_stream_server"]

logger = logging.getLogger("sipwake.transport")

_PONG = b"\r\n"


class StreamFlow(asyncio.Protocol):
    """One TCP or TLS connection, inbound (accepted) or outbound (opened by us)."""

    def __init__(
        self, table: FlowTable, local: LocalAddr, *, inbound: bool, peer: Peer | None = None
    ) -> None:
        self._table = table
        self.flow_id = table.next_id()
        self.local = local
        self.inbound = inbound
        self.peer = peer or Peer(transport=local.transport, host="", port=0, flow=self.flow_id)
        self.pinned = False
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()
        self.message_deadline: float | None = None
        self._heard = False
        """A whole message has arrived: from then on an empty buffer needs no deadline."""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._held: list[bytes] = []
        self._ended = False
        limits = table.limits
        self._framer = StreamFramer(max_header=limits.max_header, max_body=limits.max_message)

    @property
    def closing(self) -> bool:
        return self._ended or (self._transport is not None and self._transport.is_closing())

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._ended:  # closed while connecting
            self._transport.abort()
            return
        peername = transport.get_extra_info("peername")
        host, port = str(peername[0]), int(peername[1])
        if self.inbound:
            self.peer = Peer(
                transport=self.local.transport, host=host, port=port, flow=self.flow_id
            )
            if not self._table.admit(host):
                self._ended = True
                self._transport.abort()
                return
            self._table.add(self)
            timeout = self._table.limits.message_timeout
            if timeout is not None:  # the first message is due within the timeout
                self._table.expect(self, self._loop.time() + timeout)
        else:
            self.peer = Peer(transport=self.peer.transport, host=host, port=port, flow=self.flow_id)
            if not self.local.port:
                sockname = transport.get_extra_info("sockname")
                self.local = LocalAddr(
                    transport=self.local.transport, host=str(sockname[0]), port=int(sockname[1])
                )
            pending, self._pending = self._pending, []
            for data in pending:
                self._transport.write(data)
        self.last_activity = self._loop.time()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        framer = self._framer
        try:
            items = framer.feed(data)
        except SipParseError as exc:
            self._table.count_dropped()
            logger.warning("closing flow %s: bad framing: %s", self.peer, exc.reason)
            self.close()
            return
        delivered = False
        for item in items:
            if isinstance(item, bytes):
                delivered = True
                self._table.deliver(item, self.peer, self.local)
            elif item is PING and self._transport is not None:
                self._transport.write(_PONG)
            if self.closing:  # the driver closed the flow
                return
        if delivered:
            self._heard = True
            self.last_activity = self._loop.time()
        if framer.pending:
            # A message is under way: due within the timeout of the read that began it.
            if delivered or self.message_deadline is None:
                timeout = self._table.limits.message_timeout
                if timeout is not None:
                    self._table.expect(self, self._loop.time() + timeout)
        elif self.message_deadline is not None and self._heard:
            self._table.expect(self, None)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        if exc is not None:
            logger.debug("flow %s lost: %s", self.peer, exc)
        self._table.remove(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # Flow

    def send(self, data: bytes) -> bool:
        if self.closing:
            return False
        if self._transport is None:  # still connecting
            self._pending.append(data)
            return True
        held = self._table.held
        if held is not None:  # corked: written with the step's other messages
            if not self._held:
                held.append(self)
            self._held.append(data)
            return True
        self._write(data)
        return True

    def release(self) -> None:
        """Write what was held back while the table was corked, in one write."""
        held, self._held = self._held, []
        if held and not self.closing:
            self._write(held[0] if len(held) == 1 else b"".join(held))

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self.last_activity = self._loop.time()
        if self._transport.get_write_buffer_size() > self._table.limits.max_write_buffer:
            logger.warning("aborting flow %s: the peer does not read", self.peer)
            self.abort()

    def close(self) -> None:
        """Flush what is buffered, then close."""
        self.release()
        if self._transport is not None:
            self._transport.close()
        else:
            self.connect_failed()

    def abort(self) -> None:
        self._held = []
        if self._transport is not None:
            self._transport.abort()
        else:
            self.connect_failed()

    def connect_failed(self) -> None:
        self._ended = True
        pending, self._pending = self._pending, []
        self._table.remove(self)
        for data in pending:
            self._table.send_failed(data, self.peer)
        if not self.closed.done():
            self.closed.set_result(None)


class Listening(Protocol):
    """A TCP or TLS listener (``asyncio.Server`` or ``TcpListener``)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


async def open_stream_server(
    config: ListenerConfig, table: FlowTable, context: ssl.SSLContext | None
) -> tuple[Listening, LocalAddr]:
    """Listen for TCP (``context`` None) or TLS connections."""
    loop = asyncio.get_running_loop()
    holder: list[LocalAddr] = []
    if context is None:
        listener, local = await open_tcp_listener(
            config, lambda: StreamFlow(table, holder[0], inbound=True)
        )
        holder.append(local)
        return listener, local
    server = await loop.create_server(
        lambda: StreamFlow(table, holder[0], inbound=True),
        config.host,
        config.port,
        ssl=context,
        ssl_handshake_timeout=table.limits.tls_handshake_timeout,
    )
    host, port = server.sockets[0].getsockname()[:2]
    holder.append(LocalAddr(transport=config.transport, host=host, port=port))
    return server, holder[0]


def connect_stream(
    table: FlowTable,
    peer: Peer,
    local: LocalAddr,
    context: ssl.SSLContext | None,
    tasks: set[asyncio.Task[None]],
) -> StreamFlow:
    """Register an outbound flow to ``peer`` now and connect in the background."""
    flow = StreamFlow(table, local, inbound=False, peer=peer)
    flow.peer = Peer(transport=peer.transport, host=peer.host, port=peer.port, flow=flow.flow_id)
    table.add(flow)
    task = asyncio.get_running_loop().create_task(_connect(flow, peer, context, table))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return flow


async def _connect(
    flow: StreamFlow, peer: Peer, context: ssl.SSLContext | None, table: FlowTable
) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(table.limits.connect_timeout):
            await loop.create_connection(
                lambda: flow,
                peer.host,
                peer.port,
                ssl=context,
                server_hostname=peer.host if context else None,
            )
    except (OSError, TimeoutError) as exc:
        logger.warning("cannot connect to %s: %s", peer, str(exc) or type(exc).__name__)
        flow.connect_failed()
    except asyncio.CancelledError:
        flow.connect_failed()
        raise
