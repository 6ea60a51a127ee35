"""Asyncio adapters moving raw SIP bytes: UDP, TCP, TLS, WS and WSS (see ``base``)."""

from __future__ import annotations

from sipwake.transport.base import (
    FlowClosedCallback,
    ListenerConfig,
    LocalAddr,
    ReceiveCallback,
    TransportLimits,
    TransportManager,
    TransportStats,
)

__all__ = [
    "FlowClosedCallback",
    "ListenerConfig",
    "LocalAddr",
    "ReceiveCallback",
    "TransportLimits",
    "TransportManager",
    "TransportStats",
]
