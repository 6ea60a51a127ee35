"""What the virtual and the real-time replay share: the cast, the timeline, the record.

``World`` builds one ``DeviceAgent`` per device, one ``CallerAgent`` per caller or
message sender, the voicemail and the twin gateway (``EndpointAgent``), and plays the
timeline's steps on them. How time passes and how bytes travel is the subclass's part:

* ``runner._Runner``: a ``VirtualClock`` and the in-memory ``FakeNetwork``, the node
  called directly;
* ``live.LiveRunner``: the event loop's clock, loopback sockets, an embedded
  ``sipwake.server.Server`` (or any SIP server at ``--target``).

Everything the agents see is written down the same way (``record.Replay``): ladder
rows, pushes and their outcomes, each call's provisional and final responses, who
answered, where messages arrived, which devices a push woke.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal

from sipwake.ids import SeededIds
from sipwake.proxy.plan import CallPlan, plan_for
from sipwake.proxy.wake import CallEvent
from sipwake.push.base import PushOutcome, PushRequest
from sipwake.scenario.agents import (
    AnswerPlan,
    CallerAgent,
    DeviceAgent,
    EndpointAgent,
    Transmit,
    UserAgent,
)
from sipwake.scenario.model import Device, Scenario, Step, User
from sipwake.scenario.pushview import clear_details, device_payload, open_push, push_key_of
from sipwake.scenario.record import (
    CallRecord,
    LadderRow,
    PushRecordSeen,
    Replay,
    outcome_text,
)
from sipwake.scenario.record import label as label_of
from sipwake.sip.grammar import split_commas
from sipwake.sip.message import Request, Response

__all__ = ["DOMAIN", "GATEWAY", "PUSH", "SERVER", "VOICEMAIL", "World", "push_params"]

DOMAIN = "lab.test"
SERVER = "sipwake"
PUSH = "push"
VOICEMAIL = "voicemail"
GATEWAY = "gateway"
TEAM = "TEAM123456"
BUNDLE = "org.lab.phone"
FCM_PROJECT = "lab-phone"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def push_params(ref: str, device: Device) -> tuple[str, dict[str, str]]:
    """The Contact parameters that carry ``device``'s push target, and its tokens, each
    with what it belongs to: its APNs topic (``<bundle>.voip`` for a PushKit VoIP token,
    ``<bundle>`` for a remote-notification one), its FCM project, or ``webpush``."""
    provider = device.provider
    if provider == "none":
        return "", {}
    token = _digest(f"token:{ref}", 64)
    legacy = device.push_params == "legacy"
    if provider == "apns":
        voip, remote = token, _digest(f"remote-token:{ref}", 64)
        voip_topic = f"{BUNDLE}.voip"
        match device.tokens:
            case "remote" if legacy:
                return (
                    f";pn-type=apple;app-id={BUNDLE}.prod;pn-tok={remote}",
                    {remote: BUNDLE},
                )
            case "remote":
                return f";pn-provider=apns;pn-param={TEAM}.{BUNDLE};pn-prid={remote}", {
                    remote: BUNDLE
                }
            case "voip&remote" | "remote&voip":
                tokens = {"voip": voip, "remote": remote}
                prid = "&".join(f"{tokens[s]}:{s}" for s in device.tokens.split("&"))
                params = (
                    f";pn-provider=apns;pn-param={TEAM}.{BUNDLE}.{device.tokens};pn-prid={prid}"
                )
                return params, {voip: voip_topic, remote: BUNDLE}
        if legacy:
            return (
                f";pn-type=apple;app-id={BUNDLE}.voip.prod;pn-tok={voip};pn-silent=1",
                {voip: voip_topic},
            )
        return f";pn-provider=apns;pn-param={TEAM}.{voip_topic};pn-prid={voip}", {voip: voip_topic}
    if provider == "fcm":
        token = f"{token[:22]}:APA91b{token[22:]}"
        if legacy:
            return f";pn-type=firebase;app-id={FCM_PROJECT};pn-tok={token}", {token: FCM_PROJECT}
        return f";pn-provider=fcm;pn-param={FCM_PROJECT};pn-prid={token}", {token: FCM_PROJECT}
    endpoint = f"https://push.lab.test/wp/{token[:40]}"
    return f";pn-provider=webpush;pn-prid={endpoint}", {endpoint: "webpush"}


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


def _uuid(ref: str) -> str:
    d = _digest(f"instance:{ref}", 32)
    return f"{d[:8]}-{d[8:12]}-4{d[13:16]}-8{d[17:20]}-{d[20:32]}"


class World:
    """The cast and the timeline of one replay (see the module text)."""

    def __init__(self, scenario: Scenario, *, embedded: bool = True) -> None:
        self.scenario = scenario
        self.embedded = embedded
        """Whether the server is sipwake's own (built by the replay), not a ``--target``."""
        self.record = Replay(scenario=scenario)
        self._agent_seq = 0
        self.devices: dict[str, DeviceAgent] = {}
        self.by_token: dict[str, DeviceAgent] = {}
        self.issued: list[tuple[str, str, str]] = []
        """(provider, token, APNs topic or FCM project) of every device token: what the
        push services were told of (``PushSandbox``, the mocks of a live replay)."""
        self.callers: dict[str, CallerAgent] = {}
        self.by_call_id: dict[str, CallRecord] = {}
        self.agents: list[UserAgent] = []
        self.numbers: dict[str, str] = {}
        """Mobile number → ``user.mobile``."""
        self._waking: set[str] = set()
        self._ignored: dict[str, int] = {}
        """``user.device`` → pushes it let pass without waking (``ignores_pushes``)."""
        self._call_ids: dict[str, str] = {}
        """The engine's call reference → SIP Call-ID."""
        self.push_keys: dict[str, bytes] = {}
        """``user.device`` → the push key its REGISTER's 200 gave it (``encrypt_push``)."""
        port = 7000
        for uname, user in scenario.users.items():
            for device in user.devices:
                port += 1
                ref = f"{uname}.{device.name}"
                params, tokens = push_params(ref, device)
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
                self.agents.append(agent)
                self.devices[ref] = agent
                for token, owner in tokens.items():
                    self.by_token[token] = agent
                    self.issued.append((device.provider, token, owner))
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
            default=AnswerPlan(ring=False, status=200, after=scenario.pbx.voicemail_answer_after_s),
        )
        self.gateway = EndpointAgent(
            name=GATEWAY,
            port=5095,
            ids=self._ids(),
            domain=DOMAIN,
            plans=mobiles,
            default=AnswerPlan(ring=False, status=404),
        )
        self.agents += [self.voicemail, self.gateway]
        for step in scenario.timeline:
            action = step.call or step.message
            if action is not None and action.from_ not in self.callers:
                caller = CallerAgent(
                    name=action.from_,
                    user=action.from_,
                    domain=DOMAIN,
                    port=6000 + len(self.callers),
                    ids=self._ids(),
                    display_name=action.from_.capitalize(),
                )
                self.callers[action.from_] = caller
                self.agents.append(caller)
        self._refs = {id(s): ref for ref, s in scenario.calls() + scenario.messages()}
        self._rotations: dict[int, tuple[str, dict[str, str]]] = {}
        """``rotate_token`` step → the device's new push parameters and tokens (issued to
        the push services from the start, as the app's next tokens already exist there)."""
        rotated: dict[str, int] = {}
        for step in scenario.timeline:
            if step.rotate_token is None:
                continue
            ref = scenario.resolve_device(step.rotate_token) or step.rotate_token
            rotated[ref] = rotated.get(ref, 0) + 1
            spec = scenario.device_refs()[ref][1]
            params, tokens = push_params(f"{ref}~{rotated[ref]}", spec)
            self._rotations[id(step)] = (params, tokens)
            for token, owner in tokens.items():
                self.issued.append((spec.provider, token, owner))
        self._give_credentials()

    @property
    def requires_auth(self) -> bool:
        """Whether the embedded server authenticates (some user of the scenario has a
        password); it is open, as before, when none has."""
        return any(u.password is not None for u in self.scenario.users.values())

    def _give_credentials(self) -> None:
        """Each device and caller that is a user with a password answers challenges."""
        users = self.scenario.users
        for agent in [*self.devices.values(), *self.callers.values()]:
            user = users.get(agent.user)
            if user is None or user.password is None:
                continue
            auth_user = user.auth_user
            if self.embedded and auth_user not in (None, agent.user):
                auth_user = None  # sipwake knows a user by its own name only
            agent.set_credentials(user.password, auth_user)

    def auth_notes(self) -> None:
        """Notes at the start about authentication (the subclass calls it once)."""
        if not self.embedded:
            return
        for name, user in self.scenario.users.items():
            if user.auth_user not in (None, name):
                self.note(
                    SERVER,
                    f"authenticates {name} as {name!r}: auth_user {user.auth_user!r} "
                    "applies against --target only",
                )

    # -- what a subclass provides ------------------------------------------------------
    @property
    def now(self) -> float:
        """Scenario time."""
        raise NotImplementedError

    def agent_now(self) -> float:
        """The time the agents' sans-IO cores are given."""
        raise NotImplementedError

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` seconds from now."""
        raise NotImplementedError

    def send_out(self, agent: UserAgent, transmit: Transmit) -> None:
        """Carry one message from ``agent`` to the server."""
        raise NotImplementedError

    def connect(self, device: DeviceAgent) -> None:
        """A new connection from ``device`` to the server (TCP/TLS), the old one closed."""
        raise NotImplementedError

    def disconnect(self, device: DeviceAgent) -> None:
        """``device``'s connection closes (the server notices)."""
        raise NotImplementedError

    def restart_server(self, down_s: float) -> None:
        raise NotImplementedError

    # -- construction helpers ------------------------------------------------------------
    def _ids(self) -> SeededIds:
        self._agent_seq += 1
        return SeededIds(self.scenario.seed * 10_007 + self._agent_seq)

    def plan(self, user: User | None, *, voicemail_uri: str, twin_gateway: str) -> CallPlan:
        """The scenario's call plan (of ``user``, or the system's)."""
        pbx = self.scenario.pbx
        overrides = pbx.model_dump(
            exclude={"preset", "voicemail", "voicemail_answer_after_s", "twin_gateway"}
        )
        twin = None
        dnd = None
        forwards: dict[str, str | None] = {}
        if user is not None:
            if user.mobile is not None:
                twin = twin_gateway.replace("{number}", user.mobile.number)
            dnd = True if user.dnd else None
            for name in ("forward_no_answer", "forward_busy"):
                to = getattr(user, name)
                forwards[name] = f"sip:{to}@{DOMAIN}" if to is not None else None
        voicemail = voicemail_uri if pbx.voicemail else None
        return plan_for(
            pbx.preset, voicemail=voicemail, twin=twin, dnd=dnd, **forwards, **overrides
        )

    def spec(self, device: DeviceAgent) -> Device:
        _, spec = self.scenario.device_refs()[device.name]
        return spec

    def device(self, ref: str) -> DeviceAgent:
        return self.devices[self.scenario.resolve_device(ref) or ref]

    # -- agents talk ---------------------------------------------------------------------
    def transmit(self, agent: UserAgent, transmits: Sequence[Transmit]) -> None:
        """What ``agent`` writes to the server: recorded, then sent (or lost)."""
        for failure in agent.auth_failures:
            self.note(agent.name, failure.removeprefix(f"{agent.who}: "))
            if failure not in self.record.auth_failures:
                self.record.auth_failures.append(failure)
        agent.auth_failures.clear()
        for item in transmits:
            message = item.message
            self.record.messages += 1
            if isinstance(agent, DeviceAgent) and agent.network_down:
                self.row(agent.name, SERVER, label_of(message), lost=f"{agent.name} has no network")
                continue
            self.observe_sent(agent, message)
            self.row(agent.name, SERVER, label_of(message))
            self.send_out(agent, item)

    def register(self, device: DeviceAgent) -> None:
        if device.transport != "udp":
            self.connect(device)
        self.transmit(
            device, device.register(self.agent_now(), expires=self.spec(device).expires_s)
        )

    def suspend(self, device: DeviceAgent) -> None:
        self.disconnect(device)
        device.suspend()
        if device.transport == "udp" and device.push_params:
            how = " (UDP: the server counts it as foreground until udp_foreground_s)"
        elif device.transport == "udp":
            how = " (UDP: pinged once quiet for udp_foreground_s, offline when it does not answer)"
        else:
            how = " (connection closed)"
        if not device.push_params:
            how += ": no push provider, unreachable until it resumes"
        self.note(device.name, "suspended" + how)

    def resume(self, device: DeviceAgent) -> None:
        """The app comes to the foreground: a new connection, REGISTER (an offline
        device that never registered comes online)."""
        if device.state == "foreground":
            self.note(device.name, "resume: already in the foreground, nothing changes")
            return
        how = "new connection, REGISTER" if device.transport != "udp" else "REGISTER"
        if device.state == "offline":
            self.note(device.name, f"comes online: {how}")
        else:
            self.note(device.name, f"back in the foreground: {how}")
        if device.network_down:
            self.note(device.name, "no network: it registers when the network is back")
            device.state = "foreground"
            return
        self.register(device)

    # -- the timeline ----------------------------------------------------------------------
    def run_step(self, step: Step) -> None:
        now = self.agent_now()
        if step.call is not None:
            caller = self.callers[step.call.from_]
            ref = self._refs[id(step)]
            call_id, out = caller.invite(ref, step.call.to, now)
            self._new_record(ref, caller, step.call.to, call_id, "call")
            self.transmit(caller, out)
        elif step.message is not None:
            action = step.message
            sender = self.callers[action.from_]
            ref = self._refs[id(step)]
            call_id, out = sender.message(ref, action.to, action.text, now)
            self._new_record(ref, sender, action.to, call_id, "message")
            self.transmit(sender, out)
        elif step.hangup is not None or step.cancel is not None:
            what = step.hangup or step.cancel
            assert what is not None
            record = self.record.call(what.call)
            if record is None:
                return
            caller = self.callers[record.caller]
            if step.cancel is not None:
                self.transmit(caller, caller.cancel(record.id, now))
            elif step.hangup is not None and step.hangup.by == "callee":
                answerer = self._answerer(record)
                if answerer is not None:
                    self.transmit(answerer, answerer.bye(record.call_id, now))
            else:
                self.transmit(caller, caller.hangup(record.id, now))
        elif step.suspend is not None:
            device = self.device(step.suspend)
            if device.state == "foreground":
                self.suspend(device)
            else:
                self.note(device.name, f"suspend: already {device.state}, nothing changes")
        elif step.resume is not None:
            self.resume(self.device(step.resume))
        elif step.push_fails is not None:
            fault = step.push_fails
            scope = " ".join(x for x in (fault.provider, fault.device) if x) or "every push"
            self.note(PUSH, f"{scope} fails {fault.status} {fault.reason or ''}".rstrip())
        elif step.network_loss is not None:
            self._lose_network(self.device(step.network_loss.device), step.network_loss.for_s)
        elif step.restart_server is not None:
            self.note(SERVER, f"restarts (down for {step.restart_server.down_s:g} s)")
            self.restart_server(step.restart_server.down_s)
        elif step.dnd is not None:
            self._dial_dnd(step.dnd)
        elif step.logout is not None:
            self._logout(self.device(step.logout))
        elif step.rotate_token is not None:
            self._rotate_token(self.device(step.rotate_token), *self._rotations[id(step)])

    # -- runtime DND, logout, new push tokens --------------------------------------------
    def _dial_dnd(self, action: str) -> None:
        """``dnd: USER on``: a phone of the user dials ``*78`` (``off``: ``*79``)."""
        who, state = action.split(" ", 1)
        if "." in who:
            device = self.device(who)
        else:
            mine = [d for d in self.devices.values() if d.user == who]
            device = next((d for d in mine if d.reachable), mine[0])
        code = "*78" if state == "on" else "*79"
        if not device.reachable:
            self.note(device.name, f"comes to the foreground to dial {code}")
            self.resume(device)
        self.note(device.name, f"dials {code} (do not disturb {state})")
        self.transmit(device, device.dial_feature_code(code, self.agent_now()))

    def _logout(self, device: DeviceAgent) -> None:
        """REGISTER ``Expires: 0`` for the device's contact, then offline."""
        if device.state == "offline":
            self.note(device.name, "logout: not registered, nothing changes")
            return
        self.note(device.name, "logs out: REGISTER Expires: 0")
        if device.transport != "udp" and (device.flow is None or device.state != "foreground"):
            self.connect(device)
        self.transmit(device, device.register(self.agent_now(), expires=0))

        def close() -> None:  # once its 200 is in: the connection closes, the app is off
            self.disconnect(device)
            device.go_offline()

        self.later(0.5, close)

    def _rotate_token(self, device: DeviceAgent, params: str, tokens: dict[str, str]) -> None:
        """The app's push tokens change: the old ones reach nobody any more, and it
        registers again with the new ``pn-prid`` (same ``+sip.instance``)."""
        for token in [t for t, d in self.by_token.items() if d is device]:
            del self.by_token[token]
        for token in tokens:
            self.by_token[token] = device
        device.push_params = params
        was = device.state
        self.note(device.name, "new push token: REGISTER with the new pn-prid")
        if was == "offline":
            return  # it registers with the new token when it comes online
        if device.network_down:
            return
        if was == "suspended" and device.transport != "udp":
            self.connect(device)
        self.transmit(device, device.register(self.agent_now()))
        if was == "suspended":

            def back_to_sleep() -> None:
                if device.state == "foreground":
                    self.suspend(device)

            self.later(0.5, back_to_sleep)

    def _new_record(
        self,
        ref: str,
        caller: UserAgent,
        to: str,
        call_id: str,
        kind: Literal["call", "message"],
    ) -> CallRecord:
        record = CallRecord(
            id=ref, caller=caller.name, callee=to, start=self.now, call_id=call_id, kind=kind
        )
        self.record.calls[ref] = record
        self.by_call_id[call_id] = record
        return record

    def _answerer(self, record: CallRecord) -> UserAgent | None:
        if not record.answers:
            return None
        who = record.answers[0][1]
        if who in self.devices:
            return self.devices[who]
        return self.voicemail if who == VOICEMAIL else self.gateway

    def _lose_network(self, device: DeviceAgent, for_s: float) -> None:
        self.note(device.name, f"loses its network for {for_s:g} s")
        device.network_down = True
        self.disconnect(device)
        self.later(for_s, lambda: self._network_back(device))

    def _network_back(self, device: DeviceAgent) -> None:
        device.network_down = False
        waiting, device.push_waiting = device.push_waiting, False
        if device.state == "foreground":
            self.note(device.name, "network back: new connection, REGISTER")
            self.register(device)
        elif waiting:
            self.note(device.name, "network back: the waiting push arrives")
            self.wake_later(device)

    def server_back(self) -> None:
        """The server is up again: devices whose connection it closed reconnect."""
        for device in self.devices.values():
            awake = device.state == "foreground" and not device.network_down
            if awake and device.transport != "udp":
                self.note(device.name, "server back: new connection, REGISTER")
                self.register(device)

    # -- pushes --------------------------------------------------------------------------
    def push_sent(self, request: PushRequest, push_id: int) -> PushRecordSeen:
        """The server handed a push to the push service."""
        channel = request.target.channel("call" if request.kind == "call" else "alert")
        device = self.by_token.get(channel.prid if channel is not None else request.target.prid)
        ref = device.name if device is not None else None
        record = PushRecordSeen(
            at=self.now,
            push_id=push_id,
            kind=request.kind,
            provider=request.target.base_provider,
            device=ref,
            call=(
                self.by_call_id[request.call_id].id if request.call_id in self.by_call_id else None
            ),
            topic=None if channel is None else channel.apns_topic,
        )
        payload = device_payload(request, bundle=BUNDLE, project=FCM_PROJECT)
        if payload is not None:
            record.payload = payload
            record.clear = clear_details(payload, request)
        self.record.pushes.append(record)
        target = ref or "unknown device"
        self.row(SERVER, PUSH, f"{request.kind} push ({record.provider}) for {target}")
        return record

    def push_answered(self, record: PushRecordSeen, outcome: PushOutcome) -> None:
        """The push service answered (and, when it delivered, the device got the push)."""
        record.outcome = outcome
        record.answered_at = self.now
        text = "delivered" if outcome.status == "delivered" else outcome_text(outcome)
        self.row(PUSH, SERVER, text)
        if outcome.status == "delivered" and record.device is not None:
            self.push_arrives(self.devices[record.device], record.kind, record)

    def _open(self, record: PushRecordSeen) -> bool:
        """The app opens a push with sealed call details (``enc``) with its push key; one
        it cannot open does not wake it (it would not know which call to show)."""
        if record.payload is None or "enc" not in record.payload or record.device is None:
            return True
        try:
            record.opened = open_push(record.payload, self.push_keys.get(record.device))
        except ValueError as exc:
            record.open_error = str(exc)
            self.note(record.device, f"cannot open the {record.kind} push: {exc}")
            return False
        caller = record.opened.get("name") or record.opened.get("caller") or "?"
        self.note(record.device, f"opened the {record.kind} push: from {caller}")
        return True

    def push_arrives(
        self, device: DeviceAgent, kind: str, record: PushRecordSeen | None = None
    ) -> None:
        if device.network_down:
            self.note(device.name, f"{kind} push waits: no network")
            device.push_waiting = device.push_waiting or kind in ("call", "message")
            return
        self.row(PUSH, device.name, f"{kind} push")
        if record is not None and not self._open(record):
            return
        if kind == "refresh":
            self.refresh_later(device)
            return
        if kind in ("call", "message"):
            ignored = self._ignored.get(device.name, 0)
            if ignored < self.spec(device).ignores_pushes and device.state == "suspended":
                self._ignored[device.name] = ignored + 1
                self.note(device.name, f"{kind} push delivered, but the app does not wake")
                return
            self.wake_later(device)

    def wake_later(self, device: DeviceAgent) -> None:
        if device.state != "suspended" or device.name in self._waking:
            return
        delay = self.spec(device).wake_delay_s
        if delay == "never":
            self.note(device.name, "push arrives but the app never wakes")
            return
        self._waking.add(device.name)
        self.later(float(delay), lambda: self._wake(device))

    def refresh_later(self, device: DeviceAgent) -> None:
        """A refresh push: a suspended app runs in the background for a moment,
        re-registers and is suspended again (an awake one refreshes by itself)."""
        if device.state != "suspended" or device.name in self._waking:
            return
        delay = self.spec(device).wake_delay_s
        if delay == "never":
            self.note(device.name, "refresh push arrives but the app never wakes")
            return
        self._waking.add(device.name)
        self.later(float(delay), lambda: self._refresh(device))

    def _refresh(self, device: DeviceAgent) -> None:
        self._waking.discard(device.name)
        if device.state != "suspended" or device.network_down:
            return
        self.note(device.name, "woken in the background by the refresh push: REGISTER")
        self.record.refreshes.append((self.now, device.name))
        self.register(device)
        self.later(1.0, lambda: self._back_to_sleep(device))

    def _back_to_sleep(self, device: DeviceAgent) -> None:
        if device.state == "foreground" and not device.network_down:
            self.suspend(device)

    def _wake(self, device: DeviceAgent) -> None:
        self._waking.discard(device.name)
        if device.state == "suspended" and not device.network_down:
            self.note(device.name, "woken by the push: new connection, REGISTER")
            self.record.wakes.append((self.now, device.name))
            self.register(device)

    # -- the server's call steps ------------------------------------------------------------
    def call_event(self, event: CallEvent, calls: dict[str, object]) -> None:
        """A step of the server's call engine; ``calls`` its live calls (for the Call-ID)."""
        record = self.by_call_id.get(self._call_id_of(event, calls) or "")
        if record is not None:
            record.steps.append(event)
        detail = f" {self._names(event.detail)}" if event.detail else ""
        self.note(SERVER, f"{event.step}{detail}")

    def _names(self, text: str) -> str:
        """``text`` with device instance URNs written as ``user.device``."""
        for ref, device in self.devices.items():
            if device.instance in text:
                text = text.replace(device.instance, ref)
        return text

    def _call_id_of(self, event: CallEvent, calls: dict[str, object]) -> str | None:
        """The SIP Call-ID of a call event. ``CallEvent`` names the call by the engine's own
        reference only, so it is read from the engine while the call is alive (its first
        event, ``received``, always is) and remembered."""
        known = self._call_ids.get(event.call_ref)
        if known is None:
            call = calls.get(event.call_ref)
            request = getattr(call, "request", None)
            if isinstance(request, Request):
                known = self._call_ids[event.call_ref] = request.call_id
        return known

    # -- observations --------------------------------------------------------------------
    def observe_delivery(self, agent: UserAgent, message: Request | Response) -> None:
        """``message`` reached ``agent``."""
        if (
            isinstance(agent, DeviceAgent)
            and isinstance(message, Response)
            and message.cseq.method == "REGISTER"
            and 200 <= message.status < 300
        ):
            key = push_key_of(message)  # each 200 over TLS repeats it; none: no key
            if key is None:
                self.push_keys.pop(agent.name, None)
            else:
                self.push_keys[agent.name] = key
        record = self.by_call_id.get(message.call_id)
        if record is None:
            return
        if isinstance(message, Response):
            if agent.name != record.caller:
                return
            method = message.cseq.method
            if method == "INVITE" and message.status < 200 and message.status != 100:
                record.provisional.append((self.now, message.status))
            elif (
                method in ("INVITE", "MESSAGE")
                and message.status >= 200
                and not record.final
                and not agent.will_answer(message)  # a challenge it answers: not the end
            ):
                record.final = (self.now, message.status)
            return
        if message.method == "MESSAGE" and isinstance(agent, DeviceAgent):
            record.delivered.append((self.now, agent.name))
        elif message.method == "CANCEL" and isinstance(agent, DeviceAgent):
            reason = ", ".join(message.headers.values("Reason")) or None
            record.device_cancels.append((self.now, agent.name, reason))
        elif message.method == "INVITE" and isinstance(agent, DeviceAgent):
            if message.to.tag is None:
                record.device_invites.append((self.now, agent.name))
                diversion = tuple(message.headers.values("Diversion"))
                history = tuple(
                    entry
                    for value in message.headers.values("History-Info")
                    for entry in split_commas(value)
                )
                if diversion or history:
                    record.forwards.append((self.now, agent.name, diversion, history))
        elif message.method == "INVITE" and message.to.tag is None:
            if agent is self.voicemail:
                record.voicemail.append(self.now)
            elif agent is self.gateway:
                record.twin.append(self.now)

    def observe_sent(self, agent: UserAgent, message: Request | Response) -> None:
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
    def row(self, src: str, dst: str, label: str, *, lost: str = "") -> None:
        self.record.rows.append(LadderRow(at=self.now, src=src, dst=dst, label=label, lost=lost))

    def note(self, where: str, text: str) -> None:
        self.record.rows.append(LadderRow(at=self.now, src=where, dst="", label=text))

    def columns(self) -> list[str]:
        used = {r.src for r in self.record.rows} | {r.dst for r in self.record.rows if r.dst}
        order = [*self.callers, SERVER, *self.devices, PUSH, VOICEMAIL, GATEWAY]
        extra = sorted(used - set(order))
        return [c for c in order if c in used] + extra
