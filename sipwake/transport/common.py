"""Values and bookkeeping shared by the transport adapters.

The driver imports these names from ``sipwake.transport.base``; the adapters
(``udp``, ``tcp``, ``ws``) import them from here so that ``base`` can import
the adapters without a cycle.

A *flow* (RFC 5626 §3.1) is one connection — TCP, TLS, WS or WSS — named by a
unique ``int`` carried in ``Peer.flow``. ``FlowTable`` keeps the open flows of
one ``TransportManager``: ids, the per-source and total connection limits, the
address index used to reuse a connection (RFC 3261 §18.1.1), counters, and the
two callbacks into the driver.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from sipwake.sip.peer import Peer

__all__ = [
    "FlowClosedCallback",
    "FlowTable",
    "KeepaliveCallback",
    "ListenerConfig",
    "LocalAddr",
    "ReceiveCallback",
    "TransportLimits",
    "TransportName",
    "TransportStats",
]

logger = logging.getLogger("sipwake.transport")

TransportName = Literal["udp", "tcp", "tls", "ws", "wss"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAddr:
    """The listener a message arrived on (or the local end of an outgoing flow)."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    """One socket to listen on; ``port=0`` binds an ephemeral port.

    ``cert``/``key`` are used by ``tls`` and ``wss``; without them a self-signed
    certificate is generated (``sipwake.transport.tls.ensure_self_signed``).
    """

    transport: TransportName
    host: str
    port: int = 0
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportLimits:
    """Resource limits; sizes in bytes, times in seconds."""

    max_message: int = 65535  # UDP datagram, stream body, WebSocket message
    max_header: int = 16384  # header section on a stream
    idle_timeout: float | None = 120.0
    """Close a flow that carries no binding (is not pinned) after this long without a
    whole SIP message either way; keep-alives do not count (Kamailio's
    ``tcp_connection_lifetime``, 120 s). A pinned flow stays open while it is pinned."""
    message_timeout: float | None = 10.0
    """A message on a TCP or TLS connection must be whole this long after its first byte
    arrived, and an accepted connection must bring its first message in this time (a
    slowloris trickling a header byte by byte is closed; Kamailio's
    ``tcp_msg_read_timeout`` and ``tcp_msg_data_timeout``)."""
    tls_handshake_timeout: float = 10.0  # an accepted TLS (or WSS) handshake
    ws_handshake_timeout: float = 10.0  # the WebSocket upgrade, once the connection is up
    max_flows: int = 10000
    max_flows_per_ip: int = 100  # inbound connections from one source address
    connect_timeout: float = 10.0
    max_write_buffer: int = 1 << 20  # a peer that stops reading loses its flow
    close_timeout: float = 2.0  # graceful close before connections are aborted


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportStats:
    flows: int
    flows_opened: int
    flows_rejected: int
    messages_received: int
    messages_sent: int
    messages_dropped: int
    bytes_received: int
    bytes_sent: int


ReceiveCallback = Callable[[bytes, Peer, LocalAddr], None]
"""Called with one whole SIP message, where it came from and where it arrived."""

FlowClosedCallback = Callable[[int], None]
"""Called with the id of a flow that ended (not while the manager itself closes)."""

KeepaliveCallback = Callable[[Peer, LocalAddr], None]
"""Called when a keep-alive that is not a SIP message (CRLF, a STUN binding request,
RFC 5626 §4.4.1) arrived from a peer over UDP."""

SendFailedCallback = Callable[[bytes, Peer], None]
"""Called with a message that was accepted for sending but never went out (its
connection could not be opened), and where it was going."""


class Flow(Protocol):
    """What the table needs of a connection adapter."""

    flow_id: int
    peer: Peer
    local: LocalAddr
    inbound: bool
    pinned: bool
    last_activity: float
    message_deadline: float | None

    def send(self, data: bytes) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    @property
    def closing(self) -> bool: ...


class Holding(Protocol):
    """A flow that held messages back while the table was corked."""

    def release(self) -> None: ...


class FlowTable:
    """The open flows of one manager, their limits and counters."""

    def __init__(
        self,
        limits: TransportLimits,
        receive: ReceiveCallback,
        on_flow_closed: FlowClosedCallback | None,
        on_send_failed: SendFailedCallback | None = None,
    ) -> None:
        self.limits = limits
        self._receive = receive
        self._on_flow_closed = on_flow_closed
        self._on_send_failed = on_send_failed
        self._on_keepalive: KeepaliveCallback | None = None
        self._ids = itertools.count(1)
        self._flows: dict[int, Flow] = {}
        self._by_address: dict[tuple[str, str, int], int] = {}
        self._keys: dict[int, tuple[str, str, int]] = {}
        self._per_ip: dict[str, int] = {}
        self._reading: dict[int, Flow] = {}
        """Flows with a message deadline: a message under way, or none heard yet."""
        self.closing = False
        self.held: list[Holding] | None = None
        """While corked: the flows holding messages back (in the order they first did)."""
        self.flows_opened = 0
        self.flows_rejected = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.bytes_received = 0
        self.bytes_sent = 0

    def next_id(self) -> int:
        return next(self._ids)

    def cork(self) -> None:
        """Hold back what is sent over byte streams until ``uncork``: the messages one
        step of the driver sends over one connection go out in one write."""
        if self.held is None:
            self.held = []

    def uncork(self) -> None:
        """Write what each flow held back, one write per flow."""
        held, self.held = self.held, None
        for flow in held or ():
            flow.release()

    def admit(self, host: str, *, inbound: bool = True) -> bool:
        """Whether one more connection (from ``host`` if inbound) fits the limits."""
        if self.closing:
            return False
        if len(self._flows) >= self.limits.max_flows:
            reason = f"{self.limits.max_flows} flows open"
        elif inbound and self._per_ip.get(host, 0) >= self.limits.max_flows_per_ip:
            reason = f"{self.limits.max_flows_per_ip} flows open from {host}"
        else:
            return True
        self.flows_rejected += 1
        logger.warning("connection refused: %s", reason)
        return False

    def add(self, flow: Flow, *, key: tuple[str, str, int] | None = None) -> None:
        """Register ``flow``; ``key`` (transport, host, port) defaults to its peer."""
        peer = flow.peer
        self._flows[flow.flow_id] = flow
        key = key or (peer.transport, peer.host, peer.port)
        self._by_address[key] = flow.flow_id
        self._keys[flow.flow_id] = key
        if flow.inbound:
            self._per_ip[peer.host] = self._per_ip.get(peer.host, 0) + 1
        self.flows_opened += 1
        logger.debug("flow %s opened (%s)", peer, "inbound" if flow.inbound else "outbound")

    def remove(self, flow: Flow) -> None:
        """Forget a flow whose connection ended and tell the driver (idempotent)."""
        if self._flows.pop(flow.flow_id, None) is None:
            return
        self._reading.pop(flow.flow_id, None)
        key = self._keys.pop(flow.flow_id)
        if self._by_address.get(key) == flow.flow_id:
            del self._by_address[key]
        if flow.inbound:
            left = self._per_ip.get(flow.peer.host, 1) - 1
            if left:
                self._per_ip[flow.peer.host] = left
            else:
                self._per_ip.pop(flow.peer.host, None)
        logger.debug("flow %s closed", flow.peer)
        if self._on_flow_closed is not None and not self.closing:
            try:
                self._on_flow_closed(flow.flow_id)
            except Exception:
                logger.exception("on_flow_closed(%d) failed", flow.flow_id)

    def send_failed(self, data: bytes, peer: Peer) -> None:
        """``data`` queued for ``peer`` will never be sent: tell the driver."""
        if self._on_send_failed is not None and not self.closing:
            try:
                self._on_send_failed(data, peer)
            except Exception:
                logger.exception("on_send_failed(%s) failed", peer)

    def get(self, flow_id: int) -> Flow | None:
        return self._flows.get(flow_id)

    def find(self, transport: str, host: str, port: int) -> Flow | None:
        flow_id = self._by_address.get((transport, host, port))
        return None if flow_id is None else self._flows.get(flow_id)

    def all(self) -> list[Flow]:
        return list(self._flows.values())

    def __len__(self) -> int:
        return len(self._flows)

    def idle(self, now: float) -> list[Flow]:
        """Flows without a whole message either way for ``idle_timeout`` seconds, pinned
        flows (those carrying a binding) excepted."""
        timeout = self.limits.idle_timeout
        if timeout is None:
            return []
        return [
            f
            for f in self._flows.values()
            if not f.pinned and not f.closing and now - f.last_activity > timeout
        ]

    def expect(self, flow: Flow, deadline: float | None) -> None:
        """Set (or with None clear) the time by which ``flow`` must bring a whole message."""
        flow.message_deadline = deadline
        if deadline is None:
            self._reading.pop(flow.flow_id, None)
        elif flow.flow_id in self._flows:
            self._reading[flow.flow_id] = flow

    def late(self, now: float) -> list[Flow]:
        """Flows whose message deadline has passed (not many: only those mid-message)."""
        return [
            f
            for f in self._reading.values()
            if not f.closing and f.message_deadline is not None and f.message_deadline <= now
        ]

    def deliver(self, data: bytes, peer: Peer, local: LocalAddr) -> None:
        """Hand one message to the driver; its failures are logged, never raised here."""
        self.messages_received += 1
        self.bytes_received += len(data)
        try:
            self._receive(data, peer, local)
        except Exception:
            logger.exception("receive callback failed for a message from %s", peer)

    def receive_with(self, receive: ReceiveCallback) -> None:
        self._receive = receive

    def keepalives_to(self, on_keepalive: KeepaliveCallback | None) -> None:
        self._on_keepalive = on_keepalive

    def keepalive(self, peer: Peer, local: LocalAddr) -> None:
        """Tell the driver a keep-alive came from ``peer``; failures are logged."""
        if self._on_keepalive is None:
            return
        try:
            self._on_keepalive(peer, local)
        except Exception:
            logger.exception("keep-alive callback failed for %s", peer)

    def count_sent(self, size: int) -> None:
        self.messages_sent += 1
        self.bytes_sent += size

    def count_dropped(self) -> None:
        self.messages_dropped += 1

    def stats(self) -> TransportStats:
        return TransportStats(
            flows=len(self._flows),
            flows_opened=self.flows_opened,
            flows_rejected=self.flows_rejected,
            messages_received=self.messages_received,
            messages_sent=self.messages_sent,
            messages_dropped=self.messages_dropped,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
        )
