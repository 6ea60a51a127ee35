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

from sipwake.errors import PushError
from sipwake.push.apns_rules import TokenBook, check_apns_request
from sipwake.push.base import PushOutcome, PushRequest, PushStatus
from sipwake.push.fcm_payload import classify_fcm_response
from sipwake.push.payload import ApnsSettings, build_apns_request, classify_apns_response
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
    unregistered_at: float | None = None
    """410: the scenario time in the answer's ``timestamp`` (None: when it answers)."""

    def applies(self, at: float, provider: str, device: str | None) -> bool:
        if not self.start <= at < self.end:
            return False
        if self.provider is not None and self.provider != provider:
            return False
        return self.device is None or self.device == device


class PushSandbox:
    """The push services of the replay: APNs, FCM and Web Push stand-ins, as strict as
    the real ones about tokens (``sipwake.push.apns_rules``): each device token belongs
    to one APNs topic (``issue_apns``) or one Firebase project (``issue_fcm``); a push on
    another topic is ``DeviceTokenNotForTopic``, to a token never issued
    ``BadDeviceToken``, through another project ``SENDER_ID_MISMATCH``."""

    def __init__(
        self,
        *,
        latency_s: float,
        faults: list[FaultWindow],
        bundle_id: str = "org.lab.phone",
        wall_at_zero: float = 0.0,
    ) -> None:
        self.latency_s = latency_s
        self.faults = faults
        self.bundle_id = bundle_id
        """The app's bundle id, as the server's APNs settings name it."""
        self.wall_at_zero = wall_at_zero
        """UNIX seconds at scenario time 0 (dates an APNs 410's ``timestamp``)."""
        self.apns_tokens = TokenBook()
        self.fcm_projects: dict[str, str] = {}

    def issue_apns(self, token: str, topic: str) -> None:
        self.apns_tokens.issue(token, topic)

    def issue_fcm(self, token: str, project: str) -> None:
        self.fcm_projects[token] = project

    def answer(self, request: PushRequest, *, at: float, device: str | None) -> PushOutcome:
        """What the service answers a push handed to it at scenario time ``at``."""
        provider = request.target.base_provider
        refused = self._refusal(request, provider, at)
        if refused is not None:
            return refused
        for fault in self.faults:
            if fault.applies(at, provider, device):
                return self._classify(provider, fault, at)
        return PushOutcome(status="delivered", provider=provider, latency=self.latency_s)

    def _refusal(self, request: PushRequest, provider: str, at: float) -> PushOutcome | None:
        """The real service's refusal of a push that breaks its rules, if any."""
        if provider == "apns":
            wall = self.wall_at_zero + at
            try:
                built = build_apns_request(
                    request, ApnsSettings(bundle_id=self.bundle_id), wall_now=wall
                )
            except PushError as exc:  # refused before it left: as ApnsProvider reports it
                dead = exc.reason.startswith("BadDeviceToken")
                status: PushStatus = "invalid_target" if dead else "error"
                return PushOutcome(status=status, provider="apns", reason=exc.reason)
            token = built.path.rsplit("/", 1)[-1]
            refusal = check_apns_request(token, built.headers, built.body, book=self.apns_tokens)
            if refusal is None:
                return None
            body = json.dumps({"reason": refusal[1]}).encode()
            return classify_apns_response(refusal[0], body, {}, latency=self.latency_s)
        if provider == "fcm":
            project = request.target.param or ""
            issued = self.fcm_projects.get(request.target.prid)
            if issued is None or issued == project:
                return None
            body = _fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")
            return classify_fcm_response(403, body, {}, latency=self.latency_s)
        return None

    def _classify(self, provider: str, fault: FaultWindow, at: float) -> PushOutcome:
        headers = {}
        latency = self.latency_s
        if fault.retry_after_s is not None:
            headers["retry-after"] = str(math.ceil(fault.retry_after_s))
        if provider == "apns":
            doc: dict[str, object] = {"reason": fault.reason} if fault.reason else {}
            if fault.status == 410:
                when = at if fault.unregistered_at is None else fault.unregistered_at
                doc["timestamp"] = int((self.wall_at_zero + when) * 1000)
            body = json.dumps(doc).encode() if doc else b""
            return classify_apns_response(fault.status, body, headers, latency=latency)
        if provider == "webpush":
            body = (fault.reason or "").encode()
            return classify_webpush_response(fault.status, body, headers, latency=latency)
        # FCM HTTP v1 (PROTOCOLS.md §5): the error body Google sends for that status.
        code = fault.reason or _FCM_CODES.get(fault.status, "INTERNAL")
        status_name = _FCM_STATUS.get(fault.status, "INTERNAL")
        body = _fcm_error(fault.status, status_name, code)
        return classify_fcm_response(fault.status, body, headers, latency=latency)


_FCM_CODES = {400: "INVALID_ARGUMENT", 403: "SENDER_ID_MISMATCH", 404: "UNREGISTERED"}
_FCM_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _fcm_error(status: int, status_name: str, code: str) -> bytes:
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
    error = {"code": status, "message": code, "status": status_name, "details": [detail]}
    return json.dumps({"error": error}).encode()
