"""Expectations against what a replay saw: each one met or missed, and why.

``evaluate(replay)`` returns one ``Check`` per ``expect`` item, in file order, and one
more, missed, when a simulated phone or caller could not authenticate. A check
says what was expected ("a call push to bob.iphone within 0.5 s of call1") and what
happened ("sent at 1.000 s, 0.000 s after the call"); a missed one converts to a
``ScenarioError(step, expected, got)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sipwake.errors import ScenarioError
from sipwake.scenario.model import (
    AnsweredExpect,
    DeviceCancelledExpect,
    Expect,
    FinalStatusExpect,
    ForwardedExpect,
    MessageDeliveredExpect,
    NoPushExpect,
    PushExpect,
    RefreshPushesExpect,
    RingingExpect,
    Scenario,
    TimedExpect,
)
from sipwake.scenario.record import CallRecord, PushRecordSeen, Replay

__all__ = ["Check", "evaluate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    index: int
    kind: str
    expected: str
    got: str
    met: bool

    @property
    def step(self) -> str:
        return f"expect[{self.index}] {self.kind}"

    def error(self) -> ScenarioError:
        return ScenarioError(self.step, self.expected, self.got)


def _t(at: float) -> str:
    return f"{at:.3f} s"


def _pushes_text(pushes: list[PushRecordSeen]) -> str:
    if not pushes:
        return "no push was sent"
    shown = [
        f"{p.kind} push to {p.device or 'an unknown device'} at {_t(p.at)}" for p in pushes[:4]
    ]
    more = f" and {len(pushes) - 4} more" if len(pushes) > 4 else ""
    return "pushes sent: " + ", ".join(shown) + more


_SIP_CAUSE = re.compile(r"(?i)\bSIP\s*;[^,]*?\bcause\s*=\s*(\d+)")
"""The SIP cause of an RFC 3326 Reason header (not a Q.850 one)."""


def _sealed(push: PushRecordSeen, call: CallRecord, device: str) -> tuple[bool, str]:
    """Whether ``push`` carried the call only sealed and ``device`` opened it, and how."""
    payload = push.payload
    if payload is None:
        return False, "its payload is not known (Web Push: encrypted end to end)"
    if "enc" not in payload:
        shown = ", ".join(push.clear) or "no call details"
        return False, f"no enc in the payload ({shown} in clear)"
    if push.clear:
        return False, f"enc, but {', '.join(push.clear)} in clear too"
    if push.opened is None:
        why = push.open_error or "the push did not reach it"
        return False, f"enc, but {device} could not open it: {why}"
    if push.opened.get("call_id") != call.call_id:
        return False, f"enc opened by {device}, but it names another call"
    who = push.opened.get("name") or push.opened.get("caller") or "an unnamed caller"
    return True, f"enc opened by {device} (call from {who}), nothing in clear"


_URI = re.compile(r"<\s*sips?:([^@>;]+)@")


def _names_user(value: str, user: str) -> bool:
    """Whether a Diversion or History-Info entry's URI is ``user``'s (``<sip:user@…>``)."""
    found = _URI.search(value)
    return found is not None and found.group(1) == user


def _param(value: str, name: str) -> str | None:
    """A header parameter after the ``<uri>`` (``reason``, ``index``)."""
    _, _, params = value.partition(">")
    for part in params.split(";"):
        key, _, val = part.strip().partition("=")
        if key.lower() == name:
            return val.strip().strip('"')
    return None


def _call_text(call: CallRecord) -> str:
    """How the call ended, for messages about something that did not happen."""
    if call.answers:
        at, who = call.answers[0]
        return f"answered by {who} at {_t(at)}"
    if call.final is not None:
        return f"the caller got {call.final[1]} at {_t(call.final[0])}"
    return "the call got no final answer"


class _Evaluator:
    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.scenario: Scenario = replay.scenario

    def check(self, index: int, item: Expect) -> Check:
        spec = item.spec
        if isinstance(spec, MessageDeliveredExpect):
            expected, got, met = self._delivered(spec)
            return Check(index=index, kind=item.kind, expected=expected, got=got, met=met)
        if isinstance(spec, RefreshPushesExpect):
            expected, got, met = self._refreshed(spec)
            return Check(index=index, kind=item.kind, expected=expected, got=got, met=met)
        kind: Literal["call", "message"] = (
            "message"
            if isinstance(spec, PushExpect | NoPushExpect) and spec.kind == "message"
            else "call"
        )
        call = self.replay.call(spec.call, kind)
        name = spec.call or (call.id if call is not None else None)
        if call is None and not isinstance(spec, NoPushExpect):
            return Check(
                index=index,
                kind=item.kind,
                expected=f"{item.kind} for call {name or '(first)'}",
                got="the call was never placed",
                met=False,
            )
        expected, got, met = self._dispatch(item, call)
        return Check(index=index, kind=item.kind, expected=expected, got=got, met=met)

    def _dispatch(self, item: Expect, call: CallRecord | None) -> tuple[str, str, bool]:
        spec = item.spec
        if isinstance(spec, PushExpect):
            assert call is not None
            return self._push(spec, call)
        if isinstance(spec, NoPushExpect):
            return self._no_push(spec, call if spec.call else None)
        if isinstance(spec, RingingExpect):
            assert call is not None
            return self._ringing(spec, call)
        if isinstance(spec, AnsweredExpect):
            assert call is not None
            return self._answered(spec, call)
        if isinstance(spec, FinalStatusExpect):
            assert call is not None
            return self._final(spec, call)
        if isinstance(spec, DeviceCancelledExpect):
            assert call is not None
            return self._device_cancelled(spec, call)
        if isinstance(spec, ForwardedExpect):
            assert call is not None
            return self._forwarded(spec, call)
        if isinstance(spec, TimedExpect):
            assert call is not None
            times = call.voicemail if item.kind == "voicemail" else call.twin
            return self._timed(item.kind, spec, call, times)
        raise AssertionError(f"unhandled expectation {item.kind}")

    def _device(self, ref: str) -> str:
        return self.scenario.resolve_device(ref) or ref

    def _push(self, spec: PushExpect, call: CallRecord) -> tuple[str, str, bool]:
        device = self._device(spec.to)
        deadline = call.start + spec.within
        expected = (
            f"a {spec.kind} push to {device} within {spec.within:g} s of {call.id} "
            f"(placed at {_t(call.start)}, so by {_t(deadline)})"
        )
        mine = [p for p in self.replay.pushes if p.call == call.id]
        match = [p for p in mine if p.kind == spec.kind and p.device == device]
        if spec.nth > 1:
            expected = expected.replace(f"a {spec.kind} push", f"{spec.kind} push #{spec.nth}")
        if not match:
            return expected, f"no {spec.kind} push to {device}; {_pushes_text(mine)}", False
        if len(match) < spec.nth:
            got = f"only {len(match)} {spec.kind} push(es) to {device}; {_pushes_text(mine)}"
            return expected, got, False
        first = match[spec.nth - 1]
        got = f"sent at {_t(first.at)}, {first.at - call.start:.3f} s after the call"
        if first.outcome is not None and first.outcome.status != "delivered":
            got += f" (answered {first.outcome.status})"
        met = first.at <= deadline + 1e-9
        if spec.count is not None:
            expected += f", {spec.count} in all"
            got += f", {len(match)} in all"
            met = met and len(match) == spec.count
        if spec.topic is not None:
            expected += f" on topic {spec.topic}"
            got += f", on topic {first.topic or '(none)'}"
            met = met and first.topic == spec.topic
        if spec.delivered is not None:
            expected += ", delivered" if spec.delivered else ", refused"
            took = first.outcome is not None and first.outcome.status == "delivered"
            if first.outcome is not None and first.outcome.reason and not took:
                got += f" ({first.outcome.reason})"
            met = met and took == spec.delivered
        if spec.encrypted is not None:
            expected += ", call details sealed" if spec.encrypted else ", without enc"
            sealed, how = _sealed(first, call, device)
            got += f"; {how}"
            if spec.encrypted:
                met = met and sealed
            else:  # sent without enc (whether the device could open it does not matter)
                met = met and first.payload is not None and "enc" not in first.payload
        return expected, got, met

    def _no_push(self, spec: NoPushExpect, call: CallRecord | None) -> tuple[str, str, bool]:
        device = self._device(spec.to)
        kind = f"{spec.kind} push" if spec.kind else "push"
        scope = f" for {call.id}" if call is not None else ""
        expected = f"no {kind} to {device}{scope}"
        pushes = [
            p
            for p in self.replay.pushes
            if p.device == device
            and (spec.kind is None or p.kind == spec.kind)
            and (call is None or p.call == call.id)
        ]
        if not pushes:
            return expected, "none was sent", True
        return expected, _pushes_text(pushes), False

    def _ringing(self, spec: RingingExpect, call: CallRecord) -> tuple[str, str, bool]:
        what = str(spec.status) if spec.status else "ringing (18x)"
        deadline = call.start + spec.within
        expected = (
            f"the caller hears {what} within {spec.within:g} s of {call.id} (by {_t(deadline)})"
        )
        heard = [
            (at, s)
            for at, s in call.provisional
            if (s == spec.status if spec.status else 180 <= s <= 189)
        ]
        if not heard:
            others = ", ".join(f"{s} at {_t(at)}" for at, s in call.provisional) or "none"
            return (
                expected,
                f"no {what}; provisional responses: {others}; {_call_text(call)}",
                False,
            )
        at, status = heard[0]
        got = f"{status} at {_t(at)}, {at - call.start:.3f} s after the call"
        return expected, got, at <= deadline + 1e-9

    def _answered(self, spec: AnsweredExpect, call: CallRecord) -> tuple[str, str, bool]:
        by = (
            spec.by
            if spec.by == "voicemail" or spec.by.endswith(".mobile")
            else self._device(spec.by)
        )
        expected = f"{call.id} answered by {by} at {spec.at:g} ± {spec.tolerance:g} s"
        if not call.answers:
            return expected, f"not answered: {_call_text(call)}", False
        at, who = call.answers[0]
        got = f"answered by {who} at {_t(at)}"
        if who != by:
            return expected, got, False
        off = at - spec.at
        if abs(off) > spec.tolerance + 1e-9:
            return expected, f"{got}, {abs(off):.3f} s {'late' if off > 0 else 'early'}", False
        return expected, got, True

    def _timed(
        self, kind: str, spec: TimedExpect, call: CallRecord, times: list[float]
    ) -> tuple[str, str, bool]:
        what = "diverted to voicemail" if kind == "voicemail" else "twin branch started"
        expected = f"{call.id} {what} at {spec.at:g} ± {spec.tolerance:g} s"
        if not times:
            return expected, f"never: {_call_text(call)}", False
        at = times[0]
        off = at - spec.at
        got = f"{what} at {_t(at)}"
        if abs(off) > spec.tolerance + 1e-9:
            return expected, f"{got}, {abs(off):.3f} s {'late' if off > 0 else 'early'}", False
        return expected, got, True

    def _refreshed(self, spec: RefreshPushesExpect) -> tuple[str, str, bool]:
        device = self._device(spec.to)
        topic = f" on topic {spec.topic}" if spec.topic else ""
        expected = (
            f"at least {spec.at_least} refresh push(es) to {device}{topic}, each delivered "
            "and followed by its REGISTER"
        )
        pushes = [p for p in self.replay.pushes if p.kind == "refresh" and p.device == device]
        taken = [p for p in pushes if p.outcome is not None and p.outcome.status == "delivered"]
        on_topic = [p for p in taken if spec.topic is None or p.topic == spec.topic]
        refreshed = [at for at, who in self.replay.refreshes if who == device]
        answered = [p for p in on_topic if any(at >= p.at for at in refreshed)]
        got = (
            f"{len(pushes)} sent, {len(taken)} delivered, {len(on_topic)}{topic or ''}, "
            f"{len(refreshed)} REGISTER(s) after one"
        )
        if pushes:
            got += " (at " + ", ".join(_t(p.at) for p in pushes[:6]) + ")"
        met = len(answered) >= spec.at_least and len(refreshed) >= spec.at_least
        return expected, got, met

    def _delivered(self, spec: MessageDeliveredExpect) -> tuple[str, str, bool]:
        message = self.replay.call(spec.message, "message")
        device = self._device(spec.to)
        name = spec.message or (message.id if message is not None else "(first message)")
        when = f" at {spec.at:g} ± {spec.tolerance:g} s" if spec.at is not None else ""
        woken = " after a push woke it" if spec.after_wake else ""
        expected = f"message {name} delivered to {device}{woken}{when}"
        if message is None:
            return expected, "the message was never sent", False
        arrivals = [at for at, who in message.delivered if who == device]
        if not arrivals:
            answer = (
                f"the sender got {message.final[1]} at {_t(message.final[0])}"
                if message.final is not None
                else "the sender got no final answer"
            )
            elsewhere = ", ".join(f"{who} at {_t(at)}" for at, who in message.delivered)
            where = f"delivered to {elsewhere}" if elsewhere else "delivered nowhere"
            return expected, f"not delivered to {device}: {where}; {answer}", False
        at = arrivals[0]
        got = f"delivered at {_t(at)}"
        if spec.after_wake:
            wakes = [w for w, who in self.replay.wakes if who == device and w <= at]
            if not wakes:
                return expected, f"{got}, but {device} was not woken by a push before", False
            got += f", {at - wakes[-1]:.3f} s after {device} woke at {_t(wakes[-1])}"
        if spec.at is not None:
            off = at - spec.at
            if abs(off) > spec.tolerance + 1e-9:
                return expected, f"{got}, {abs(off):.3f} s {'late' if off > 0 else 'early'}", False
        return expected, got, True

    def _device_cancelled(
        self, spec: DeviceCancelledExpect, call: CallRecord
    ) -> tuple[str, str, bool]:
        device = self._device(spec.to)
        deadline = call.start + spec.within
        reason = f" with Reason cause={spec.cause}" if spec.cause is not None else ""
        late = ", the INVITE after the caller's final response" if spec.after_end else ""
        expected = (
            f"{device} gets the INVITE of {call.id} then a CANCEL{reason} within "
            f"{spec.within:g} s of the call (by {_t(deadline)}){late}"
        )
        invites = [at for at, who in call.device_invites if who == device]
        if not invites:
            return expected, f"no INVITE of {call.id} reached {device}; {_call_text(call)}", False
        invited = invites[-1]
        cancels = [(at, r) for at, who, r in call.device_cancels if who == device and at >= invited]
        if not cancels:
            return expected, f"INVITE at {_t(invited)}, but no CANCEL followed", False
        at, header = cancels[0]
        got = f"INVITE at {_t(invited)}, CANCEL at {_t(at)} (Reason: {header or 'none'})"
        met = at <= deadline + 1e-9
        if spec.cause is not None:
            found = _SIP_CAUSE.search(header or "")
            met = met and found is not None and int(found.group(1)) == spec.cause
        if spec.after_end:
            if call.final is None:
                return expected, f"{got}; the caller got no final response", False
            got += f"; the caller's final {call.final[1]} came at {_t(call.final[0])}"
            met = met and invited >= call.final[0]
        return expected, got, met

    def _forwarded(self, spec: ForwardedExpect, call: CallRecord) -> tuple[str, str, bool]:
        device = self._device(spec.to)
        user = spec.diversion or call.callee
        reason = f" reason={spec.reason}" if spec.reason else ""
        expected = (
            f"{call.id} forwarded to {device} at {spec.at:g} ± {spec.tolerance:g} s, "
            f"Diversion{reason} and History-Info naming {user}"
        )
        mine = [f for f in call.forwards if f[1] == device]
        if not mine:
            invites = [at for at, who in call.device_invites if who == device]
            if invites:
                got = f"INVITE at {_t(invites[0])}, without Diversion or History-Info"
            else:
                got = f"no INVITE of {call.id} reached {device}; {_call_text(call)}"
            return expected, got, False
        at, _, diversion, history = mine[0]
        got = f"INVITE at {_t(at)}"
        off = at - spec.at
        problems = []
        if abs(off) > spec.tolerance + 1e-9:
            problems.append(f"{abs(off):.3f} s {'late' if off > 0 else 'early'}")
        matching = [d for d in diversion if _names_user(d, user)]
        if not matching:
            problems.append(f"Diversion: {', '.join(diversion) or 'none'}")
        elif spec.reason is not None and _param(matching[0], "reason") != spec.reason:
            problems.append(f"Diversion: {matching[0]}")
        else:
            got += f", Diversion: {matching[0]}"
        # RFC 7044: the first entry is the original target (index 1), a later one the
        # target the call went to (index 1.1…).
        first = [h for h in history if _param(h, "index") == "1"]
        later = [h for h in history if (_param(h, "index") or "").startswith("1.")]
        if not first or not _names_user(first[0], user) or not later:
            problems.append(f"History-Info: {', '.join(history) or 'none'}")
        else:
            got += f", History-Info {len(history)} entries"
        if problems:
            return expected, f"{got}; " + "; ".join(problems), False
        return expected, got, True

    def _final(self, spec: FinalStatusExpect, call: CallRecord) -> tuple[str, str, bool]:
        who = "sender" if call.kind == "message" else "caller"
        expected = f"final status {spec.status} to the {who} of {call.id}"
        if call.final is None:
            return expected, f"no final response reached the {who}", False
        at, status = call.final
        return expected, f"{status} at {_t(at)}", status == spec.status


def evaluate(replay: Replay) -> list[Check]:
    """One ``Check`` per expectation of the replayed scenario, in order."""
    evaluator = _Evaluator(replay)
    checks = [evaluator.check(i, item) for i, item in enumerate(replay.scenario.expect)]
    if replay.auth_failures:
        # Not an expectation of the file: a cast that could not authenticate did not
        # replay what the scenario describes, whatever the expectations say.
        checks.append(
            Check(
                index=len(checks),
                kind="authentication",
                expected="every simulated phone and caller authenticates",
                got="; ".join(replay.auth_failures),
                met=False,
            )
        )
    return checks
