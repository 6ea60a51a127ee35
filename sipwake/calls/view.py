"""``sipwake calls`` and ``sipwake calls show`` as text and JSON (pure).

A call's detail view reads as a PBX's CDR followed by sngrep's flow:

* the summary: parties, Call-ID, outcome and who answered (label, AOR, device),
  start, answer and end wall times with ring time, talk time and duration, who
  ended the call and how (BYE from the caller or the callee, CANCEL, decline,
  no answer), with the Reason header that came with it;
* the legend: each ladder label with the party's address, device kind, transport
  address, contact, instance and user agent;
* the timeline of the wake engine's steps and the ladder (``sipwake.calls.ladder``);
* with ``messages=True``, every recorded message in full: direction, parties,
  first line and the header fields kept.

``render_call_list`` is the list of calls: one line each, readable at 80 columns.
Times print in the local time zone.
"""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import datetime
from typing import Any

from sipwake.calls.ladder import DEFAULT_WIDTH, Ladder, format_offset, render_timeline
from sipwake.calls.participants import Participant
from sipwake.calls.records import CallMessageRecord, CallRecord, CallSummary

__all__ = ["call_json", "durations", "render_call", "render_call_list", "summary_json"]


def durations(summary: CallSummary) -> dict[str, float | None]:
    """Ring time (start to answer, or to the end of an unanswered call), talk time
    (answer to end) and duration (start to end), in seconds; None when not known."""
    ring_end = summary.answered if summary.answered is not None else summary.ended
    ring = None if ring_end is None else max(0.0, ring_end - summary.started)
    talk = None
    if summary.answered is not None and summary.ended is not None:
        talk = max(0.0, summary.ended - summary.answered)
    total = None if summary.ended is None else max(0.0, summary.ended - summary.started)
    return {"ring_s": ring, "talk_s": talk, "duration_s": total}


def render_call(
    record: CallRecord, *, width: int = DEFAULT_WIDTH, messages: bool = False
) -> list[str]:
    """The whole ``sipwake calls show`` text, one string per line."""
    ladder = Ladder.of(record)
    out = _summary_lines(record, ladder, width)
    out += ["", "participants", *_legend(ladder.parties, width)]
    out += ["", "timeline", *render_timeline(record, ladder.parties)]
    out += ["", "ladder", *ladder.render(width=width)]
    if messages:
        out += ["", "messages", *_messages(record, ladder, width)]
    return out


# -- the summary ----------------------------------------------------------------------
def _summary_lines(record: CallRecord, ladder: Ladder, width: int) -> list[str]:
    s = record.summary
    times = durations(s)
    out = [f"call {s.ref}: {s.caller or '?'} → {s.aor or '?'}"]

    def field(name: str, value: str) -> None:
        out.extend(_wrapped(f"  {name:<10}", value, width))

    field("Call-ID", s.call_id or "-")
    outcome = s.outcome
    answerer = _answerer(record, ladder)
    if answerer:
        outcome += f" by {answerer}"
    field("outcome", outcome)
    diverted = next((e.detail for e in record.events if e.step == "diverted"), None)
    if diverted:
        field("diverted", diverted)
    field("started", _wall(s.started))
    if s.answered is not None:
        field("answered", f"{_wall(s.answered)}  ring {_seconds(times['ring_s'])}")
    how, reason = _how_it_ended(record, ladder)
    if s.ended is not None:
        if s.answered is not None:
            spent = f"talk {_seconds(times['talk_s'])}"
        else:
            spent = f"ring {_seconds(times['ring_s'])}"
        field("ended", f"{_wall(s.ended)}  {spent}")
        if how:
            field("ended by", how)
        if reason:
            field("", f"Reason: {reason}")
        field("duration", _seconds(times["duration_s"]))
    elif s.answered is not None:
        field("ended", "- (no BYE recorded: the call goes on, or its end was not seen)")
    field("pushes", f"{s.pushes}    messages {s.messages}")
    return out


def _answerer(record: CallRecord, ladder: Ladder) -> str:
    """``bob#1 sip:bob@lab.test (iPhone, apns)``: the party whose 2xx to the INVITE
    came first, else what the summary says."""
    for m in sorted(record.messages, key=lambda m: (m.wall, m.seq)):
        if (
            m.direction == "in"
            and m.first_line.startswith("SIP/2.0 2")
            and m.cseq_method in ("INVITE", "")
            and m.peer != ladder.parties[0].lane
        ):
            party = next((p for p in ladder.parties if p.lane == m.peer), None)
            if party is not None:
                return party.describe()
    return record.summary.answered_by or ""


def _how_it_ended(record: CallRecord, ladder: Ladder) -> tuple[str, str]:
    """Who ended the call and with what (``the callee bob#1 (BYE)``), and the Reason
    header of that request, if any."""
    s = record.summary
    if s.ended_by is None:
        return "", ""
    messages = sorted(record.messages, key=lambda m: (m.wall, m.seq))
    if s.answered is not None or any(e.step == "hangup" for e in record.events):
        bye = next(
            (m for m in messages if m.direction == "in" and m.first_line.startswith("BYE ")),
            None,
        )
        who = f"the {s.ended_by}"
        if bye is not None and ladder.label(bye.peer) != s.ended_by:
            who += f" {ladder.label(bye.peer)}"
        return f"{who} (BYE)", (bye.header("Reason") or "") if bye is not None else ""
    if s.outcome == "cancelled":
        cancel = next(
            (m for m in messages if m.direction == "in" and m.first_line.startswith("CANCEL ")),
            None,
        )
        return "the caller (CANCEL)", (cancel.header("Reason") or "") if cancel else ""
    final = next((e for e in reversed(record.events) if e.step == s.outcome), None)
    detail = f": {final.detail}" if final is not None and final.detail else ""
    who = "sipwake" if s.ended_by == "sipwake" else f"the {s.ended_by}"
    return f"{who} ({s.outcome}{detail})", ""


# -- the legend -----------------------------------------------------------------------
def _legend(parties: tuple[Participant, ...], width: int) -> list[str]:
    out: list[str] = []
    for part in parties:
        head = part.describe().removeprefix(part.label).strip()
        if part.kind in ("sipwake", "push"):
            head = part.facts()[0][1]
        out.extend(_wrapped(f"  {part.label:<9} ", head or "-", width))
        if part.kind in ("sipwake", "push"):
            continue
        for name, value in part.facts():
            if name in ("address", "device"):
                continue  # in the head line
            out.extend(_wrapped(f"    {name:<9} ", value, width))
    return out


# -- the messages in full ---------------------------------------------------------------
def _messages(record: CallRecord, ladder: Ladder, width: int) -> list[str]:
    t0 = ladder.t0
    out: list[str] = []
    for m in sorted(record.messages, key=lambda m: (m.wall, m.seq)):
        other = ladder.label(m.peer)
        src, dst = (other, "sipwake") if m.direction == "in" else ("sipwake", other)
        out.append(f"{format_offset(m.wall - t0):>10}  {src} → {dst}  ({m.peer})")
        out.extend(_wrapped(" " * 12, m.first_line, width))
        for name, value in m.headers:
            out.extend(_wrapped(" " * 12, f"{name}: {value}", width))
    return out


# -- the list of calls ------------------------------------------------------------------
def render_call_list(summaries: list[CallSummary], *, width: int = DEFAULT_WIDTH) -> list[str]:
    """One line per call (newest first as given): start, ref, parties, outcome, ring
    and talk time, who ended it, pushes. The parties column takes what the others
    leave of ``width`` (cut with ``…``)."""
    fixed = 14 + 2 + 10 + 2 + 2 + 9 + 1 + 6 + 1 + 7 + 1 + 7 + 1 + 4
    room = max(13, width - fixed)
    header = (
        f"{'started':<14}  {'ref':<10}  {'from → to':<{room}}  {'outcome':<9} "
        f"{'ring':>6} {'talk':>7} {'hung up':<7} {'push':>4}"
    )
    out = [header.rstrip()]
    for s in summaries:
        times = durations(s)
        parties = _fit(_parties(s.caller, s.aor), room)
        line = (
            f"{datetime.fromtimestamp(s.started).strftime('%m-%d %H:%M:%S'):<14}  "
            f"{s.ref:<10}  {parties:<{room}}  {_fit(s.outcome, 9):<9} "
            f"{_short_seconds(times['ring_s']):>6} {_short_seconds(times['talk_s']):>7} "
            f"{s.ended_by or '-':<7} {s.pushes:>4}"
        )
        out.append(line.rstrip())
    return out


def _parties(caller: str, aor: str) -> str:
    """``alice → bob`` when both are in one domain, else the URIs without ``sip:``."""
    a, b = _bare(caller), _bare(aor)
    a_user, _, a_host = a.rpartition("@")
    b_user, _, b_host = b.rpartition("@")
    if a_host and a_host == b_host and a_user and b_user:
        a, b = a_user, b_user
    return f"{a or '?'} → {b or '?'}"


def _bare(uri: str) -> str:
    for scheme in ("sip:", "sips:"):
        if uri.startswith(scheme):
            return uri[len(scheme) :]
    return uri


# -- JSON -------------------------------------------------------------------------------
def summary_json(summary: CallSummary) -> dict[str, Any]:
    """A summary as ``sipwake calls --json`` prints it: its fields and ``durations``."""
    return {**dataclasses.asdict(summary), **durations(summary)}


def call_json(record: CallRecord, *, width: int = DEFAULT_WIDTH) -> dict[str, Any]:
    """A call as ``sipwake calls show --json`` prints it: the record's fields, the
    summary with ``durations``, who answered and ended it, the participants (label →
    address, contact, instance, transport, user agent), and the ladder's lines."""
    ladder = Ladder.of(record)
    data = dataclasses.asdict(record)
    data["summary"] = summary_json(record.summary)
    data["answered_by"] = _answerer(record, ladder) or None
    how, reason = _how_it_ended(record, ladder)
    data["ended_by"] = {"who": record.summary.ended_by, "how": how, "reason": reason or None}
    data["participants"] = [
        {**dataclasses.asdict(p), "transport": p.transport, "hint": p.hint} for p in ladder.parties
    ]
    data["messages"] = [_message_json(m, ladder) for m in record.messages]
    data["ladder"] = ladder.render(width=width)
    return data


def _message_json(m: CallMessageRecord, ladder: Ladder) -> dict[str, Any]:
    data = dataclasses.asdict(m)
    del data["head"]  # parsed into first_line and headers when read
    data["party"] = ladder.label(m.peer)
    data["headers"] = [[name, value] for name, value in m.headers]
    return data


# -- formatting -------------------------------------------------------------------------
def _wall(wall: float) -> str:
    return datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _short_seconds(value: float | None) -> str:
    """``4.2s``, ``75s``, ``12:05``, ``2:03:10``: a duration in at most 7 characters."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}s"
    if value < 100:
        return f"{value:.0f}s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _wrapped(prefix: str, text: str, width: int) -> list[str]:
    """``prefix`` + ``text``, wrapped under itself at ``width`` columns."""
    room = max(width - len(prefix), 20)
    lines = textwrap.wrap(text, room, break_long_words=True, break_on_hyphens=False) or [""]
    pad = " " * len(prefix)
    return [(prefix + lines[0]).rstrip(), *((pad + line).rstrip() for line in lines[1:])]


def _fit(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(room - 1, 0)] + "…"
