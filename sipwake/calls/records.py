"""What a call record holds: steps, SIP messages, and the summary derived from them.

A call is named by the wake engine's ``call_ref``. Its record is a list of
entries, each stamped with wall-clock seconds (``wall``) and a per-process
sequence number (``seq``) that orders entries sharing one instant:

* ``CallStepRecord``: one ``CallEvent`` of the wake engine (received, push-sent,
  push-result, registered, forked, ringback, twin, answered, …);
* ``CallMessageRecord``: one SIP message sent or received for the call. The
  recorder keeps its head raw (``head``: first line and header fields, at most
  2 KB, credentials and push tokens hidden; never a body); reading the call parses
  it into its first line and the few header fields that explain a call
  (``KEPT_HEADERS``: From, To, CSeq, Contact, Reason, Diversion, History-Info,
  Warning, Retry-After, User-Agent, Server), each cut at ``MAX_HEADER_VALUE``
  characters, push tokens masked (``sipwake.calls.heads.readable``).

The recorder adds steps of its own beside the wake engine's: ``branch`` (which
device a branch reached: a ``CallDevice`` as JSON, written once per branch),
``hangup`` (``by the caller`` or ``by the callee``: who sent the first BYE) and
``truncated``.

``CallSummary`` is what ``sipwake calls`` lists. Stores keep it up to date with
``advance(summary, entry)``, a pure function, so that every backend derives the
same summary from the same entries.

Outcome rule: the outcome is the last *decisive* step (answered, declined, busy,
no-answer, diverted, cancelled, failed, ended), except that a ``failed`` that
closes a ``busy``, ``no-answer`` or ``declined`` keeps the more telling step
(the engine writes ``busy`` then ``failed 486``). Until a decisive step the
outcome is ``ringing``. ``ringing`` (seconds) runs from the first entry to the
latest decisive step; ``pushes`` counts ``push-sent`` steps. ``answered`` is the
wall time of the answer; ``ended`` that of the ``hangup`` step, or of the step that
ended an unanswered call (declined, busy, cancelled, failed); ``ended_by`` says who
ended it: ``caller`` (BYE or CANCEL), ``callee`` (BYE, decline, busy) or
``sipwake`` (a failure, e.g. no answer and nowhere to divert).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Literal

from sipwake.frozen import interpreted_init
from sipwake.push.base import PushRecord

__all__ = [
    "DECISIVE_STEPS",
    "KEPT_HEADERS",
    "TERMINAL_STEPS",
    "CallDevice",
    "CallEntry",
    "CallMessageRecord",
    "CallRecord",
    "CallStepRecord",
    "CallSummary",
    "advance",
    "advance_messages",
    "device_kind",
]

#: Steps that decide (or re-decide) a call's outcome.
DECISIVE_STEPS = frozenset(
    {"answered", "declined", "busy", "no-answer", "diverted", "cancelled", "failed", "ended"}
)
#: Steps after which nothing new happens to a call but its end (ACK, BYE, cancel pushes).
TERMINAL_STEPS = frozenset({"answered", "declined", "cancelled", "failed", "ended"})

_KEPT_OVER_FAILED = frozenset({"busy", "no-answer", "declined"})
#: Who ends a call that was not answered, by the step that ended it.
_ENDED_BY = {
    "cancelled": "caller",
    "declined": "callee",
    "busy": "callee",
    "failed": "sipwake",
}

#: Header fields a call record keeps of each message (lower-case name → as printed;
#: RFC 3261 §7.3.3 compact forms too). They say who spoke to whom (From, To, CSeq,
#: Contact, User-Agent, Server) and why a call went as it did (Reason RFC 3326,
#: Diversion RFC 5806, History-Info RFC 7044, Warning, Retry-After).
KEPT_HEADERS: dict[str, str] = {
    "from": "From",
    "f": "From",
    "to": "To",
    "t": "To",
    "cseq": "CSeq",
    "contact": "Contact",
    "m": "Contact",
    "reason": "Reason",
    "diversion": "Diversion",
    "history-info": "History-Info",
    "warning": "Warning",
    "retry-after": "Retry-After",
    "user-agent": "User-Agent",
    "server": "Server",
}
MAX_HEADER_VALUE = 200
"""Characters kept of one header value (longer ones end in ``…``)."""
MAX_HEADERS = 16
"""Header fields kept of one message (the first ones, in message order)."""

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
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

    def __init__(
        self,
        *,
        ref: str,
        seq: int,
        wall: float,
        aor: str,
        step: str,
        detail: str = "",
        call_id: str = "",
    ) -> None:
        self.ref = ref  # type: ignore[misc]
        self.seq = seq  # type: ignore[misc]
        self.wall = wall  # type: ignore[misc]
        self.aor = aor  # type: ignore[misc]
        self.step = step  # type: ignore[misc]
        self.detail = detail  # type: ignore[misc]
        self.call_id = call_id  # type: ignore[misc]


interpreted_init(CallStepRecord)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
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
    headers: tuple[tuple[str, str], ...] = ()
    """The ``KEPT_HEADERS`` fields of the message, (name, value) in message order."""
    head: bytes = b""
    """The message head as recorded (``sipwake.calls.heads``: first line and header
    fields, at most 2 KB, secrets hidden), parsed into ``first_line`` (when that is
    "") and ``headers`` when the call is read; b"" once read."""

    def __init__(
        self,
        *,
        ref: str,
        seq: int,
        wall: float,
        direction: Direction,
        peer: str,
        first_line: str,
        call_id: str,
        headers: tuple[tuple[str, str], ...] = (),
        head: bytes = b"",
    ) -> None:
        self.ref = ref  # type: ignore[misc]
        self.seq = seq  # type: ignore[misc]
        self.wall = wall  # type: ignore[misc]
        self.direction = direction  # type: ignore[misc]
        self.peer = peer  # type: ignore[misc]
        self.first_line = first_line  # type: ignore[misc]
        self.call_id = call_id  # type: ignore[misc]
        self.headers = headers  # type: ignore[misc]
        self.head = head  # type: ignore[misc]

    def header(self, name: str) -> str | None:
        """The first kept value of header ``name`` (as in ``KEPT_HEADERS``), if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def cseq_method(self) -> str:
        """The CSeq method (``INVITE``, ``BYE``), or "" if not kept."""
        cseq = self.header("CSeq") or ""
        return cseq.split()[-1] if cseq.split() else ""


interpreted_init(CallMessageRecord)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallDevice:
    """The registered device a branch reached (the ``detail`` of a ``branch`` step)."""

    peer: str
    """Where its INVITE went (``tcp:10.0.0.5:5061#3``)."""
    aor: str
    contact: str
    """The Request-URI of its INVITE (the registered Contact, push parameters dropped)."""
    instance: str = ""
    """RFC 5626 ``+sip.instance`` (``urn:uuid:…``)."""
    user_agent: str = ""
    """The User-Agent of its REGISTER."""
    push: str = ""
    """The push service it registered with (``apns``, ``fcm``, ``webpush``), or ""."""

    def hint(self) -> str:
        """A few words telling the device apart: platform or app, push service or
        transport (``iPhone, apns``; ``Zoiper, udp``)."""
        transport = self.peer.partition(":")[0]
        return ", ".join(p for p in (device_kind(self.user_agent), self.push or transport) if p)

    def to_detail(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_detail(cls, detail: str) -> CallDevice | None:
        """The device a ``branch`` step names (None if its detail is not one)."""
        try:
            data = json.loads(detail)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names and isinstance(v, str)}
        if "peer" not in values or "aor" not in values or "contact" not in values:
            return None
        return cls(**values)


CallEntry = CallStepRecord | CallMessageRecord


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
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
    answered: float | None = None
    """Wall-clock seconds of the answer (None: not answered)."""
    ended: float | None = None
    """Wall-clock seconds of the end: the first BYE, or the step that ended an
    unanswered call (None: still going, or its BYE was not seen)."""
    ended_by: str | None = None
    """``caller``, ``callee`` or ``sipwake`` (see the module text)."""

    def __init__(
        self,
        *,
        ref: str,
        aor: str,
        caller: str,
        call_id: str,
        started: float,
        updated: float,
        outcome: str = "ringing",
        answered_by: str | None = None,
        ringing: float | None = None,
        pushes: int = 0,
        messages: int = 0,
        answered: float | None = None,
        ended: float | None = None,
        ended_by: str | None = None,
    ) -> None:
        self.ref = ref  # type: ignore[misc]
        self.aor = aor  # type: ignore[misc]
        self.caller = caller  # type: ignore[misc]
        self.call_id = call_id  # type: ignore[misc]
        self.started = started  # type: ignore[misc]
        self.updated = updated  # type: ignore[misc]
        self.outcome = outcome  # type: ignore[misc]
        self.answered_by = answered_by  # type: ignore[misc]
        self.ringing = ringing  # type: ignore[misc]
        self.pushes = pushes  # type: ignore[misc]
        self.messages = messages  # type: ignore[misc]
        self.answered = answered  # type: ignore[misc]
        self.ended = ended  # type: ignore[misc]
        self.ended_by = ended_by  # type: ignore[misc]


interpreted_init(CallSummary)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """A call in full: summary, steps and messages in order, and the push attempts
    recorded with the call's Call-ID (``PushLog``)."""

    summary: CallSummary
    events: tuple[CallStepRecord, ...] = ()
    messages: tuple[CallMessageRecord, ...] = ()
    pushes: tuple[PushRecord, ...] = ()


_PLATFORMS = (
    ("iphone", "iPhone"),
    ("ipad", "iPad"),
    ("ios", "iOS"),
    ("android", "Android"),
    ("windows", "Windows"),
    ("mac os", "macOS"),
    ("macos", "macOS"),
    ("linux", "Linux"),
)


def device_kind(user_agent: str) -> str:
    """What a User-Agent (or Server) says the device is: its platform when named
    (``Linphone/5.2 (iPhone; iOS 17.1)`` → ``iPhone``), else its product
    (``Zoiper 5`` → ``Zoiper``), else ""."""
    lowered = user_agent.lower()
    for needle, name in _PLATFORMS:
        if needle in lowered:
            return name
    product = user_agent.strip().split("/")[0].split(" ")[0]
    return product[:16]


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
    answered, ended, ended_by = summary.answered, summary.ended, summary.ended_by
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
            if step == "answered" and answered is None:
                answered = entry.wall
            elif answered is None and step in _ENDED_BY:
                ended, ended_by = entry.wall, _ENDED_BY.get(outcome, _ENDED_BY[step])
        elif step == "hangup" and ended_by not in ("caller", "callee"):
            ended, ended_by = entry.wall, entry.detail.removeprefix("by the ")  # the first BYE
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
        answered=answered,
        ended=ended,
        ended_by=ended_by,
    )


def advance_messages(
    summary: CallSummary | None, ref: str, count: int, first: float, last: float, call_id: str
) -> CallSummary:
    """The summary of call ``ref`` after ``count`` of its messages whose wall times run from
    ``first`` to ``last``, the first of them with ``call_id``: what ``advance`` gives
    for them one by one (a message moves only the times, the Call-ID and the count)."""
    if summary is None:
        return CallSummary(
            ref=ref, aor="", caller="", call_id=call_id, started=first, updated=last, messages=count
        )
    return CallSummary(
        ref=summary.ref,
        aor=summary.aor,
        caller=summary.caller,
        call_id=summary.call_id or call_id,
        started=min(summary.started, first),
        updated=max(summary.updated, last),
        outcome=summary.outcome,
        answered_by=summary.answered_by,
        ringing=summary.ringing,
        pushes=summary.pushes,
        messages=summary.messages + count,
        answered=summary.answered,
        ended=summary.ended,
        ended_by=summary.ended_by,
    )
