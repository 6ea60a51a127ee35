"""The transport interface the driver uses: raw SIP bytes in and out.

``TransportManager`` owns the listeners (UDP, TCP, TLS, WS, WSS) and the open
flows. Every whole SIP message that arrives goes to one ``ReceiveCallback``
with the ``Peer`` it came from and the ``LocalAddr`` of the listener it
arrived on; nothing here parses SIP beyond framing a stream. ``send`` never
blocks and never raises for a peer's sake::

    manager = TransportManager(driver.on_bytes, on_flow_closed=registrar_flow_closed)
    await manager.start([ListenerConfig(transport="udp", host="127.0.0.1", port=5060)])
    manager.send(data, peer)      # False when the flow is gone (RFC 5626 §5.3: 430)
    await manager.close()

Where a message goes (RFC 3261 §18.1.1, §18.2.2; RFC 5626 §5.3):

- ``peer.flow`` set: over that connection, or nowhere if it has closed.
- UDP: ``sendto`` from the listener socket of the peer's address family.
- TCP/TLS without a flow: over an open connection to that address, else a
  new outgoing connection (data queued while it connects), registered as a
  flow so that responses come back on it.
- WS/WSS without a flow: over an open connection to that address, else
  nowhere (only browsers open WebSocket connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
from pathlib import Path

from websockets.asyncio.server import Server as WsServer

from sipwake.sip.peer import Peer
from sipwake.transport import tls
from sipwake.transport.common import (
    FlowClosedCallback,
    FlowTable,
    KeepaliveCallback,
    ListenerConfig,
    LocalAddr,
    ReceiveCallback,
    SendFailedCallback,
    TransportLimits,
    TransportName,
    TransportStats,
)
from sipwake.transport.tcp import Listening, StreamFlow, connect_stream, open_stream_server
from sipwake.transport.udp import UdpEndpoint, open_udp
from sipwake.transport.ws import open_ws_server

__all__ = [
    "FlowClosedCallback",
    "ListenerConfig",
    "LocalAddr",
    "ReceiveCallback",
    "SendFailedCallback",
    "TransportLimits",
    "TransportManager",
    "TransportName",
    "TransportStats",
]

logger = logging.getLogger("sipwake.transport")


class TransportManager:
    """Listeners and flows of one sipwake node.

    ``tls_dir`` receives a generated self-signed certificate when a ``tls`` or
    ``wss`` listener has no ``cert``/``key``. ``tls_client`` is the context for
    outgoing TLS flows (default: verify against the system store).
    """

    def __init__(
        self,
        receive: ReceiveCallback,
        *,
        on_flow_closed: FlowClosedCallback | None = None,
        on_send_failed: SendFailedCallback | None = None,
        limits: TransportLimits | None = None,
        tls_dir: Path = Path("sipwake-tls"),
        tls_client: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits or TransportLimits()
        self._table = FlowTable(self.limits, receive, on_flow_closed, on_send_failed)
        self._tls_dir = tls_dir
        self._tls_client = tls_client
        self._server_contexts: dict[tuple[Path, Path], ssl.SSLContext] = {}
        self._bound: list[LocalAddr] = []
        self._udp: list[UdpEndpoint] = []
        self._udp_routes: dict[str, tuple[UdpEndpoint, str]] = {}
        """Peer host -> the listener a datagram to it leaves from, and the bare address."""
        self._stream_servers: list[Listening] = []
        self._ws_servers: list[WsServer] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, listeners: list[ListenerConfig]) -> None:
        """Bind every listener; on a failure, close those already bound and re-raise."""
        try:
            for config in listeners:
                try:
                    self._bound.append(await self._listen(config))
                except OSError as exc:
                    # Name the listener: "address already in use" alone does not say which.
                    host = f"[{config.host}]" if ":" in config.host else config.host
                    raise OSError(
                        exc.errno,
                        f"cannot listen on {config.transport}:{host}:{config.port}: "
                        f"{exc.strerror or exc} (another SIP server there? --listen "
                        f"{config.transport}:{host}:PORT listens elsewhere)",
                    ) from exc
                logger.info("listening on %s", self._bound[-1])
        except BaseException:
            await self.close()
            raise
        if self.limits.idle_timeout is not None or self.limits.message_timeout is not None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _listen(self, config: ListenerConfig) -> LocalAddr:
        match config.transport:
            case "udp":
                endpoint = await open_udp(config, self._table)
                self._udp.append(endpoint)
                self._udp_routes.clear()
                return endpoint.local
            case "tcp" | "tls":
                context = self._server_context(config) if config.transport == "tls" else None
                server, local = await open_stream_server(config, self._table, context)
                self._stream_servers.append(server)
                return local
            case "ws" | "wss":
                context = self._server_context(config) if config.transport == "wss" else None
                ws_server, local = await open_ws_server(config, self._table, context)
                self._ws_servers.append(ws_server)
                return local
            case other:
                raise ValueError(f"listener transport: expected udp/tcp/tls/ws/wss, got {other!r}")

    def _server_context(self, config: ListenerConfig) -> ssl.SSLContext:
        if config.cert is not None and config.key is not None:
            cert, key = config.cert, config.key
        else:
            cert, key = tls.ensure_self_signed(self._tls_dir, [config.host])
        if (cert, key) not in self._server_contexts:
            self._server_contexts[cert, key] = tls.server_context(cert, key)
        return self._server_contexts[cert, key]

    def bound(self) -> list[LocalAddr]:
        """The listeners' actual addresses, in the order they were configured."""
        return list(self._bound)

    def send(self, data: bytes, peer: Peer, *, local: LocalAddr | None = None) -> bool:
        """Queue ``data`` for ``peer``; False when there is no way to it (see module doc).

        ``local`` picks the UDP listener to send from (RFC 3581 §4: a response
        leaves from where its request arrived); by default the first of the
        peer's address family.
        """
        if self._closed:
            return False
        if peer.flow is not None:
            flow = self._table.get(peer.flow)
            if flow is None or flow.closing:
                logger.debug("flow %s is gone", peer)
                return False
            return self._sent(flow.send(data), data)
        if peer.transport == "udp":
            return self._sent(self._send_udp(data, peer, local), data)
        flow = self._table.find(peer.transport, peer.host, peer.port)
        if flow is not None and not flow.closing:
            return self._sent(flow.send(data), data)
        if peer.transport in ("tcp", "tls"):
            if not self._table.admit(peer.host, inbound=False):
                return False
            context = self._client_context() if peer.transport == "tls" else None
            local = self._local_for(peer)
            flow = connect_stream(self._table, peer, local, context, self._connecting)
            return self._sent(flow.send(data), data)
        logger.debug("no flow to %s", peer)
        return False

    def cork(self) -> None:
        """Until ``uncork``, messages to one TCP or TLS connection are gathered and written
        together (a REGISTER's 200 OK and the held INVITE it releases: one segment)."""
        self._table.cork()

    def uncork(self) -> None:
        self._table.uncork()

    def _sent(self, ok: bool, data: bytes) -> bool:
        if ok:
            self._table.count_sent(len(data))
        return ok

    def _send_udp(self, data: bytes, peer: Peer, local: LocalAddr | None) -> bool:
        if local is None:  # the common case, remembered per host (the listeners are fixed)
            route = self._udp_routes.get(peer.host)
            if route is None:
                route = self._udp_route(peer, None)
                if route is None:
                    return False
                if len(self._udp_routes) >= _UDP_ROUTES_KEPT:
                    self._udp_routes.clear()
                self._udp_routes[peer.host] = route
        else:
            route = self._udp_route(peer, local)
            if route is None:
                return False
        endpoint, host = route
        return endpoint.send(data, host, peer.port)

    def _udp_route(self, peer: Peer, local: LocalAddr | None) -> tuple[UdpEndpoint, str] | None:
        """The listener to send to ``peer`` from (``local`` if it fits, else the first of the
        peer's address family) and the bare IP address; None, with a warning, if none fits."""
        host = peer.host.strip("[]")
        version = _ip_version(host)
        if version is None:
            logger.warning("UDP to %s: expected an IP address, resolve the host first", peer)
            return None
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        endpoints = [e for e in self._udp if e.family == family]
        endpoints.sort(key=lambda e: e.local != local)  # the requested listener first
        if endpoints:
            return endpoints[0], host
        logger.warning("UDP to %s: no IPv%d listener", peer, version)
        return None

    def _client_context(self) -> ssl.SSLContext:
        if self._tls_client is None:
            self._tls_client = tls.client_context()
        return self._tls_client

    def _local_for(self, peer: Peer) -> LocalAddr:
        """The listener to name as the local end of an outgoing flow."""
        same = [local for local in self._bound if local.transport == peer.transport]
        v6 = ":" in peer.host
        for local in same:
            if (":" in local.host) == v6:
                return local
        return same[0] if same else LocalAddr(transport=peer.transport, host="", port=0)

    def udp_backlog(self) -> float | None:
        """The fullest UDP receive queue (0..1), or None where it cannot be read."""
        readings = [b for b in (e.backlog() for e in self._udp) if b is not None]
        return max(readings, default=None)

    def flow_alive(self, flow_id: int) -> bool:
        flow = self._table.get(flow_id)
        return flow is not None and not flow.closing

    def pin_flow(self, flow_id: int, pinned: bool = True) -> bool:
        """Exempt a flow from the idle timeout while it carries a binding (the driver pins
        a flow a REGISTER was accepted over and unpins it when its last binding goes)."""
        flow = self._table.get(flow_id)
        if flow is None:
            return False
        flow.pinned = pinned
        return True

    def close_flow(self, flow_id: int) -> bool:
        """Close a flow gracefully; ``on_flow_closed`` follows when it has ended."""
        flow = self._table.get(flow_id)
        if flow is None:
            return False
        flow.close()
        return True

    def stats(self) -> TransportStats:
        return self._table.stats()

    def keepalives_to(self, on_keepalive: KeepaliveCallback | None) -> None:
        """Where keep-alives that are not SIP messages (CRLF, STUN over UDP) are reported."""
        self._table.keepalives_to(on_keepalive)

    def receive_with(self, receive: ReceiveCallback) -> None:
        """Messages received from now on go to ``receive`` (the driver's ``on_bytes``, once
        the node is ready: a compiled call per message, no interpreted closure between)."""
        self._table.receive_with(receive)

    async def _sweep(self) -> None:
        """Close flows past their message deadline (checked every tenth of the timeout, at
        most a second apart) and, less often, flows idle for longer than the idle timeout."""
        loop = asyncio.get_running_loop()
        idle_timeout = self.limits.idle_timeout
        message_timeout = self.limits.message_timeout
        period, idle_period = _sweep_periods(message_timeout, idle_timeout)
        next_idle = loop.time() + idle_period
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for flow in self._table.late(now):
                logger.info(
                    "closing flow %s: no whole message within %g s", flow.peer, message_timeout
                )
                flow.close()
            if idle_timeout is not None and now >= next_idle:
                next_idle = now + idle_period
                for flow in self._table.idle(now):
                    logger.info("closing flow %s: idle for over %g s", flow.peer, idle_timeout)
                    flow.close()

    async def close(self) -> None:
        """Stop listening, close flows gracefully (abort after ``close_timeout``)."""
        if self._closed:
            return
        self._closed = True
        self._table.closing = True  # no more admissions, no on_flow_closed calls
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._stream_servers:
            server.close()
        for ws_server in self._ws_servers:
            ws_server.close()
        stream_flows = [f for f in self._table.all() if isinstance(f, StreamFlow)]
        for flow in stream_flows:
            flow.close()
        for task in list(self._connecting):
            task.cancel()
        waits = [
            *(flow.closed for flow in stream_flows),
            *(ws_server.wait_closed() for ws_server in self._ws_servers),
            *self._connecting,
        ]
        if waits:
            try:
                async with asyncio.timeout(self.limits.close_timeout):
                    await asyncio.gather(*waits, return_exceptions=True)
            except TimeoutError:
                logger.warning("%d flows did not close in time; aborting", len(self._table))
                for stuck in self._table.all():
                    stuck.abort()
                await asyncio.sleep(0)
        for endpoint in self._udp:
            endpoint.close()
        for server in self._stream_servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.close_timeout):
                    await server.wait_closed()
        if self._sweeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        logger.info("transports closed")


def _sweep_periods(
    message_timeout: float | None, idle_timeout: float | None
) -> tuple[float, float]:
    """How often the sweep looks for late messages, and for idle flows (seconds)."""
    idle_period = 30.0 if idle_timeout is None else max(0.02, min(idle_timeout / 4, 30.0))
    if message_timeout is None:
        return idle_period, idle_period
    return max(0.02, min(message_timeout / 10, 1.0, idle_period)), idle_period


#: Peer hosts whose UDP route is remembered (then the memory starts afresh).
_UDP_ROUTES_KEPT = 4096

_IPV4_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


@functools.lru_cache(maxsize=1024)
def _ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal (remembered: this runs for every datagram sent)."""
    if _IPV4_RE.fullmatch(host) and all(int(part) < 256 for part in host.split(".")):
        return 4
    try:
        return ipaddress.ip_address(host.partition("%")[0]).version
    except ValueError:
        return None
