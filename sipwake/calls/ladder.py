"""A call record as text: its timeline, and a ladder diagram for the terminal (pure).

The ladder has one column (lane) per party: the caller, sipwake, each device or
branch the call reached (by transport address, in order of appearance) and each
push service. Each line starts with the time since the call's first entry
(``+0.000 s``) and shows one of:

* a SIP message as an arrow between sipwake and the other party, labelled with its
  method or status (``INVITE``, ``180 Ringing``);
* a push as an arrow from sipwake to the push service (``push call``) and its result
  back (``delivered 12 ms``). Arrows come from the ``push-sent``/``push-result``
  steps; the push records joined by Call-ID name the service that handled the push
  and give the latency the provider measured (without records the service is the
  one the step names and the latency is the time between the two steps);
* any other step as a note on sipwake's lane (``* registered iphone``).

Lanes are spread over ``width`` columns (100 by default); labels too long for
their arrow end in ``…``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipwake.calls.records import CallMessageRecord, CallRecord, CallStepRecord
from sipwake.push.base import PushRecord

__all__ = ["format_offset", "message_label", "render_ladder", "render_timeline"]

_PREFIX = 11
"""Columns taken by the time offset (``+12.345 s`` right-aligned, then a space)."""
SIPWAKE = "sipwake"


@dataclass(frozen=True, slots=True)
class _Arrow:
    wall: float
    src: str
    dst: str
    label: str
    keep: str = ""
    """A label's end that is never cut (a push's latency)."""


@dataclass(frozen=True, slots=True)
class _Note:
    wall: float
    text: str


def format_offset(seconds: float) -> str:
    """``+0.000 s``: seconds since the call's first entry."""
    return f"+{max(seconds, 0.0):.3f} s"


def message_label(first_line: str) -> str:
    """An arrow's label: a request's method, a response's status and reason."""
    if first_line.startswith("SIP/"):
        return first_line.partition(" ")[2].strip() or first_line
    return first_line.partition(" ")[0]


def render_timeline(record: CallRecord) -> list[str]:
    """One line per step: offset, step, detail."""
    t0 = _start(record)
    return [
        f"{format_offset(e.wall - t0):>10}  {e.step:<11} {e.detail}".rstrip() for e in record.events
    ]


def render_ladder(record: CallRecord, *, width: int = 100) -> list[str]:
    """The call as a ladder diagram, one string per line (no trailing spaces)."""
    t0 = _start(record)
    items = _items(record)
    caller = _caller_peer(record.messages)
    lanes: list[str] = [caller or "caller", SIPWAKE]
    for item in items:
        if isinstance(item, _Arrow):
            for lane in (item.src, item.dst):
                if lane not in lanes:
                    lanes.append(lane)
    gap = max(12, min(26, (width - _PREFIX) // len(lanes)))
    xs = {lane: _PREFIX + gap // 2 + i * gap for i, lane in enumerate(lanes)}
    push_lanes = {a.dst for a in items if isinstance(a, _Arrow) and a.src == SIPWAKE} - {
        m.peer for m in record.messages
    }
    names: list[str] = []
    branch = 0
    for lane in lanes:
        if lane == SIPWAKE or lane in push_lanes:
            names.append(lane)
        elif lane == lanes[0]:
            names.append("caller")
        else:
            branch += 1
            names.append(f"branch {branch}")
    addresses = [
        "" if lane in (SIPWAKE, "caller") or lane in push_lanes else lane for lane in lanes
    ]
    out = [_header(names, lanes, xs, gap), _header(addresses, lanes, xs, gap)]
    out = [line for line in out if line]
    out.append(_bars(xs, width=0).rstrip())
    for item in items:
        prefix = f"{format_offset(item.wall - t0):>10} "
        row = list(_bars(xs, width=0))
        if isinstance(item, _Arrow):
            _draw_arrow(row, xs[item.src], xs[item.dst], item.label, item.keep)
        else:
            _draw_note(row, xs[SIPWAKE], item.text, width)
        out.append((prefix + "".join(row)[_PREFIX:]).rstrip())
    return out


# -- building the items ---------------------------------------------------------------
def _start(record: CallRecord) -> float:
    walls = [e.wall for e in record.events] + [m.wall for m in record.messages]
    return min(walls) if walls else record.summary.started


def _caller_peer(messages: tuple[CallMessageRecord, ...]) -> str | None:
    for m in messages:
        if m.direction == "in" and m.first_line.startswith("INVITE "):
            return m.peer
    for m in messages:
        if m.direction == "in":
            return m.peer
    return None


def _items(record: CallRecord) -> list[_Arrow | _Note]:
    entries: list[CallStepRecord | CallMessageRecord] = [*record.events, *record.messages]
    entries.sort(key=lambda e: (e.wall, e.seq))
    pushes = _PushMatcher(record.pushes)
    out: list[_Arrow | _Note] = []
    for entry in entries:
        if isinstance(entry, CallMessageRecord):
            label = message_label(entry.first_line)
            if entry.direction == "in":
                out.append(_Arrow(entry.wall, entry.peer, SIPWAKE, label))
            else:
                out.append(_Arrow(entry.wall, SIPWAKE, entry.peer, label))
        elif entry.step == "push-sent":
            lane, label = pushes.sent(entry)
            out.append(_Arrow(entry.wall, SIPWAKE, lane, label))
        elif entry.step == "push-result":
            lane, label, latency = pushes.result(entry)
            out.append(_Arrow(entry.wall, lane, SIPWAKE, label, latency))
        else:
            out.append(_Note(entry.wall, f"{entry.step} {entry.detail}".strip()))
    return out


class _PushMatcher:
    """Pairs ``push-sent``/``push-result`` steps with the push records, in order."""

    def __init__(self, records: tuple[PushRecord, ...]) -> None:
        self._unsent = list(records)
        self._awaiting: list[tuple[PushRecord | None, str, str, float]] = []
        """(record, kind, lane, wall) of pushes sent and not yet answered."""
        self._last_lane = "push"

    def sent(self, step: CallStepRecord) -> tuple[str, str]:
        # "call to apns (try 1)" or "cancel (missed call)"
        kind, _, rest = step.detail.partition(" ")
        service = rest.removeprefix("to ").split(" ")[0] if rest.startswith("to ") else None
        record = None
        for candidate in self._unsent:
            base = candidate.pn_provider.split(".")[0]
            if candidate.kind == kind and (service is None or base == service):
                record = candidate
                self._unsent.remove(candidate)
                break
        if record is not None:
            lane = record.provider
        elif service is not None:
            lane = service
        else:  # a cancel push goes where this call's last push went
            lane = self._last_lane
        self._last_lane = lane
        self._awaiting.append((record, kind, lane, step.wall))
        return lane, f"push {kind}"

    def result(self, step: CallStepRecord) -> tuple[str, str, str]:
        # "call apns delivered" or "call apns retry TooManyRequests"
        words = step.detail.split(" ")
        kind, provider = [*words, "", ""][:2]
        status = " ".join(words[2:]) or "?"
        same = [i for i, a in enumerate(self._awaiting) if a[1] == kind]
        exact = [i for i in same if self._awaiting[i][2] == provider]
        if not same:
            return provider or "push", status, ""
        record, _, lane, wall = self._awaiting.pop((exact or same)[0])
        if record is not None:
            latency = record.latency
            if record.http_status is not None and record.http_status != 200:
                status = f"{status} {record.http_status}"
        else:
            latency = step.wall - wall
        if provider and provider != lane:  # the route's fallback handled it
            status = f"{provider}: {status}"
        return lane, status, f"{latency * 1000:.0f} ms"


# -- drawing --------------------------------------------------------------------------
def _bars(xs: dict[str, int], *, width: int) -> str:
    row = [" "] * max(width, max(xs.values()) + 1)
    for x in xs.values():
        row[x] = "|"
    return "".join(row)


def _header(texts: list[str], lanes: list[str], xs: dict[str, int], gap: int) -> str:
    if not any(texts):
        return ""
    row = [" "] * (max(xs.values()) + gap)
    for text, lane in zip(texts, lanes, strict=True):
        text = _fit(text, gap - 1)
        start = max(0, xs[lane] - len(text) // 2)
        row[start : start + len(text)] = text
    return "".join(row).rstrip()


def _draw_arrow(row: list[str], x_src: int, x_dst: int, label: str, keep: str) -> None:
    lo, hi = min(x_src, x_dst), max(x_src, x_dst)
    span = hi - lo - 1
    if keep and len(keep) + 2 <= span - 4:
        label = f"{_fit(label, span - 5 - len(keep))} {keep}"
    else:
        label = _fit(f"{label} {keep}".strip(), span - 4)
    if x_dst > x_src:
        body = f"- {label} ".ljust(span - 1, "-") + ">"
    else:
        body = f"<- {label} ".ljust(span, "-")
    row[lo + 1 : hi] = body[:span]


def _draw_note(row: list[str], x: int, text: str, width: int) -> None:
    row[x] = "*"
    room = max(width - (x + 2), 8)
    text = _fit(text, room)
    end = x + 2 + len(text)
    if end > len(row):
        row.extend(" " * (end - len(row)))
    row[x + 1 : end] = " " + text
    if end < len(row):  # keep a space between the note and the next lane's bar
        row[end] = " "


def _fit(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    return text[: max(room - 1, 0)] + "…"
