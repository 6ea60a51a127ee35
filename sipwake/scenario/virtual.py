"""The virtual world a replay runs in: a clock with its event queue, an in-memory
network, and a sandbox push service.

* ``VirtualClock``: scenario time and the events due, ordered by (time, order of
  scheduling) — two runs of one scenario take the same steps in the same order.
* ``FakeNetwork``: who listens where, which connections (flows) are open, and whether a
  message can reach its destination (a suspended phone takes nothing; a closed
  connection loses what is sent over it; a new connection to a phone that is not in the
  foreground is refused). Delivery itself is an event on the clock, ``delay_s`` later.
* ``PushSandbox``: answers pushes as the real service would, ``latency_s`` later:
  delivered, or the failure a timeline step injects (``push_fails``), classified by the
  same code that reads real APNs and Web Push answers.

Nothing here reads a real clock or opens a socket.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from sipwake.push.base import PushOutcome, PushRequest, PushStatus
from sipwake.push.payload import classify_apns_response
from sipwake.push.webpush import classify_webpush_response
from sipwake.scenario.agents import HOST, UserAgent
from sipwake.sip.peer import Peer

__all__ = ["FakeNetwork", "FaultWindow", "PushSandbox", "Route", "VirtualClock"]

E = TypeVar("E")


class VirtualClock(Generic[E]):
    """Scenario time and a queue of events, each due at a time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, E]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at: float, event: E) -> None:
        """Queue ``event`` at ``at`` (never before now; kept to the nanosecond, so sums of
        delays read as written: 1.002 + 0.05 is 1.052)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(round(at, 9), self.now), self._seq, event))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> E:
        """The earliest event; the clock moves to its time."""
        at, _, event = heapq.heappop(self._heap)
        self.now = max(self.now, at)
        return event

    def advance(self, to: float) -> None:
        self.now = max(self.now, to)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where a message from the server goes: the agent and the source it sees (``agent``
    None: lost, ``lost`` says why)."""

    agent: UserAgent | None
    source: Peer | None = None
    lost: str = ""
    name: str = ""
    """Who the message was for (the ladder's column), delivered or not."""


#: The server's listening ports as the agents address it.
SERVER_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


class FakeNetwork:
    """In-memory transport between the server and the agents (see the module text)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._agents: dict[int, UserAgent] = {}
        self._flows: dict[int, UserAgent] = {}
        self._next_flow = 0

    def attach(self, agent: UserAgent) -> None:
        if agent.port in self._agents:
            raise ValueError(f"port {agent.port} is taken by {self._agents[agent.port].name}")
        self._agents[agent.port] = agent

    def open_flow(self, agent: UserAgent) -> int:
        """A new connection between ``agent`` and the server; its flow id."""
        self._next_flow += 1
        self._flows[self._next_flow] = agent
        return self._next_flow

    def close_flow(self, flow: int) -> bool:
        return self._flows.pop(flow, None) is not None

    def close_all(self) -> None:
        """Every connection closes (the server stopped)."""
        self._flows.clear()

    def flow_open(self, flow: int) -> bool:
        return flow in self._flows

    def from_server(self, peer: Peer) -> Route:
        """Where a message the server writes to ``peer`` arrives, if anywhere."""
        port = SERVER_PORTS.get(peer.transport, 5060)
        if peer.flow is not None:
            agent = self._flows.get(peer.flow)
            if agent is None:
                return Route(agent=None, lost=f"connection #{peer.flow} is closed", name=str(peer))
            source = Peer(transport=peer.transport, host=HOST, port=port, flow=peer.flow)
            return Route(agent=agent, source=source)
        agent = self._agents.get(peer.port) if peer.host == HOST else None
        if agent is None:
            return Route(agent=None, lost=f"nobody at {peer}", name=str(peer))
        if not agent.reachable:
            why = "no answer" if peer.transport == "udp" else "connection refused"
            return Route(
                agent=None, lost=f"{agent.name} is not in the foreground: {why}", name=agent.name
            )
        if peer.transport == "udp":
            return Route(agent=agent, source=Peer(transport="udp", host=HOST, port=port))
        # RFC 3261 §18.1.1: the server opens a new connection to the contact.
        flow = self.open_flow(agent)
        return Route(
            agent=agent, source=Peer(transport=peer.transport, host=HOST, port=port, flow=flow)
        )

    @staticmethod
    def from_agent(agent: UserAgent, peer: Peer) -> Peer:
        """The source the server sees for a message ``agent`` writes to ``peer``."""
        return Peer(transport=agent.transport, host=HOST, port=agent.port, flow=peer.flow)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultWindow:
    """Pushes (of ``provider``, to ``device``) fail with HTTP ``status`` in [start, end)."""

    start: float
    end: float
    status: int
    reason: str | None = None
    provider: str | None = None
    device: str | None = None
    retry_after_s: float | None = None

    def applies(self, at: float, provider: str, device: str | None) -> bool:
        if not self.start <= at < self.end:
            return False
        if self.provider is not None and self.provider != provider:
            return False
        return self.device is None or self.device == device


class PushSandbox:
    """The push services of the replay: APNs, FCM and Web Push stand-ins."""

    def __init__(self, *, latency_s: float, faults: list[FaultWindow]) -> None:
        self.latency_s = latency_s
        self.faults = faults

    def answer(self, request: PushRequest, *, at: float, device: str | None) -> PushOutcome:
        """What the service answers a push handed to it at scenario time ``at``."""
        provider = request.target.base_provider
        for fault in self.faults:
            if fault.applies(at, provider, device):
                return _classify(provider, fault, self.latency_s)
        return PushOutcome(status="delivered", provider=provider, latency=self.latency_s)


def _classify(provider: str, fault: FaultWindow, latency: float) -> PushOutcome:
    headers = {}
    if fault.retry_after_s is not None:
        headers["retry-after"] = str(math.ceil(fault.retry_after_s))
    if provider == "apns":
        body = json.dumps({"reason": fault.reason}).encode() if fault.reason else b""
        return classify_apns_response(fault.status, body, headers, latency=latency)
    if provider == "webpush":
        body = (fault.reason or "").encode()
        return classify_webpush_response(fault.status, body, headers, latency=latency)
    # FCM HTTP v1 (PROTOCOLS.md §5): UNREGISTERED 404 (and INVALID_ARGUMENT for a bad
    # token) end the token; 429, 500 and 503 are worth a retry; the rest are errors.
    status: PushStatus
    if fault.status == 404 or fault.reason == "UNREGISTERED":
        status = "invalid_target"
    elif fault.status in (429, 500, 503):
        status = "retry"
    else:
        status = "error"
    return PushOutcome(
        status=status,
        provider="fcm",
        reason=fault.reason,
        http_status=fault.status,
        retry_after=fault.retry_after_s if status == "retry" else None,
        latency=latency,
    )
