"""Client state per binding: foreground, suspended or offline (DESIGN.md).

* foreground: a live flow — a TCP/TLS/WS connection still open; a UDP binding
  with push parameters refreshed within ``udp_foreground_s``; a UDP binding
  without push parameters that answers (``sipwake.proxy.qualify``) — requests go
  to it directly;
* suspended: a valid binding with push parameters but no live flow — requests
  need a push first;
* offline: a binding without push parameters whose flow is gone, or (UDP) that
  did not answer its last OPTIONS ping and showed no sign of life since.

The state is derived, never stored: it depends on the flow table and the pings'
outcomes (which the node keeps) and on the time since the last REGISTER.
"""

from __future__ import annotations

import math
from typing import Literal

from sipwake.registrar.bindings import Binding

__all__ = ["ClientState", "client_state", "foreground_ends_at"]

ClientState = Literal["foreground", "suspended", "offline"]


def client_state(
    binding: Binding,
    *,
    flow_open: bool,
    now: float,
    udp_foreground_s: float,
    answering: bool = True,
) -> ClientState:
    """The state of ``binding``; ``flow_open`` tells whether the connection it registered
    over is still up (ignored for UDP, which has no connection); ``answering`` is False
    for a UDP binding without push parameters whose last OPTIONS ping went unanswered
    and that showed no sign of life since (``sipwake.proxy.qualify``)."""
    pushable = binding.push is not None
    if binding.source.flow is None and binding.source.reliable and pushable:
        # Registered over a connection but restored from the store after a restart: that
        # connection died with the old process, so the device needs a push.
        return "suspended"
    if binding.source.flow is None:
        # UDP: reachable as long as the NAT binding and the app are alive, which we only
        # know from recent traffic: a REGISTER for one that can be pushed, any traffic
        # or an answer to a ping for one that cannot.
        if not pushable:
            return "foreground" if answering else "offline"
        if now - binding.registered_at <= udp_foreground_s:
            return "foreground"
        return "suspended"
    if flow_open:
        return "foreground"
    return "suspended" if pushable else "offline"


def foreground_ends_at(binding: Binding, *, now: float, udp_foreground_s: float) -> float | None:
    """When ``binding``, foreground at ``now`` by recent UDP traffic alone, turns
    suspended if nothing else happens (no REGISTER, no expiry): the first time
    ``client_state`` says so. None when time alone does not change its state."""
    if binding.push is None or binding.source.flow is not None or binding.source.reliable:
        return None
    registered = binding.registered_at
    at = registered + udp_foreground_s
    if now - registered > udp_foreground_s or not math.isfinite(at):
        return None
    while at - registered <= udp_foreground_s:  # the window includes its last instant
        at = math.nextafter(at, math.inf)
    return at
