"""What a call record holds: steps, SIP messages, and the summary derived from them.

A call is named by the wake engine's ``call_ref``. Its record is a list of
entries, each stamped with wall-clock seconds (``wall``) and a per-process
sequence number (``seq``) that orders entries sharing one instant:

* ``CallStepRecord``: one ``CallEvent`` of the wake engine (received, push-sent,
  push-result, registered, forked, ringback, twin, answered, …);
* ``CallMessageRecord``: one SIP message sent or received for the call, by its
  first line only (no headers, no bodies: nothing secret is kept).

``CallSummary`` is what ``sipwake calls`` lists. Stores keep it up to date with
``advance(summary, entry)``, a pure function, so that every backend derives the
same summary from the same entries.

Outcome rule: the outcome is the last *decisive* step (answered, declined, busy,
no-answer, diverted, cancelled, failed, ended), except that a ``failed`` that
closes a ``busy``, ``no-answer`` or ``declined`` keeps the more telling step
(the engine writes ``busy`` then ``failed 486``). Until a decisive step the
outcome is ``ringing``. ``ringing`` (seconds) runs from the first entry to the
latest decisive step; ``pushes`` counts ``push-sent`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipwake.push.base import PushRecord

__all__ = [
    "DECISIVE_STEPS",
    "TERMINAL_STEPS",
    "CallEntry",
    "CallMessageRecord",
    "CallRecord",
    "CallStepRecord",
    "CallSummary",
    "advance",
]

#: Steps that decide (or re-decide) a call's outcome.
DECISIVE_STEPS = frozenset(
    {"answered", "declined", "busy", "no-answer", "diverted", "cancelled", "failed", "ended"}
)
#: Steps after which nothing new happens to a call but its end (ACK, BYE, cancel pushes).
TERMINAL_STEPS = frozenset({"answered", "declined", "cancelled", "failed", "ended"})

_KEPT_OVER_FAILED = frozenset({"busy", "no-answer", "declined"})

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStepRecord:
    """One step of a call (a ``CallEvent`` with wall-clock time)."""

    ref: str
    seq: int
    wall: float
    aor: str
    step: str
    detail: str = ""
    call_id: str = ""
    """The call's SIP Call-ID when known at write time ("" if not yet)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMessageRecord:
    """One SIP message of a call: who, which way, and its first line."""

    ref: str
    seq: int
    wall: float
    direction: Direction
    peer: str
    """The other end (``udp:10.0.0.5:5062``)."""
    first_line: str
    """``INVITE sip:alice@lab.test SIP/2.0`` or ``SIP/2.0 180 Ringing``."""
    call_id: str


CallEntry = CallStepRecord | CallMessageRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSummary:
    """One line of ``sipwake calls``."""

    ref: str
    aor: str
    """The called user."""
    caller: str
    call_id: str
    started: float
    """Wall-clock seconds of the first entry."""
    updated: float
    """Wall-clock seconds of the latest entry."""
    outcome: str = "ringing"
    answered_by: str | None = None
    ringing: float | None = None
    """Seconds from the start to the latest decisive step (None while undecided)."""
    pushes: int = 0
    messages: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """A call in full: summary, steps and messages in order, and the push attempts
    recorded with the call's Call-ID (``PushLog``)."""

    summary: CallSummary
    events: tuple[CallStepRecord, ...] = ()
    messages: tuple[CallMessageRecord, ...] = ()
    pushes: tuple[PushRecord, ...] = ()


def advance(summary: CallSummary | None, entry: CallEntry) -> CallSummary:
    """The summary after ``entry`` (``None``: the call's first entry)."""
    # One CallSummary built per entry (stores call this for every step and message;
    # ``dataclasses.replace`` costs ten times as much).
    if summary is None:
        summary = CallSummary(
            ref=entry.ref,
            aor="",
            caller="",
            call_id="",
            started=entry.wall,
            updated=entry.wall,
        )
    started = min(summary.started, entry.wall)  # a message may precede the first step
    updated = max(summary.updated, entry.wall)
    call_id = summary.call_id or entry.call_id
    aor, caller, outcome = summary.aor, summary.caller, summary.outcome
    answered_by, ringing = summary.answered_by, summary.ringing
    pushes, messages = summary.pushes, summary.messages
    if isinstance(entry, CallMessageRecord):
        messages += 1
    else:
        if entry.aor and not aor:
            aor = entry.aor
        step = entry.step
        if step == "received":
            if not caller:
                caller = entry.detail.removeprefix("from ").strip()
        elif step == "push-sent":
            pushes += 1
        elif step in DECISIVE_STEPS:
            if not (
                (step == "failed" and outcome in _KEPT_OVER_FAILED)
                or (step == "ended" and outcome != "ringing")
            ):
                outcome = step
            if step == "answered":
                answered_by = entry.detail or None
            ringing = max(0.0, entry.wall - started)
    return CallSummary(
        ref=summary.ref,
        aor=aor,
        caller=caller,
        call_id=call_id,
        started=started,
        updated=updated,
        outcome=outcome,
        answered_by=answered_by,
        ringing=ringing,
        pushes=pushes,
        messages=messages,
    )
