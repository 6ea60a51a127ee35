"""Replay a scenario on the virtual clock: the real node, simulated phones and callers.

``replay(scenario)`` builds a ``Node`` exactly as the tests of the call-wake engine do
(seeded identifiers, open registrar for the lab domain, the scenario's call plans),
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

Everything that happens is written down (``Replay``): each SIP message with who sent
it to whom and when (the ladder), each push and its outcome, the node's call steps,
and per call what the caller heard and who answered. ``checks.evaluate`` compares
that with the scenario's expectations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipwake.ids import SeededIds
from sipwake.node import (
    CallEvent,
    Dropped,
    Node,
    NodeOutput,
    NodeSettings,
    PersistChanges,
    SendBytes,
    SendPush,
)
from sipwake.proxy.plan import CallPlan, plan_for
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.push.base import PushOutcome
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.registrar import Registrar
from sipwake.scenario.agents import (
    HOST,
    AnswerPlan,
    CallerAgent,
    DeviceAgent,
    EndpointAgent,
    Transmit,
    UserAgent,
)
from sipwake.scenario.model import Device, Scenario, Step, User
from sipwake.scenario.virtual import FakeNetwork, FaultWindow, PushSandbox, VirtualClock
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction.layer import TransactionLayer

__all__ = ["CallRecord", "LadderRow", "PushRecordSeen", "Replay", "replay"]

DOMAIN = "lab.test"
SERVER = "sipwake"
PUSH = "push"
VOICEMAIL = "voicemail"
GATEWAY = "gateway"
VOICEMAIL_URI = "sip:vm@127.0.0.1:5090"
_LISTENERS = {
    "udp": LocalAddress(transport="udp", host=HOST, port=5060),
    "tcp": LocalAddress(transport="tcp", host=HOST, port=5060),
    "tls": LocalAddress(transport="tls", host=HOST, port=5061),
}
#: Node time of scenario time 0 (setup happens before it).
_EPOCH = 10_000.0
_TEAM = "TEAM123456"
_BUNDLE = "org.lab.phone"


# -- what a replay writes down -------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class LadderRow:
    """One line of the ladder: a message or push from ``src`` to ``dst`` (``dst`` empty:
    a note at ``src``)."""

    at: float
    src: str
    dst: str
    label: str
    lost: str = ""


@dataclass(slots=True, kw_only=True)
class PushRecordSeen:
    at: float
    push_id: int
    kind: str
    provider: str
    device: str | None
    call: str | None
    outcome: PushOutcome | None = None
    answered_at: float | None = None


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """One call of the timeline, as its caller and the other agents saw it."""

    id: str
    caller: str
    callee: str
    start: float
    call_id: str
    provisional: list[tuple[float, int]] = field(default_factory=list)
    """18x (and 110) responses the caller got: (time, status)."""
    final: tuple[float, int] | None = None
    answers: list[tuple[float, str]] = field(default_factory=list)
    """2xx answers to the INVITE: (time, who: ``user.device``, ``user.mobile``, voicemail)."""
    voicemail: list[float] = field(default_factory=list)
    twin: list[float] = field(default_factory=list)
    steps: list[CallEvent] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Replay:
    """Everything one replay saw."""

    scenario: Scenario
    rows: list[LadderRow] = field(default_factory=list)
    calls: dict[str, CallRecord] = field(default_factory=dict)
    pushes: list[PushRecordSeen] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    messages: int = 0
    end: float = 0.0

    def call(self, ref: str | None) -> CallRecord | None:
        if ref is None:
            return next(iter(self.calls.values()), None)
        return self.calls.get(ref)


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
class _RunStep:
    step: Step


@dataclass(frozen=True, slots=True)
class _Register:
    device: DeviceAgent


@dataclass(frozen=True, slots=True)
class _Suspend:
    device: DeviceAgent


@dataclass(frozen=True, slots=True)
class _PushAnswer:
    push: SendPush
    outcome: PushOutcome
    record: PushRecordSeen


@dataclass(frozen=True, slots=True)
class _Wake:
    device: DeviceAgent


_Event = _ToNode | _ToAgent | _RunStep | _Register | _Suspend | _PushAnswer | _Wake


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _push_params(ref: str, device: Device) -> tuple[str, str | None]:
    """The Contact parameters that carry ``device``'s push target, and its token."""
    provider = device.provider
    if provider == "none":
        return "", None
    token = _digest(f"token:{ref}", 64)
    legacy = device.push_params == "legacy"
    if provider == "apns":
        if legacy:
            return f";pn-type=apple;app-id={_BUNDLE}.voip.prod;pn-tok={token};pn-silent=1", token
        return f";pn-provider=apns;pn-param={_TEAM}.{_BUNDLE}.voip;pn-prid={token}", token
    if provider == "fcm":
        token = f"{token[:22]}:APA91b{token[22:]}"
        if legacy:
            return f";pn-type=firebase;app-id=lab-phone;pn-tok={token}", token
        return f";pn-provider=fcm;pn-param=lab-phone;pn-prid={token}", token
    endpoint = f"https://push.lab.test/wp/{token[:40]}"
    return f";pn-provider=webpush;pn-prid={endpoint}", endpoint


def _device_answer(device: Device) -> AnswerPlan:
    if device.busy:
        return AnswerPlan(ring=False, status=486, after=0.0)
    if device.dnd:
        return AnswerPlan(ring=False, status=480, after=0.0, reason="Do Not Disturb")
    if device.reject is not None:
        return AnswerPlan(ring=True, status=device.reject, after=device.answer_after_s or 0.0)
    if device.answer_after_s is not None:
        return AnswerPlan(ring=True, status=200, after=device.answer_after_s)
    return AnswerPlan(ring=True, status=None)


class _Runner:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.record = Replay(scenario=scenario)
        self.clock: VirtualClock[_Event] = VirtualClock(start=-1e9)
        self.network = FakeNetwork(scenario.network_delay_s)
        pbx = scenario.pbx
        self.plan = self._plan(None)
        self.node = self._build_node()
        self._agent_seq = 0
        self.devices: dict[str, DeviceAgent] = {}
        self.by_token: dict[str, DeviceAgent] = {}
        self.callers: dict[str, CallerAgent] = {}
        self.by_call_id: dict[str, CallRecord] = {}
        self.agents: list[UserAgent] = []
        self.numbers: dict[str, str] = {}
        """Mobile number → ``user.mobile``."""
        port = 7000
        for uname, user in scenario.users.items():
            for device in user.devices:
                port += 1
                ref = f"{uname}.{device.name}"
                params, token = _push_params(ref, device)
                agent = DeviceAgent(
                    name=ref,
                    user=uname,
                    domain=DOMAIN,
                    transport=device.transport,
                    port=port,
                    ids=self._ids(),
                    push_params=params,
                    instance=f"urn:uuid:{_uuid(ref)}",
                    platform=device.platform,
                    answer=_device_answer(device),
                )
                self._attach(agent)
                self.devices[ref] = agent
                if token is not None:
                    self.by_token[token] = agent
            if user.mobile is not None:
                self.numbers[user.mobile.number] = f"{uname}.mobile"
        mobiles = {
            u.mobile.number: AnswerPlan(
                ring=True,
                status=None if u.mobile.answer_after_s is None else 200,
                after=u.mobile.answer_after_s or 0.0,
            )
            for u in scenario.users.values()
            if u.mobile is not None
        }
        self.voicemail = EndpointAgent(
            name=VOICEMAIL,
            port=5090,
            ids=self._ids(),
            domain=DOMAIN,
            plans={},
            default=AnswerPlan(ring=False, status=200, after=pbx.voicemail_answer_after_s),
        )
        self.gateway = EndpointAgent(
            name=GATEWAY,
            port=5095,
            ids=self._ids(),
            domain=DOMAIN,
            plans=mobiles,
            default=AnswerPlan(ring=False, status=404),
        )
        self._attach(self.voicemail)
        self._attach(self.gateway)
        self.sandbox = PushSandbox(latency_s=scenario.push_latency_s, faults=self._faults())
        self._waking: set[str] = set()
        self._call_ids: dict[str, str] = {}
        """The engine's call reference → SIP Call-ID."""

    # -- construction ------------------------------------------------------------------
    def _ids(self) -> SeededIds:
        self._agent_seq += 1
        return SeededIds(self.scenario.seed * 10_007 + self._agent_seq)

    def _attach(self, agent: UserAgent) -> None:
        self.network.attach(agent)
        self.agents.append(agent)

    def _plan(self, user: User | None) -> CallPlan:
        pbx = self.scenario.pbx
        overrides = pbx.model_dump(
            exclude={"preset", "voicemail", "voicemail_answer_after_s", "twin_gateway"}
        )
        twin = None
        dnd = None
        if user is not None:
            if user.mobile is not None:
                twin = pbx.twin_gateway.replace("{number}", user.mobile.number)
            dnd = True if user.dnd else None
        voicemail = VOICEMAIL_URI if pbx.voicemail else None
        return plan_for(pbx.preset, voicemail=voicemail, twin=twin, dnd=dnd, **overrides)

    def _build_node(self) -> Node:
        ids = SeededIds(self.scenario.seed)
        registrar = Registrar(
            ids=ids, config=RegistrarConfig(domains={DOMAIN}, canonical_domain=DOMAIN)
        )
        users = self.scenario.users
        settings = NodeSettings(
            domain=DOMAIN,
            realm=DOMAIN,
            open=True,
            users=dict.fromkeys(users),
            plan=self.plan,
            plans={name: self._plan(u) for name, u in users.items() if u.mobile or u.dnd},
        )
        return Node(
            settings=settings,
            ids=ids,
            locality=Locality(domain=DOMAIN, listeners=tuple(_LISTENERS.values())),
            registrar=registrar,
            layer=TransactionLayer(ids),
            auth=None,
        )

    def _faults(self) -> list[FaultWindow]:
        out = []
        for step in self.scenario.timeline:
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
                    device=self.scenario.resolve_device(fault.device) if fault.device else None,
                    retry_after_s=fault.retry_after_s,
                )
            )
        return out

    # -- time ------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Scenario time."""
        return self.clock.now

    def _node_now(self) -> float:
        return _EPOCH + self.clock.now

    def run(self) -> Replay:
        scenario = self.scenario
        self._setup()
        for step in scenario.timeline:
            self.clock.schedule(step.at, _RunStep(step))
        end = scenario.duration_s
        while True:
            candidates: list[tuple[float, int, UserAgent | None]] = []
            t_event = self.clock.next_time()
            if t_event is not None:
                candidates.append((t_event, 2, None))
            node_deadline = self.node.next_deadline()
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
            if kind == 0:
                self._perform(self.node.handle_timeout(self._node_now()))
            elif kind == 1 and due is not None:
                self._from_agent(due, due.handle_timeout(self._node_now()))
            else:
                self._handle(self.clock.pop())
        self.clock.advance(end)
        self.record.end = end
        self.record.columns = self._columns()
        return self.record

    def _setup(self) -> None:
        """Registrations before time 0 (see the module docstring)."""
        plan = self.plan
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
                self.clock.schedule(at, _Register(agent))
                if device.state == "suspended":
                    self.clock.schedule(-1.0, _Suspend(agent))

    # -- events ----------------------------------------------------------------------------
    def _handle(self, event: _Event) -> None:
        match event:
            case _ToNode(data=data, source=source):
                listener = _LISTENERS[source.transport]
                if source.flow is not None and not self.network.flow_open(source.flow):
                    return
                self._perform(self.node.receive(data, source, listener, self._node_now()))
            case _ToAgent(agent=agent, data=data, source=source, message=message):
                if source.flow is not None and not self.network.flow_open(source.flow):
                    self._note(agent.name, f"lost {_label(message)}: connection closed")
                    return
                if not agent.reachable:
                    self._note(agent.name, f"lost {_label(message)}: not in the foreground")
                    return
                self._observe_delivery(agent, message)
                self._from_agent(agent, agent.receive(data, source, self._node_now()))
            case _RunStep(step=step):
                self._run_step(step)
            case _Register(device=device):
                self._register(device)
            case _Suspend(device=device):
                self._suspend(device)
            case _PushAnswer(push=push, outcome=outcome, record=record):
                record.outcome = outcome
                record.answered_at = self.now
                label = "delivered" if outcome.status == "delivered" else _outcome_text(outcome)
                self._row(PUSH, SERVER, label)
                if outcome.status == "delivered" and record.device is not None:
                    device = self.devices[record.device]
                    self._row(PUSH, device.name, f"{record.kind} push")
                    if record.kind in ("call", "message"):
                        self._wake_later(device)
                self._perform(self.node.push_completed(push.push_id, outcome, self._node_now()))
            case _Wake(device=device):
                self._waking.discard(device.name)
                if device.state == "suspended":
                    self._note(device.name, "woken by the push: new connection, REGISTER")
                    self._register(device)

    def _wake_later(self, device: DeviceAgent) -> None:
        if device.state != "suspended" or device.name in self._waking:
            return
        delay = self._spec(device).wake_delay_s
        if delay == "never":
            self._note(device.name, "push arrives but the app never wakes")
            return
        self._waking.add(device.name)
        self.clock.schedule(self.now + float(delay), _Wake(device))

    def _spec(self, device: DeviceAgent) -> Device:
        _, spec = self.scenario.device_refs()[device.name]
        return spec

    def _register(self, device: DeviceAgent) -> None:
        if device.transport != "udp":
            if device.flow is not None:
                self._close(device)
            device.flow = self.network.open_flow(device)
        self._from_agent(device, device.register(self._node_now()))

    def _close(self, device: DeviceAgent) -> None:
        flow = device.flow
        if flow is not None and self.network.close_flow(flow):
            self.node.flow_closed(flow)

    def _suspend(self, device: DeviceAgent) -> None:
        self._close(device)
        device.suspend()
        self._note(
            device.name, "suspended" + (" (connection closed)" if device.transport != "udp" else "")
        )

    def _run_step(self, step: Step) -> None:
        now = self._node_now()
        if step.call is not None:
            action = step.call
            caller = self.callers.get(action.from_)
            if caller is None:
                caller = CallerAgent(
                    name=action.from_,
                    user=action.from_,
                    domain=DOMAIN,
                    port=6000 + len(self.callers),
                    ids=self._ids(),
                    display_name=action.from_.capitalize(),
                )
                self.callers[action.from_] = caller
                self._attach(caller)
            ref = self._call_ref(step)
            call_id, out = caller.invite(ref, action.to, now)
            record = CallRecord(
                id=ref, caller=caller.name, callee=action.to, start=self.now, call_id=call_id
            )
            self.record.calls[ref] = record
            self.by_call_id[call_id] = record
            self._from_agent(caller, out)
        elif step.hangup is not None or step.cancel is not None:
            what = step.hangup or step.cancel
            assert what is not None
            found = self.record.call(what.call)
            if found is None:
                return
            record = found
            caller = self.callers[record.caller]
            if step.cancel is not None:
                self._from_agent(caller, caller.cancel(record.id, now))
            elif step.hangup is not None and step.hangup.by == "callee":
                answerer = self._answerer(record)
                if answerer is not None:
                    self._from_agent(answerer, answerer.bye(record.call_id, now))
            else:
                self._from_agent(caller, caller.hangup(record.id, now))
        elif step.suspend is not None:
            device = self.devices[self.scenario.resolve_device(step.suspend) or ""]
            if device.state == "foreground":
                self._suspend(device)
        elif step.resume is not None:
            device = self.devices[self.scenario.resolve_device(step.resume) or ""]
            if device.state != "foreground":
                self._note(device.name, "back in the foreground")
                self._register(device)
        elif step.push_fails is not None:
            fault = step.push_fails
            scope = " ".join(x for x in (fault.provider, fault.device) if x) or "every push"
            self._note(PUSH, f"{scope} fails {fault.status} {fault.reason or ''}".rstrip())

    def _call_ref(self, step: Step) -> str:
        for ref, s in self.scenario.calls():
            if s is step:
                return ref
        raise AssertionError("a call step has an id")

    def _answerer(self, record: CallRecord) -> UserAgent | None:
        if not record.answers:
            return None
        who = record.answers[0][1]
        if who in self.devices:
            return self.devices[who]
        return self.voicemail if who == VOICEMAIL else self.gateway

    def _names(self, text: str) -> str:
        """``text`` with device instance URNs written as ``user.device``."""
        for ref, device in self.devices.items():
            if device.instance in text:
                text = text.replace(device.instance, ref)
        return text

    def _call_id_of(self, event: CallEvent) -> str | None:
        """The SIP Call-ID of a call event. ``CallEvent`` names the call by the engine's own
        reference only, so it is read from the engine while the call is alive (its first
        event, ``received``, always is) and remembered."""
        known = self._call_ids.get(event.call_ref)
        if known is None:
            calls = getattr(self.node.wake, "_calls", {})
            call = calls.get(event.call_ref)
            if call is not None:
                known = self._call_ids[event.call_ref] = call.request.call_id
        return known

    # -- node and agent outputs ---------------------------------------------------------------
    def _perform(self, outputs: Sequence[NodeOutput]) -> None:
        for output in outputs:
            match output:
                case SendBytes(data=data, peer=peer, message=message):
                    self._from_node(data, peer, message)
                case PersistChanges(token=token):
                    if token is not None:
                        self._perform(self.node.changes_stored(token, True, self._node_now()))
                case SendPush():
                    self._push(output)
                case CallEvent():
                    record = self.by_call_id.get(self._call_id_of(output) or "")
                    if record is not None:
                        record.steps.append(output)
                    detail = f" {self._names(output.detail)}" if output.detail else ""
                    self._note(SERVER, f"{output.step}{detail}")
                case Dropped(reason=reason):
                    self._note(SERVER, f"dropped: {reason}")

    def _from_node(self, data: bytes, peer: Peer, message: Request | Response | None) -> None:
        if message is None:
            message = parse_message(data, stream=peer.reliable)
        route = self.network.from_server(peer)
        self.record.messages += 1
        if route.agent is None or route.source is None:
            self._row(SERVER, route.name, _label(message), lost=route.lost)
            return
        self._row(SERVER, route.agent.name, _label(message))
        self.clock.schedule(
            self.now + self.network.delay_s,
            _ToAgent(agent=route.agent, data=data, source=route.source, message=message),
        )

    def _from_agent(self, agent: UserAgent, transmits: Sequence[Transmit]) -> None:
        for item in transmits:
            message = item.message
            self.record.messages += 1
            self._observe_sent(agent, message)
            self._row(agent.name, SERVER, _label(message))
            source = self.network.from_agent(agent, item.peer)
            self.clock.schedule(
                self.now + self.network.delay_s, _ToNode(data=message.to_bytes(), source=source)
            )

    def _push(self, push: SendPush) -> None:
        request = push.request
        device = self.by_token.get(request.target.prid)
        ref = device.name if device is not None else None
        record = PushRecordSeen(
            at=self.now,
            push_id=push.push_id,
            kind=request.kind,
            provider=request.target.base_provider,
            device=ref,
            call=(
                self.by_call_id[request.call_id].id if request.call_id in self.by_call_id else None
            ),
        )
        self.record.pushes.append(record)
        target = ref or "unknown device"
        self._row(SERVER, PUSH, f"{request.kind} push ({record.provider}) for {target}")
        outcome = self.sandbox.answer(request, at=self.now, device=ref)
        self.clock.schedule(
            self.now + self.sandbox.latency_s,
            _PushAnswer(push=push, outcome=outcome, record=record),
        )

    # -- observations --------------------------------------------------------------------
    def _observe_delivery(self, agent: UserAgent, message: Request | Response) -> None:
        record = self.by_call_id.get(message.call_id)
        if record is None:
            return
        if isinstance(message, Response):
            if agent.name == record.caller and message.cseq.method == "INVITE":
                if message.status < 200 and message.status != 100:
                    record.provisional.append((self.now, message.status))
                elif message.status >= 200 and record.final is None:
                    record.final = (self.now, message.status)
            return
        if message.method == "INVITE" and message.to.tag is None:
            if agent is self.voicemail:
                record.voicemail.append(self.now)
            elif agent is self.gateway:
                record.twin.append(self.now)

    def _observe_sent(self, agent: UserAgent, message: Request | Response) -> None:
        if not isinstance(message, Response) or message.cseq.method != "INVITE":
            return
        if not 200 <= message.status < 300:
            return
        record = self.by_call_id.get(message.call_id)
        if record is None:
            return
        who = agent.name
        if agent is self.gateway:
            uri = agent.incoming_uri(message.call_id) or ""
            who = next((m for n, m in self.numbers.items() if f"{n}@" in uri), GATEWAY)
        if all(w != who for _, w in record.answers):
            record.answers.append((self.now, who))

    # -- the ladder ---------------------------------------------------------------------
    def _row(self, src: str, dst: str, label: str, *, lost: str = "") -> None:
        self.record.rows.append(LadderRow(at=self.now, src=src, dst=dst, label=label, lost=lost))

    def _note(self, where: str, text: str) -> None:
        self.record.rows.append(LadderRow(at=self.now, src=where, dst="", label=text))

    def _columns(self) -> list[str]:
        used = {r.src for r in self.record.rows} | {r.dst for r in self.record.rows if r.dst}
        order = [
            *self.callers,
            SERVER,
            *self.devices,
            PUSH,
            VOICEMAIL,
            GATEWAY,
        ]
        extra = sorted(used - set(order))
        return [c for c in order if c in used] + extra


def _label(message: Request | Response) -> str:
    if isinstance(message, Request):
        return message.method
    if message.cseq.method == "INVITE":
        return f"{message.status} {message.reason}"
    return f"{message.status} ({message.cseq.method})"


def _outcome_text(outcome: PushOutcome) -> str:
    parts: list[str] = [outcome.status]
    if outcome.http_status is not None:
        parts.append(str(outcome.http_status))
    if outcome.reason:
        parts.append(outcome.reason)
    return " ".join(parts)


def _uuid(ref: str) -> str:
    d = _digest(f"instance:{ref}", 32)
    return f"{d[:8]}-{d[8:12]}-4{d[13:16]}-8{d[17:20]}-{d[20:32]}"


def replay(scenario: Scenario) -> Replay:
    """Run ``scenario`` on the virtual clock; what happened, for ``checks.evaluate``."""
    return _Runner(scenario).run()
