"""Where a message came from or goes to: a transport, an address and maybe a flow.

``Peer`` is a plain value handed between the sans-IO cores and the transport
adapters. ``flow`` names a connection (TCP/TLS/WS) so that responses and
requests to a registered client go back over the connection it opened
(RFC 3261 §18.2.2, RFC 5626).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipwake.sip.headers import Via

if TYPE_CHECKING:
    from sipwake.sip.message import Request

__all__ = ["RELIABLE_TRANSPORTS", "Peer", "mark_received", "response_peer"]

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss", "sctp"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """A transport address: ``transport`` is lower case (udp, tcp, tls, ws, wss)."""

    transport: str
    host: str
    port: int
    flow: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        flow = f"#{self.flow}" if self.flow is not None else ""
        return f"{self.transport}:{host}:{self.port}{flow}"

    def __eq__(self, other: object) -> bool:  # the generated one, compiled with the core
        if not isinstance(other, Peer):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host == other.host
            and self.port == other.port
            and self.flow == other.flow
        )

    def __hash__(self) -> int:  # the generated one's value (a written __eq__ drops it)
        return hash((self.transport, self.host, self.port, self.flow))


def response_peer(via: Via, source: Peer) -> Peer:
    """Where to send a response to a request that arrived from ``source`` (RFC 3261 §18.2.2,
    RFC 3581 §4): reliable transports answer over the same flow; UDP answers to
    ``received``/``rport`` (the packet's source), or ``maddr``, or the sent-by."""
    if source.reliable:
        return source
    maddr = via.maddr
    if maddr:
        return Peer(transport="udp", host=maddr.strip("[]"), port=via.port or 5060)
    if via.wants_rport:
        if source.transport == "udp" and source.flow is None:
            return source  # the value built below
        return Peer(transport="udp", host=source.host, port=source.port)
    return Peer(transport="udp", host=source.host, port=via.port or 5060)


def mark_received(request: Request, source: Peer) -> None:
    """RFC 3261 §18.2.1 and RFC 3581 §4: ``received`` (always) and ``rport`` (when asked)
    on the top Via of a request that arrived from ``source``."""
    request.replace_top_via(request.top_via.received_from(source.host, source.port))
