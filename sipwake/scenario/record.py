"""What a replay writes down: the ladder's rows, the pushes, each call and message.

Shared by the virtual replay (``runner``) and the real-time one (``live``); ``checks``
reads it, ``report`` and ``htmlreport`` draw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sipwake.proxy.wake import CallEvent
from sipwake.push.base import PushOutcome
from sipwake.scenario.model import Scenario
from sipwake.sip.message import Request, Response

__all__ = ["CallRecord", "LadderRow", "PushRecordSeen", "Replay", "label", "outcome_text"]


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
    topic: str | None = None
    """The APNs topic it went on (None: another service)."""
    answered_at: float | None = None
    payload: dict[str, Any] | None = None
    """What the device gets: the APNs JSON body or the FCM ``data`` (None: not known)."""
    clear: tuple[str, ...] = ()
    """Call details readable in clear in ``payload`` (``caller``, ``name``, ``call-id``,
    ``uuid``)."""
    opened: dict[str, Any] | None = None
    """The call details the device read from ``enc`` with its push key."""
    open_error: str | None = None
    """Why the device could not open ``enc`` (then the push does not wake it)."""


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """One call (or instant message) of the timeline, as the agents saw it."""

    id: str
    caller: str
    callee: str
    start: float
    call_id: str
    kind: Literal["call", "message"] = "call"
    provisional: list[tuple[float, int]] = field(default_factory=list)
    """18x (and 110) responses the caller got: (time, status)."""
    final: tuple[float, int] | None = None
    answers: list[tuple[float, str]] = field(default_factory=list)
    """2xx answers to the INVITE: (time, who: ``user.device``, ``user.mobile``, voicemail)."""
    voicemail: list[float] = field(default_factory=list)
    twin: list[float] = field(default_factory=list)
    steps: list[CallEvent] = field(default_factory=list)
    delivered: list[tuple[float, str]] = field(default_factory=list)
    """A message's arrivals at devices: (time, ``user.device``)."""
    device_invites: list[tuple[float, str]] = field(default_factory=list)
    """The call's INVITE reaching devices: (time, ``user.device``)."""
    device_cancels: list[tuple[float, str, str | None]] = field(default_factory=list)
    """CANCELs of the call reaching devices: (time, ``user.device``, its Reason header)."""
    forwards: list[tuple[float, str, tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=list
    )
    """The call's INVITE reaching devices with Diversion or History-Info (a forwarded
    call): (time, ``user.device``, Diversion values, History-Info entries)."""


@dataclass(slots=True, kw_only=True)
class Replay:
    """Everything one replay saw."""

    scenario: Scenario
    rows: list[LadderRow] = field(default_factory=list)
    calls: dict[str, CallRecord] = field(default_factory=dict)
    """Calls and messages by their scenario id."""
    pushes: list[PushRecordSeen] = field(default_factory=list)
    wakes: list[tuple[float, str]] = field(default_factory=list)
    """Devices woken by a push: (time of their REGISTER, ``user.device``)."""
    refreshes: list[tuple[float, str]] = field(default_factory=list)
    """Devices that re-registered in the background after a refresh push."""
    columns: list[str] = field(default_factory=list)
    messages: int = 0
    end: float = 0.0
    clock: Literal["virtual", "real"] = "virtual"
    target: str | None = None
    """The server replayed against (``HOST:PORT``) when not sipwake's own."""
    auth_failures: list[str] = field(default_factory=list)
    """Why a simulated phone or caller could not authenticate (each once, in order)."""

    def call(self, ref: str | None, kind: Literal["call", "message"] = "call") -> CallRecord | None:
        """The call (or message) ``ref``; None: the first of ``kind``."""
        if ref is None:
            return next((c for c in self.calls.values() if c.kind == kind), None)
        return self.calls.get(ref)


def label(message: Request | Response) -> str:
    """A message as the ladder names it: ``INVITE``, ``180 Ringing``, ``200 (REGISTER)``."""
    if isinstance(message, Request):
        return message.method
    if message.cseq.method == "INVITE":
        return f"{message.status} {message.reason}"
    return f"{message.status} ({message.cseq.method})"


def outcome_text(outcome: PushOutcome) -> str:
    parts: list[str] = [outcome.status]
    if outcome.http_status is not None:
        parts.append(str(outcome.http_status))
    if outcome.reason:
        parts.append(outcome.reason)
    return " ".join(parts)
