"""The call-wake engine: INVITE to a user whose phones may be asleep (DESIGN.md).

Theory of operation
-------------------
The node classifies the called user's bindings (``Device``: foreground,
suspended, offline) and hands them in with the user's ``CallPlan``. The
engine then, for one call:

1. forks to every foreground device at once (the proxy sends 100 Trying);
2. pushes every suspended device (``SendPush``; the driver performs it and
   reports back with ``push_completed``), tells the caller (180 Ringing,
   110 Push sent, or nothing) and holds the proxy context open (RFC 8599
   push bucket) — the proxy then reports ``BranchesDone`` instead of
   answering when its branches run out;
3. adds a branch for every device of the user that registers while the call
   is unanswered (``registered``): the woken phone (same binding id: the
   registrar matched it by instance or push token) or a new one (late
   forking);
4. at the mobile dial delay adds the twin branch; at the no-answer time
   cancels every branch and diverts (RFC 4458 voicemail URI, Diversion,
   History-Info) or answers the plan's no-answer status;
5. on busy everywhere diverts to the busy target; with DND diverts at once
   and pushes nobody; when the caller cancels, or another device answers,
   tells devices still waking (the plan's ``cancel_notice``): a "cancel"
   alert push to the device's remote-notification token (never a VoIP push:
   PushKit wants every VoIP push reported as a call; a device with no remote
   token gets none), or (Flexisip, ``invite-cancel``) the
   call's INVITE followed at once by a CANCEL when the device registers
   within ``cancel_replay_s`` — with ``Reason: SIP;cause=200;text="Call
   completed elsewhere"`` (RFC 3326) when another device answered, 603 when
   one declined, the caller's own Reason (or none) when the caller gave up;
6. re-pushes (``repush_interval_s``): a device whose call push the service
   accepted but that has not registered ``repush_interval_s`` after it was
   sent gets the call push again, with the same call UUID, until it registers
   or the call ends (an accepted push may still be lost: an app the system
   killed, a push the service held back); each re-push is one more
   ``push-sent`` step (``try N``);
7. retries a push that failed transiently (backoff, or the provider's
   Retry-After) inside the no-answer window; a push refused for good drops
   that token from the binding (``DropPushTarget``: the other token of an iOS
   device stays; an APNs 410 older than the binding's last REGISTER drops
   nothing) and, when nothing is left to wait for, ends the wait at once
   instead of at the no-answer time. A refusal that names our configuration
   (``DeviceTokenNotForTopic``, ``SENDER_ID_MISMATCH``…) keeps the token.

Calls go to a device's call channel (its PushKit VoIP token on iOS), alerts
(missed call, cancel notice, message) to its alert channel (the remote token):
``PushTarget.channel``.

Every step is written down as a ``CallEvent`` (call records, ladders). The
engine keeps no clock: ``now`` comes in with every call, and
``next_deadline``/``handle_timeout`` drive its timers.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from sipwake.errors import LocalProtocolError
from sipwake.frozen import interpreted_init
from sipwake.ids import Ids
from sipwake.proxy.core import COMPLETED_ELSEWHERE, Proxy, ProxyOutput, Target
from sipwake.proxy.plan import CallPlan
from sipwake.proxy.routing import LocalAddress
from sipwake.push.base import PushKind, PushOutcome, PushRequest
from sipwake.registrar.bindings import Binding
from sipwake.registrar.state import ClientState
from sipwake.sip.message import Request
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PushTarget
from sipwake.sip.uri import SipUri
from sipwake.transaction.keys import ServerTransactionKey

__all__ = [
    "CallEvent",
    "CallStep",
    "Device",
    "DropPushTarget",
    "SendPush",
    "WakeEngine",
    "WakeOutput",
]

CallStep = Literal[
    "received",
    "forked",
    "push-sent",
    "push-result",
    "push-refused",
    "registered",
    "ringback",
    "twin",
    "answered",
    "declined",
    "busy",
    "no-answer",
    "diverted",
    "cancelled",
    "failed",
    "ended",
    "invite-cancel",
]


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Device:
    """One binding of the called user, classified by the node."""

    binding: Binding
    state: ClientState
    target: Target | None
    """How to reach it now (None: not reachable without a wake)."""

    def __init__(self, *, binding: Binding, state: ClientState, target: Target | None) -> None:
        self.binding = binding  # type: ignore[misc]
        self.state = state  # type: ignore[misc]
        self.target = target  # type: ignore[misc]


interpreted_init(Device)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendPush:
    """Send ``request`` and report the outcome with ``push_completed(push_id, …)``."""

    push_id: int
    request: PushRequest
    binding_id: str
    aor: str
    call_ref: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DropPushTarget:
    """The provider refused the token for good: stop pushing this binding with token
    ``prid`` (if it still has it; a device that re-registered with a new one keeps it,
    and an iOS device keeps its other token)."""

    binding_id: str
    prid: str
    unregistered_at: float | None = None
    """Monotonic time the provider says the token stopped being valid (APNs 410
    ``timestamp``): a binding registered after it keeps the token. None: drop it."""
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CallEvent:
    """One step of a call's timeline (call records, ``sipwake calls show``)."""

    call_ref: str
    aor: str
    at: float
    step: CallStep
    detail: str = ""
    call_id: str = ""
    """The caller's SIP Call-ID (the same on every branch)."""

    def __init__(
        self,
        *,
        call_ref: str,
        aor: str,
        at: float,
        step: CallStep,
        detail: str = "",
        call_id: str = "",
    ) -> None:
        self.call_ref = call_ref  # type: ignore[misc]
        self.aor = aor  # type: ignore[misc]
        self.at = at  # type: ignore[misc]
        self.step = step  # type: ignore[misc]
        self.detail = detail  # type: ignore[misc]
        self.call_id = call_id  # type: ignore[misc]


interpreted_init(CallEvent)


WakeOutput = ProxyOutput | SendPush | DropPushTarget | CallEvent

_WakeState = Literal["pushing", "waiting", "registered", "failed"]


@dataclass(slots=True)
class _Wake:
    """One device being woken for one call."""

    binding_id: str
    push: PushTarget
    """The call channel: where the call's pushes go (the VoIP token on iOS)."""
    alert: PushTarget | None = None
    """The alert channel: where its cancel notice goes (None: no remote token)."""
    state: _WakeState = "pushing"
    attempts: int = 0
    """Sends of the current push (the first, then its transient retries)."""
    tries: int = 0
    """Call pushes sent to the device for this call, re-pushes included."""
    seal_key: bytes | None = field(default=None, repr=False)
    """The device's push key (``calls.encrypt_push`` seals call details with it)."""


@dataclass(slots=True, kw_only=True, init=False)
class _Call:
    ref: str
    uuid: str
    """The call's UUID in pushes (CallKit's call identity): 122 random bits."""
    key: ServerTransactionKey
    aor: str
    plan: CallPlan
    request: Request | None
    """The caller's INVITE, until the call is ``done``: the record then lingers with the
    INVITE's server transaction (Timer L, 32 s), and keeps only what its events read."""
    call_id: str
    no_answer_at: float
    started: float = 0.0
    twin_at: float | None = None
    wakes: dict[str, _Wake] = field(default_factory=dict)
    forked: tuple[str, ...] = ()
    """Binding ids with a branch: a tuple of str, which the garbage collector stops
    tracking once it has seen it (a set it tracks as long as the call record lingers)."""
    diverted: bool = False
    done: bool = False
    reached: bool = False
    """Some device got a branch (no-answer cause 408 rather than 480)."""

    def __init__(  # written: compiled with the core (sipwake/frozen.py)
        self,
        *,
        ref: str,
        uuid: str,
        key: ServerTransactionKey,
        aor: str,
        plan: CallPlan,
        request: Request | None,
        call_id: str,
        no_answer_at: float,
        started: float = 0.0,
        twin_at: float | None = None,
        wakes: dict[str, _Wake] | None = None,
        forked: tuple[str, ...] = (),
        diverted: bool = False,
        done: bool = False,
        reached: bool = False,
    ) -> None:
        self.ref = ref
        self.uuid = uuid
        self.key = key
        self.aor = aor
        self.plan = plan
        self.request = request
        self.call_id = call_id
        self.no_answer_at = no_answer_at
        self.started = started
        self.twin_at = twin_at
        self.wakes = {} if wakes is None else wakes
        self.forked = forked
        self.diverted = diverted
        self.done = done
        self.reached = reached

    def invite(self) -> Request:
        """The caller's INVITE, while the call is not done."""
        if self.request is None:
            raise LocalProtocolError(f"call {self.ref} is done: its INVITE is gone")
        return self.request

    def finish(self) -> None:
        """The call is decided: nothing reads its INVITE any more."""
        self.done = True
        self.request = None


@dataclass(frozen=True, slots=True)
class _Replay:
    """A call that ended while a device was waking for it (``invite-cancel``): when the
    device registers before ``until``, it gets the INVITE and then a CANCEL."""

    call_ref: str
    call_id: str
    aor: str
    request: Request
    reason: str | None
    until: float


#: RFC 3326 Reason of the CANCEL after a replayed INVITE, by why the call ended.
_NOTICE_REASONS = {
    "answered elsewhere": COMPLETED_ELSEWHERE,
    "declined": 'SIP;cause=603;text="Declined"',
}


@dataclass(frozen=True, slots=True)
class _PushJob:
    call_ref: str | None
    binding_id: str
    kind: PushKind
    prid: str


_Timer = tuple[float, int, str, str]
"""(deadline, order, call ref, what: ``no-answer``, ``twin``, ``retry:<binding id>`` or
``repush:<binding id>``)."""


class WakeEngine:
    """Calls to local users: push, hold, late forking, twinning, no-answer diversion."""

    def __init__(
        self,
        *,
        proxy: Proxy,
        ids: Ids,
        resolve: Callable[[str, float], list[Target]],
    ) -> None:
        self._proxy = proxy
        self._ids = ids
        self._resolve = resolve
        """Targets for a divert/twin URI (a local user's devices, or the URI's host)."""
        self._calls: dict[str, _Call] = {}
        self._by_key: dict[ServerTransactionKey, _Call] = {}
        self._by_aor: dict[str, dict[str, _Call]] = {}
        self._jobs: dict[int, _PushJob] = {}
        self._replays: dict[str, list[_Replay]] = {}
        """Binding id → calls that ended while it was waking (``invite-cancel``)."""
        self._push_seq = 0
        self._timers: list[_Timer] = []
        self._timer_seq = 0

    def waits_for(self, aor: str) -> bool:
        """Whether a call to ``aor`` is in progress (a device registering may join it)."""
        return aor in self._by_aor

    def __len__(self) -> int:
        return len(self._calls)

    def call_for(self, key: ServerTransactionKey) -> str | None:
        call = self._by_key.get(key)
        return None if call is None else call.ref

    # -- a new call ---------------------------------------------------------------
    def invite(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        aor: str,
        plan: CallPlan,
        devices: list[Device],
        now: float,
        *,
        may_push: bool = True,
    ) -> list[WakeOutput]:
        """A new call to ``aor``'s ``devices``; with ``may_push`` False (a rate limit,
        ``sipwake.proxy.ratelimit``) only devices in the foreground ring, nobody is pushed."""
        ref = self._ids.token(10)
        call = _Call(
            ref=ref,
            uuid=_uuid_from(self._ids.token(32)),
            key=key,
            aor=aor,
            plan=plan,
            request=request,
            call_id=request.call_id,
            no_answer_at=now + plan.no_answer_s,
        )
        caller = request.from_.uri
        out: list[WakeOutput] = [self._event(call, now, "received", f"from {caller}")]
        if plan.dnd:
            out += self._proxy.fork(key, request, source, listener, [], now, hold=True)
            self._track(call)
            out.append(self._event(call, now, "no-answer", "do not disturb"))
            return out + self._divert(call, 480, now, reason="dnd")
        ring = [d for d in devices if d.state != "suspended" and d.target is not None]
        wake = [d for d in devices if self._should_push(d, plan)]
        if plan.single_ios_device:
            wake = _last_ios_device(wake, devices, plan)
        if wake and not may_push:
            out.append(self._event(call, now, "push-refused", "rate limit: no push"))
            wake = []
        # A device both rung and pushed (Cisco iOS 13) is forked now and pushed anyway.
        out += self._proxy.fork(
            key, request, source, listener, [d.target for d in ring if d.target], now, hold=True
        )
        self._track(call)
        for device in ring:
            call.forked += (device.binding.binding_id,)
            call.reached = True
            out.append(self._event(call, now, "forked", _label(device.binding)))
        for device in wake:
            push = device.binding.push
            call_channel = push.channel("call") if push is not None else None
            if push is None or call_channel is None:  # _should_push chose pushable ones
                continue
            wake_entry = _Wake(
                binding_id=device.binding.binding_id,
                push=call_channel,
                alert=push.channel("alert"),
                seal_key=device.binding.seal_key,
            )
            call.wakes[wake_entry.binding_id] = wake_entry
            out += self._send_call_push(call, wake_entry, now)
        pushed = bool(wake)
        call.no_answer_at = now + plan.no_answer_after(pushed)
        self._arm(call, call.no_answer_at, "no-answer")
        for wake_entry in call.wakes.values():
            self._arm_repush(call, wake_entry, now)
        if plan.twin and plan.mobile_dial_delay_s < plan.no_answer_after(pushed):
            call.twin_at = now + plan.mobile_dial_delay_s
            self._arm(call, call.twin_at, "twin")
        if pushed and plan.ringback != "100" and not call.done:
            status, reason = (180, "Ringing") if plan.ringback == "180" else (110, "Push sent")
            out += self._proxy.provisional(key, status, now, reason)
            out.append(self._event(call, now, "ringback", f"{status} {reason}"))
        if not ring and not pushed:
            out += self._settle(call, now)
        return out

    # -- what happens during the call ------------------------------------------------------
    def registered(self, binding: Binding, target: Target | None, now: float) -> list[WakeOutput]:
        """``binding`` was just added or refreshed (and stored): fork to it in every call to
        its user that is still ringing (the woken device, or a device registering late),
        and send it the calls that ended while it was waking (``invite-cancel``)."""
        if target is None:
            return []
        out = self._replay(binding, target, now)
        calls = self._by_aor.get(binding.aor)
        if not calls:
            return out
        bid = binding.binding_id
        for call in list(calls.values()):
            if call.done or call.diverted or bid in call.forked:
                continue
            if any(s >= 600 for s in self._proxy.final_statuses(call.key)):
                continue
            wake = call.wakes.get(bid)
            if wake is not None:
                wake.state = "registered"
                out.append(self._event(call, now, "registered", _label(binding)))
            call.forked += (bid,)
            call.reached = True
            out += self._proxy.add_target(call.key, target, now)
            out.append(self._event(call, now, "forked", _label(binding)))
        return out

    def push_completed(
        self, push_id: int, outcome: PushOutcome, now: float, *, wall: float | None = None
    ) -> list[WakeOutput]:
        """The driver's report on ``SendPush(push_id)``; ``wall`` (UNIX seconds, read at
        the same moment as ``now``) dates an APNs 410's ``timestamp`` on the monotonic
        clock, so the token is kept when the device registered again since."""
        job = self._jobs.pop(push_id, None)
        if job is None:
            return []
        call = self._calls.get(job.call_ref) if job.call_ref else None
        out: list[WakeOutput] = []
        detail = f"{job.kind} {outcome.provider} {outcome.status}"
        if outcome.reason:
            detail += f" {outcome.reason}"
        if call is not None:
            out.append(self._event(call, now, "push-result", detail))
        wake = call.wakes.get(job.binding_id) if call is not None else None
        if outcome.status == "invalid_target":
            since = None
            if outcome.unregistered_at is not None and wall is not None:
                since = now - max(0.0, wall - outcome.unregistered_at)
            out.append(
                DropPushTarget(
                    binding_id=job.binding_id,
                    prid=job.prid,
                    unregistered_at=since,
                    reason=outcome.reason,
                )
            )
        if call is None or wake is None or job.kind != "call" or wake.state != "pushing":
            return out
        match outcome.status:
            case "delivered":
                wake.state = "waiting"
            case "retry" if wake.attempts < call.plan.push_attempts and not call.done:
                delay = outcome.retry_after
                if delay is None:
                    delay = call.plan.push_backoff_s * 2 ** (wake.attempts - 1)
                if now + delay < call.no_answer_at:
                    self._arm(call, now + delay, f"retry:{wake.binding_id}")
                    return out
                wake.state = "failed"
                out += self._settle(call, now)
            case _:
                wake.state = "failed"
                out += self._settle(call, now)
        return out

    def branches_done(self, key: ServerTransactionKey, now: float) -> list[WakeOutput]:
        """Every branch of a held context has a final response."""
        call = self._by_key.get(key)
        if call is None:
            return list(self._proxy.release(key, now))
        return self._settle(call, now)

    def answered(self, key: ServerTransactionKey, target: Target, now: float) -> list[WakeOutput]:
        call = self._by_key.get(key)
        if call is None or call.done:
            return []
        out: list[WakeOutput] = [self._event(call, now, "answered", target.label)]
        return out + self._finish(call, now, "answered elsewhere")

    def cancelled(
        self, key: ServerTransactionKey, now: float, *, reason: str | None = None
    ) -> list[WakeOutput]:
        """The caller sent CANCEL (the proxy answers 487 and cancels the branches);
        ``reason`` is its RFC 3326 Reason header, if it had one."""
        call = self._by_key.get(key)
        if call is None or call.done:
            return []
        out: list[WakeOutput] = [self._event(call, now, "cancelled", "by the caller")]
        return out + self._finish(call, now, "missed call", reason=reason)

    def ended(self, key: ServerTransactionKey) -> None:
        """The server transaction is gone: forget the call."""
        call = self._by_key.pop(key, None)
        if call is None:
            return
        call.done = True
        self._calls.pop(call.ref, None)
        calls = self._by_aor.get(call.aor)
        if calls is not None:
            calls.pop(call.ref, None)
            if not calls:
                del self._by_aor[call.aor]

    def message_push(
        self,
        aor: str,
        binding: Binding,
        request: Request,
        text: str | None,
        *,
        private: bool = False,
    ) -> SendPush | None:
        """An alert push for an instant message held for a suspended device (``private``:
        the plan's ``encrypt_push``); None when the device has no alert channel (an iOS
        app that registered only its VoIP token: the message waits for its next
        REGISTER)."""
        target = binding.push.channel("alert") if binding.push is not None else None
        if target is None:
            return None
        push = PushRequest(
            kind="message",
            target=target,
            call_id=request.call_id,
            caller=_caller_name(request),
            body=text,
            caller_number=_caller_number(request),
            private=private,
            seal_key=binding.seal_key,
        )
        return self._new_push(None, binding.binding_id, push, aor=aor)

    def refresh_push(self, binding: Binding) -> SendPush | None:
        """A silent push asking ``binding``'s suspended app to re-register before the
        binding expires (RFC 8599 §5.5; ``sipwake.registrar.refresh`` says when). It
        goes to the alert channel (the remote token on iOS: a VoIP push that is not a
        call breaks PushKit's rule), so None for an iOS app that registered only its
        VoIP token. A refusal as a dead token drops it like any push
        (``push_completed``)."""
        target = binding.push.channel("alert") if binding.push is not None else None
        if target is None:
            return None
        push = PushRequest(kind="refresh", target=target, call_id="")
        return self._new_push(None, binding.binding_id, push, aor=binding.aor)

    # -- timers -------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers:
            deadline, _, ref, what = timers[0]
            if self._timer_live(ref, what):
                return deadline
            heapq.heappop(timers)
        return None

    def handle_timeout(self, now: float) -> list[WakeOutput]:
        out: list[WakeOutput] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, ref, what = heapq.heappop(timers)
            if not self._timer_live(ref, what):
                continue
            call = self._calls[ref]
            if what == "no-answer":
                out.append(
                    self._event(call, now, "no-answer", f"after {call.plan.no_answer_s:g} s")
                )
                cause = 408 if call.reached else 480
                out += self._divert(
                    call, cause, now, reason="no-answer", status=call.plan.no_answer_status
                )
            elif what == "twin":
                call.twin_at = None
                out += self._add_twin(call, now)
            elif what.startswith("repush:"):
                out += self._repush(call, what.removeprefix("repush:"), now)
            else:
                wake = call.wakes.get(what.removeprefix("retry:"))
                if wake is not None and wake.state == "pushing":
                    out += self._send_call_push(call, wake, now)
        return out

    def _arm_repush(self, call: _Call, wake: _Wake, now: float) -> None:
        """Re-push ``wake`` after the plan's interval, if that is inside the call's time."""
        interval = call.plan.repush_after
        if interval is not None and now + interval < call.no_answer_at:
            self._arm(call, now + interval, f"repush:{wake.binding_id}")

    def _repush(self, call: _Call, binding_id: str, now: float) -> list[WakeOutput]:
        """The re-push interval ran out: a device the service took the push for that has
        not registered gets it again; one whose push is still out (no answer yet, or a
        transient retry pending) is looked at again one interval later."""
        wake = call.wakes.get(binding_id)
        if wake is None or wake.state in ("registered", "failed"):
            return []
        self._arm_repush(call, wake, now)
        if wake.state == "pushing":
            return []
        wake.attempts = 0  # a fresh push: its own transient retries
        return self._send_call_push(call, wake, now)

    def _timer_live(self, ref: str, what: str) -> bool:
        call = self._calls.get(ref)
        if call is None or call.done:
            return False
        if what == "no-answer":
            return not call.diverted
        if what == "twin":
            return call.twin_at is not None and not call.diverted
        return not call.diverted

    def _arm(self, call: _Call, deadline: float, what: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, call.ref, what))

    # -- internals ------------------------------------------------------------------------
    def _track(self, call: _Call) -> None:
        self._calls[call.ref] = call
        self._by_key[call.key] = call
        self._by_aor.setdefault(call.aor, {})[call.ref] = call

    def would_push(self, devices: list[Device], plan: CallPlan) -> bool:
        """Whether a call to these devices would push one (the wake-push rate limit only
        counts such calls)."""
        return not plan.dnd and any(self._should_push(d, plan) for d in devices)

    @staticmethod
    def _should_push(device: Device, plan: CallPlan) -> bool:
        push = device.binding.push
        if push is None:
            return False
        if plan.push_requires_tls and device.binding.source.transport != "tls":
            return False
        if device.state == "suspended":
            return True
        return (
            device.state == "foreground" and plan.push_foreground and push.base_provider == "apns"
        )

    def _send_call_push(self, call: _Call, wake: _Wake, now: float) -> list[WakeOutput]:
        wake.attempts += 1
        wake.tries += 1
        wake.state = "pushing"
        request = self._push_request(call, wake, "call")
        detail = f"call to {wake.push.base_provider} (try {wake.tries})"
        return [
            self._event(call, now, "push-sent", detail),
            self._new_push(call, wake.binding_id, request),
        ]

    def _push_request(
        self,
        call: _Call,
        wake: _Wake,
        kind: PushKind,
        body: str | None = None,
        *,
        target: PushTarget | None = None,
    ) -> PushRequest:
        return PushRequest(
            kind=kind,
            target=target or wake.push,
            call_id=call.call_id,
            caller=_caller_name(call.invite()),
            call_uuid=call.uuid,
            body=body,
            caller_number=_caller_number(call.invite()),
            private=call.plan.encrypt_push,
            seal_key=wake.seal_key,
        )

    def _new_push(
        self, call: _Call | None, binding_id: str, request: PushRequest, *, aor: str = ""
    ) -> SendPush:
        self._push_seq += 1
        ref = call.ref if call is not None else None
        self._jobs[self._push_seq] = _PushJob(
            call_ref=ref, binding_id=binding_id, kind=request.kind, prid=request.target.prid
        )
        if call is not None:
            aor = call.aor
        return SendPush(
            push_id=self._push_seq, request=request, binding_id=binding_id, aor=aor, call_ref=ref
        )

    def _settle(self, call: _Call, now: float) -> list[WakeOutput]:
        """Nothing may be left to wait for: decide the call's end now if so."""
        if call.done:
            return []
        if self._proxy.answered(call.key):
            call.finish()
            return []
        if self._proxy.pending_targets(call.key):
            return []
        statuses = self._proxy.final_statuses(call.key)
        if call.diverted:
            return self._end(call, now, "failed", "diversion target did not answer", release=True)
        if any(s >= 600 for s in statuses):
            out: list[WakeOutput] = [self._event(call, now, "declined", str(max(statuses)))]
            return out + self._end(call, now, "declined", "", release=True, notice="declined")
        if any(w.state in ("pushing", "waiting") for w in call.wakes.values()):
            return []
        if call.twin_at is not None:
            return []
        if statuses and all(s in (486, 600) for s in statuses):
            out = [self._event(call, now, "busy", "every device is busy")]
            if call.plan.busy_target is None:
                return out + self._end(call, now, "failed", "486", release=True)
            return out + self._divert(call, 486, now, reason="user-busy")
        return self._divert(call, 480, now, reason="unavailable")

    def _divert(
        self, call: _Call, cause: int, now: float, *, reason: str, status: int = 480
    ) -> list[WakeOutput]:
        """Cancel the branches and send the call to the no-answer (or busy) target; with
        none, answer ``status``."""
        plan = call.plan
        uri = plan.busy_target if cause == 486 else plan.no_answer_target
        if uri is None:
            return self._end(call, now, "failed", f"{status} ({reason})", status=status)
        out: list[WakeOutput] = list(self._proxy.cancel_branches(call.key, now))
        call.diverted = True
        out += self._notify_waking(call, now, "missed call")
        targets = self._resolve(uri, now)
        if not targets:
            return out + self._end(call, now, "failed", f"no route to {uri}", status=480)
        headers = _diversion_headers(call.invite(), uri, cause, reason)
        for target in targets:
            divert_uri = target.uri
            if uri == plan.voicemail and isinstance(divert_uri, SipUri):
                aor_text = quote(str(call.invite().uri), safe=":")
                divert_uri = divert_uri.with_param("target", aor_text).with_param(
                    "cause", str(cause)
                )
            routed = Target(
                uri=divert_uri,
                peer=target.peer,
                route=target.route,
                label=f"divert {target.label or uri}",
                headers=headers,
            )
            out += self._proxy.add_target(call.key, routed, now)
        out.append(self._event(call, now, "diverted", f"to {uri} ({reason}, cause {cause})"))
        return out

    def _add_twin(self, call: _Call, now: float) -> list[WakeOutput]:
        twin = call.plan.twin
        if twin is None or self._proxy.answered(call.key):
            return []
        targets = self._resolve(twin, now)
        out: list[WakeOutput] = [self._event(call, now, "twin", twin)]
        for target in targets:
            labelled = Target(
                uri=target.uri, peer=target.peer, route=target.route, label=f"twin {twin}"
            )
            call.reached = True
            out += self._proxy.add_target(call.key, labelled, now)
        if not targets:
            out += self._settle(call, now)
        return out

    def _end(
        self,
        call: _Call,
        now: float,
        step: CallStep,
        detail: str,
        *,
        status: int | None = None,
        release: bool = False,
        notice: str = "missed call",
    ) -> list[WakeOutput]:
        out: list[WakeOutput] = []
        if release:
            out += self._proxy.release(call.key, now)
        else:
            out += self._proxy.terminate(call.key, status or 480, now)
        out.append(self._event(call, now, step, detail))
        return out + self._finish(call, now, notice)

    def _finish(
        self, call: _Call, now: float, notice: str, *, reason: str | None = None
    ) -> list[WakeOutput]:
        if call.done:
            return []
        out = self._notify_waking(call, now, notice, reason=reason)
        call.finish()
        return out

    def _notify_waking(
        self, call: _Call, now: float, notice: str, *, reason: str | None = None
    ) -> list[WakeOutput]:
        """Devices pushed for this call that have not registered yet: they may be showing
        an incoming call (iOS CallKit) — tell them it is over."""
        out: list[WakeOutput] = []
        for wake in call.wakes.values():
            if wake.state not in ("pushing", "waiting"):
                continue
            wake.state = "failed"
            if call.plan.cancel_notice == "none":
                continue
            if call.plan.cancel_notice == "invite-cancel":
                out.append(self._owe_replay(call, wake.binding_id, notice, reason, now))
                continue
            if wake.alert is None:
                detail = f"cancel ({notice}): no alert token"
                out.append(self._event(call, now, "push-refused", detail))
                continue
            request = self._push_request(call, wake, "cancel", body=notice, target=wake.alert)
            out.append(self._event(call, now, "push-sent", f"cancel ({notice})"))
            out.append(self._new_push(call, wake.binding_id, request))
        return out

    def _owe_replay(
        self, call: _Call, binding_id: str, notice: str, reason: str | None, now: float
    ) -> CallEvent:
        """Remember ``call`` for ``binding_id``: it gets INVITE + CANCEL when it registers."""
        # A caller who gave up without a Reason: Flexisip's "Call completed elsewhere"
        # (issue 5), which ends the device's CallKit call without a callback prompt.
        reason = _NOTICE_REASONS.get(notice, reason) or COMPLETED_ELSEWHERE
        for bid, entries in list(self._replays.items()):  # forget what is too old
            entries[:] = [r for r in entries if r.until > now and r.call_ref != call.ref]
            if not entries:
                del self._replays[bid]
        owed = self._replays.setdefault(binding_id, [])
        until = now + call.plan.cancel_replay_s
        owed.append(
            _Replay(
                call_ref=call.ref,
                call_id=call.call_id,
                aor=call.aor,
                request=call.invite(),
                reason=reason,
                until=until,
            )
        )
        detail = f"owed to {binding_id} ({notice}) for {call.plan.cancel_replay_s:g} s"
        return self._event(call, now, "invite-cancel", detail)

    def _replay(self, binding: Binding, target: Target, now: float) -> list[WakeOutput]:
        """The device registered: send it each call it is owed, INVITE then CANCEL."""
        owed = self._replays.pop(binding.binding_id, None)
        out: list[WakeOutput] = []
        for replay in owed or ():
            if replay.until <= now:
                continue
            out += self._proxy.send_cancelled(replay.request, target, now, reason=replay.reason)
            out.append(
                CallEvent(
                    call_ref=replay.call_ref,
                    aor=replay.aor,
                    at=now,
                    step="invite-cancel",
                    detail=f"sent to {_label(binding)} ({replay.reason or 'no Reason'})",
                    call_id=replay.call_id,
                )
            )
        return out

    def _event(self, call: _Call, now: float, step: CallStep, detail: str) -> CallEvent:
        return CallEvent(
            call_ref=call.ref,
            aor=call.aor,
            at=now,
            step=step,
            detail=detail,
            call_id=call.call_id,
        )


def _caller_name(request: Request) -> str:
    """What a push shows as the caller: the display name, else the user, else the URI."""
    caller = request.from_
    name = caller.display_name or (caller.uri.user if isinstance(caller.uri, SipUri) else None)
    return name or str(caller.uri)


def _caller_number(request: Request) -> str:
    """The caller's number for sealed push details: the From URI's user, else the URI."""
    uri = request.from_.uri
    return (uri.user if isinstance(uri, SipUri) else None) or str(uri)


def _label(binding: Binding) -> str:
    return binding.instance or f"{binding.contact.user or ''}@{binding.source}"


def _last_ios_device(wake: list[Device], devices: list[Device], plan: CallPlan) -> list[Device]:
    """Avaya IP Office: a user has one iOS push client, the last of all their APNs devices
    (over TLS when the plan pushes only TLS clients) to register, foreground or not; only
    it may be pushed. When it is in the foreground it rings over SIP and no older iOS
    device in ``wake`` is pushed. Of two registered at the same time, the later binding."""
    ios = [
        (d.binding.registered_at, i, d)
        for i, d in enumerate(devices)
        if d.binding.push
        and d.binding.push.base_provider == "apns"
        and (not plan.push_requires_tls or d.binding.source.transport == "tls")
    ]
    if len(ios) <= 1:
        return wake
    newest = max(ios, key=lambda entry: entry[:2])[2]
    others = [d for _, _, d in ios if d is not newest]
    return [d for d in wake if all(d is not o for o in others)]


def _uuid_from(digits: str) -> str:
    """A version 4 UUID (RFC 9562 §5.4) from 32 random hex digits: the version and
    variant nibbles set, 122 bits left random."""
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:32]}"


def _diversion_headers(
    request: Request, uri: str, cause: int, reason: str
) -> tuple[tuple[str, str], ...]:
    """RFC 5806 Diversion and RFC 7044 History-Info for a call sent elsewhere."""
    original = str(request.uri)
    diversion_reason = {"no-answer": "no-answer", "user-busy": "user-busy", "dnd": "do-not-disturb"}
    div = diversion_reason.get(reason, "unavailable")
    reason_param = quote(f"SIP;cause={cause}", safe="")
    return (
        ("Diversion", f"<{original}>;reason={div};counter=1"),
        ("History-Info", f"<{original}>;index=1"),
        ("History-Info", f"<{uri}?Reason={reason_param}>;index=1.1;mp=1"),
    )
