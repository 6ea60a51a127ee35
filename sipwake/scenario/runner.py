"""Replay a scenario on the virtual clock: the real node, simulated phones and callers.

``replay(scenario)`` builds a ``Node`` exactly as the tests of the call-wake engine do
(seeded identifiers, open registrar for the lab domain, the scenario's call plans;
digest authentication of every user instead when some user has a ``password``),
attaches one ``DeviceAgent`` per device, a ``CallerAgent`` per caller, the voicemail
and the twin gateway (``EndpointAgent``), and runs everything on a ``VirtualClock``:

1. setup, before time 0: every device that is not offline registers (in file order,
   10 ms apart); suspended ones then lose their connection (TCP/TLS: the node is told
   the flow closed) — UDP ones register long enough ago that the node no longer counts
   them as foreground (``udp_foreground_s``);
2. the timeline's steps at their times; node timers, agent timers, message
   deliveries (``network_delay_s`` after sending) and push answers
   (``push_latency_s``) in time order;
3. a delivered call push wakes a suspended device ``wake_delay_s`` later: it opens a
   new connection and registers again, and the node forks the held call to it.

Timeline actions that need more than the node: an instant message waits in the node
for a suspended device (the node says ``KeepMessage``); ``restart_server`` drops the node
(its calls, transactions and connections) and builds a new one ``down_s`` later from
its store, an SQLite file in a temporary directory (only scenarios that restart keep
one); ``network_loss`` closes a device's connection and loses what is sent to it.

Everything that happens is written down (``Replay``): each SIP message with who sent
it to whom and when (the ladder), each push and its outcome, the node's call steps,
and per call what the caller heard and who answered. ``checks.evaluate`` compares
that with the scenario's expectations.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sipwake.config import LimitsConfig
from sipwake.ids import SeededIds
from sipwake.node import (
    AuthFailed,
    CallEvent,
    Dropped,
    ForgetMessage,
    KeepMessage,
    Limited,
    Node,
    NodeOutput,
    NodeSettings,
    PersistChanges,
    SendBytes,
    SendPush,
)
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.push.base import PushOutcome
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.events import BindingAdded
from sipwake.registrar.registrar import Registrar
from sipwake.scenario.agents import HOST, DeviceAgent, Transmit, UserAgent
from sipwake.scenario.model import Scenario
from sipwake.scenario.record import CallRecord, LadderRow, PushRecordSeen, Replay, label
from sipwake.scenario.virtual import FakeNetwork, FaultWindow, PushSandbox, VirtualClock
from sipwake.scenario.world import BUNDLE, DOMAIN, SERVER, World
from sipwake.sip.auth import DigestServer
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.store.sqlite import SqliteStore
from sipwake.transaction.layer import TransactionLayer

__all__ = ["CallRecord", "LadderRow", "PushRecordSeen", "Replay", "fault_windows", "replay"]

VOICEMAIL_URI = "sip:vm@127.0.0.1:5090"
TWIN_GATEWAY_PORT = 5095
_LISTENERS = {
    "udp": LocalAddress(transport="udp", host=HOST, port=5060),
    "tcp": LocalAddress(transport="tcp", host=HOST, port=5060),
    "tls": LocalAddress(transport="tls", host=HOST, port=5061),
}
#: Node time of scenario time 0 (setup happens before it).
_EPOCH = 10_000.0
#: Wall-clock time (UNIX seconds) of scenario time 0, for the store.
_WALL = 1_700_000_000.0

LIMITS = LimitsConfig()
"""The default limits of ``sipwake serve`` (``limits:``), applied to replays too."""


# -- events on the clock ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _ToNode:
    data: bytes
    source: Peer


@dataclass(frozen=True, slots=True)
class _ToAgent:
    agent: UserAgent
    data: bytes
    source: Peer
    message: Request | Response


@dataclass(frozen=True, slots=True)
class _PushAnswer:
    push: SendPush
    outcome: PushOutcome
    record: PushRecordSeen
    node: Node


@dataclass(frozen=True, slots=True)
class _Later:
    action: Callable[[], None]


_Event = _ToNode | _ToAgent | _PushAnswer | _Later


def fault_windows(scenario: Scenario) -> list[FaultWindow]:
    """The timeline's ``push_fails`` steps as time windows."""
    out = []
    for step in scenario.timeline:
        fault = step.push_fails
        if fault is None:
            continue
        out.append(
            FaultWindow(
                start=fault.from_ if fault.from_ is not None else step.at,
                end=fault.to if fault.to is not None else float("inf"),
                status=fault.status,
                reason=fault.reason,
                provider=fault.provider,
                device=scenario.resolve_device(fault.device) if fault.device else None,
                retry_after_s=fault.retry_after_s,
                unregistered_at=fault.unregistered_at,
            )
        )
    return out


class _Runner(World):
    def __init__(self, scenario: Scenario, store_dir: Path | None = None) -> None:
        super().__init__(scenario)
        self.auth_notes()
        self.clock: VirtualClock[_Event] = VirtualClock(start=-1e9)
        self.network = FakeNetwork(scenario.network_delay_s)
        for agent in self.agents:
            self.network.attach(agent)
        twin_gateway = scenario.pbx.twin_gateway
        self.plans = {
            name: self.plan(u, voicemail_uri=VOICEMAIL_URI, twin_gateway=twin_gateway)
            for name, u in scenario.users.items()
            if u.mobile or u.dnd or u.forward_no_answer or u.forward_busy
        }
        self.system_plan = self.plan(None, voicemail_uri=VOICEMAIL_URI, twin_gateway=twin_gateway)
        self.store = SqliteStore(store_dir / "replay.db") if store_dir is not None else None
        self._generation = 0
        self.node: Node | None = self._build_node()
        self.sandbox = PushSandbox(
            latency_s=scenario.push_latency_s,
            faults=fault_windows(scenario),
            bundle_id=BUNDLE,
            wall_at_zero=_WALL,
        )
        for provider, token, owner in self.issued:
            if provider == "apns":
                self.sandbox.issue_apns(token, owner)
            elif provider == "fcm":
                self.sandbox.issue_fcm(token, owner)

    def _build_node(self) -> Node:
        ids = SeededIds(self.scenario.seed + 7919 * self._generation)
        registrar = Registrar(
            ids=ids, config=RegistrarConfig(domains={DOMAIN}, canonical_domain=DOMAIN)
        )
        users = self.scenario.users
        settings = NodeSettings(
            domain=DOMAIN,
            realm=DOMAIN,
            open=not self.requires_auth,
            users={name: user.password for name, user in users.items()},
            plan=self.system_plan,
            plans=self.plans,
            # As ``sipwake serve`` limits wake pushes by default (loopback is trusted for
            # the request rate, so that limit never applies to a replay).
            wake_pushes_per_source=LIMITS.rate("wake_pushes_per_source"),
            wake_pushes_per_user=LIMITS.rate("wake_pushes_per_user"),
        )
        node = Node(
            settings=settings,
            ids=ids,
            locality=Locality(domain=DOMAIN, listeners=tuple(_LISTENERS.values())),
            registrar=registrar,
            layer=TransactionLayer(ids),
            auth=self._digest_server() if self.requires_auth else None,
        )
        if self.store is not None:
            restored = self.store.load(self._node_now(), self._wall())
            registrar.restore(restored)
            node.restore(BindingAdded(binding=b) for b in restored)
            held = node.restore_messages((m, a, d) for m, a, d, _ in self.store.held_messages())
            if self._generation:
                self.note(
                    SERVER,
                    f"started: {len(restored)} bindings and {held} held messages from the store",
                )
        return node

    def _digest_server(self) -> DigestServer:
        """The node's digest authentication: SHA-256 offered first, then MD5 (RFC 8760
        §2.4); the secret follows from the seed (the same after a restart)."""
        secret = hashlib.sha256(f"sipwake-replay:{self.scenario.seed}".encode()).digest()
        return DigestServer(DOMAIN, secret, algorithms=("SHA-256", "MD5"))

    # -- World ------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return self.clock.now

    def agent_now(self) -> float:
        return self._node_now()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        self.clock.schedule(self.now + delay, _Later(action))

    def send_out(self, agent: UserAgent, transmit: Transmit) -> None:
        source = self.network.from_agent(agent, transmit.peer)
        self.clock.schedule(
            self.now + self.network.delay_s,
            _ToNode(data=transmit.message.to_bytes(), source=source),
        )

    def connect(self, device: DeviceAgent) -> None:
        if device.flow is not None:
            self.disconnect(device)
        device.flow = self.network.open_flow(device)

    def disconnect(self, device: DeviceAgent) -> None:
        flow = device.flow
        device.flow = None
        if flow is not None and self.network.close_flow(flow) and self.node is not None:
            self.node.flow_closed(flow)

    def restart_server(self, down_s: float) -> None:
        self.node = None
        self.network.close_all()
        for device in self.devices.values():
            device.flow = None
        self.later(down_s, self._start_again)

    def _start_again(self) -> None:
        self._generation += 1
        self.node = self._build_node()
        self.server_back()

    # -- time ------------------------------------------------------------------------------
    def _node_now(self) -> float:
        return _EPOCH + self.clock.now

    def _wall(self) -> float:
        return _WALL + self.clock.now

    def run(self) -> Replay:
        scenario = self.scenario
        try:
            self._setup()
            for step in scenario.timeline:
                self.clock.schedule(step.at, _Later(functools.partial(self.run_step, step)))
            self._loop(scenario.duration_s)
        finally:
            if self.store is not None:
                self.store.close()
        self.clock.advance(scenario.duration_s)
        self.record.end = scenario.duration_s
        self.record.columns = self.columns()
        return self.record

    def _loop(self, end: float) -> None:
        while True:
            candidates: list[tuple[float, int, UserAgent | None]] = []
            t_event = self.clock.next_time()
            if t_event is not None:
                candidates.append((t_event, 2, None))
            node = self.node
            node_deadline = node.next_deadline() if node is not None else None
            if node_deadline is not None:
                candidates.append((round(node_deadline - _EPOCH, 9), 0, None))
            for agent in self.agents:
                deadline = agent.next_deadline()
                if deadline is not None:
                    candidates.append((round(deadline - _EPOCH, 9), 1, agent))
            if not candidates:
                break
            at, kind, due = min(candidates, key=lambda c: (c[0], c[1]))
            if at > end:
                break
            self.clock.advance(at)
            # ``at`` is rounded: never hand a core a time just short of the deadline it
            # asked for (it would fire nothing and ask again, for ever: a deadline far
            # from _EPOCH, days into a scenario, loses the last bits of its fraction).
            if kind == 0 and node is not None and node_deadline is not None:
                self._perform(node.handle_timeout(max(self._node_now(), node_deadline)))
            elif kind == 1 and due is not None:
                deadline = due.next_deadline()
                now = self._node_now()
                self.transmit(due, due.handle_timeout(max(now, deadline or now)))
            else:
                self._handle(self.clock.pop())

    def _setup(self) -> None:
        """Registrations before time 0 (see the module docstring)."""
        plan = self.system_plan
        index = 0
        for uname, user in self.scenario.users.items():
            for device in user.devices:
                agent = self.devices[f"{uname}.{device.name}"]
                if device.state == "offline":
                    continue
                at = -3.0 + 0.01 * index
                if device.state == "suspended" and device.transport == "udp":
                    at -= plan.udp_foreground_s + 2.0
                index += 1
                self.clock.schedule(at, _Later(functools.partial(self.register, agent)))
                if device.state == "suspended":
                    self.clock.schedule(-1.0, _Later(functools.partial(self.suspend, agent)))

    # -- events ----------------------------------------------------------------------------
    def _handle(self, event: _Event) -> None:
        match event:
            case _ToNode(data=data, source=source):
                if source.flow is not None and not self.network.flow_open(source.flow):
                    return
                if self.node is None:
                    self.note(SERVER, "lost a message: the server is down")
                    return
                listener = _LISTENERS[source.transport]
                self._perform(self.node.receive(data, source, listener, self._node_now()))
            case _ToAgent(agent=agent, data=data, source=source, message=message):
                if source.flow is not None and not self.network.flow_open(source.flow):
                    self.note(agent.name, f"lost {label(message)}: connection closed")
                    return
                if not agent.reachable:
                    why = (
                        "no network"
                        if isinstance(agent, DeviceAgent) and agent.network_down
                        else "not in the foreground"
                    )
                    self.note(agent.name, f"lost {label(message)}: {why}")
                    return
                self.observe_delivery(agent, message)
                self.transmit(agent, agent.receive(data, source, self._node_now()))
            case _PushAnswer(push=push, outcome=outcome, record=record, node=node):
                self.push_answered(record, outcome)
                if node is self.node:
                    self._perform(
                        node.push_completed(
                            push.push_id, outcome, self._node_now(), wall=self._wall()
                        )
                    )
            case _Later(action=action):
                action()

    # -- node outputs -------------------------------------------------------------------------
    def _perform(self, outputs: Sequence[NodeOutput]) -> None:
        node = self.node
        if node is None:
            return
        for output in outputs:
            match output:
                case SendBytes(data=data, peer=peer, message=message):
                    self._from_node(data, peer, message)
                case PersistChanges(events=events, token=token):
                    if self.store is not None:
                        self.store.apply(events, self._node_now(), self._wall())
                    if token is not None:
                        self._perform(node.changes_stored(token, True, self._node_now()))
                case SendPush():
                    self._push(output, node)
                case CallEvent():
                    self.call_event(output, getattr(node.wake, "_calls", {}))
                case Dropped(reason=reason):
                    self.note(SERVER, f"dropped: {reason}")
                case Limited(what=what, key=key, rate=rate):
                    self.note(SERVER, f"rate limit: {what} from {key} over {rate}")
                case AuthFailed(user=user, method=method, reason=reason):
                    self.note(SERVER, f"refused credentials of {user!r} ({method}): {reason}")
                case KeepMessage(message_id=message_id, aor=aor, data=data):
                    self.note(SERVER, f"keeps a message for {aor}")
                    if self.store is not None:
                        self.store.keep_message(message_id, aor, data, self._wall())
                case ForgetMessage(message_id=message_id):
                    if self.store is not None:
                        self.store.drop_message(message_id)

    def _from_node(self, data: bytes, peer: Peer, message: Request | Response | None) -> None:
        if message is None:
            message = parse_message(data, stream=peer.reliable)
        route = self.network.from_server(peer)
        self.record.messages += 1
        if route.agent is None or route.source is None:
            self.row(SERVER, route.name, label(message), lost=route.lost)
            if peer.transport != "udp" and self.node is not None:
                # A connection that is gone or cannot be opened: the server's transport
                # hands the message back at once, as the real one does (RFC 3261 §17.1.4).
                self._perform(self.node.send_failed(data, self._node_now()))
            return
        self.row(SERVER, route.agent.name, label(message))
        self.clock.schedule(
            self.now + self.network.delay_s,
            _ToAgent(agent=route.agent, data=data, source=route.source, message=message),
        )

    def _push(self, push: SendPush, node: Node) -> None:
        record = self.push_sent(push.request, push.push_id)
        outcome = self.sandbox.answer(push.request, at=self.now, device=record.device)
        self.clock.schedule(
            self.now + self.sandbox.latency_s,
            _PushAnswer(push=push, outcome=outcome, record=record, node=node),
        )


def replay(scenario: Scenario) -> Replay:
    """Run ``scenario`` on the virtual clock; what happened, for ``checks.evaluate``."""
    if not scenario.restarts:
        return _Runner(scenario).run()
    with tempfile.TemporaryDirectory(prefix="sipwake-replay-") as tmp:
        return _Runner(scenario, Path(tmp)).run()
