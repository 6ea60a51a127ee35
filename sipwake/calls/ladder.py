"""A call record as text: its timeline, and a ladder diagram for the terminal (pure).

The ladder has one column (lane) per party (``participants``): the caller,
sipwake, each push service, and each device or other peer the call reached, in
order of appearance. Two header lines name each lane with its short label
(``caller``, ``alice#1``) and what kind of device it is (``iPhone, apns``); the
legend (``sipwake.calls.view``) gives each label's address, contact, instance,
transport and user agent. Each line starts with the time since the call's first
entry (``+0.000 s``) and shows one of:

* a SIP message as an arrow between sipwake and the other party, labelled with its
  method or status (``INVITE``, ``180 Ringing``; a response to anything but an
  INVITE names its method, ``200 OK (BYE)``), and under it, one line each, the
  header fields that explain it (``EXPLAINING_HEADERS``: Reason, Diversion,
  History-Info, Warning, Retry-After);
* a push as an arrow from sipwake to the push service (``push call``) and its result
  back (``delivered 12 ms``). Arrows come from the ``push-sent``/``push-result``
  steps; the push records joined by Call-ID name the service that handled the push
  and give the latency the provider measured (without records the service is the
  one the step names and the latency is the time between the two steps);
* any other step as a note on sipwake's lane (``* registered iphone``;
  ``* answered by alice#1``; ``* hangup by the callee``), except ``branch`` steps,
  which the legend shows.

Lanes are spread over ``width`` columns (80 by default, the terminal a new user
has: eight lanes fit); labels too long for their lane or arrow end in ``…``, a
device label keeping its ``#n``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipwake.calls.participants import SIPWAKE, Participant, name_devices, participants
from sipwake.calls.records import CallMessageRecord, CallRecord, CallStepRecord
from sipwake.push.base import PushRecord

__all__ = [
    "DEFAULT_WIDTH",
    "EXPLAINING_HEADERS",
    "Ladder",
    "format_offset",
    "message_label",
    "render_ladder",
    "render_timeline",
]

DEFAULT_WIDTH = 80
_PREFIX = 11
"""Columns taken by the time offset (``+12.345 s`` right-aligned, then a space)."""
_MIN_GAP = 8
"""Fewest columns between two lanes (eight lanes fit 80 columns)."""
_MAX_GAP = 26
"""Most columns between two lanes (a ladder stays compact on a wide terminal)."""
#: Header fields the ladder prints under their message's arrow.
EXPLAINING_HEADERS = ("Reason", "Diversion", "History-Info", "Warning", "Retry-After")
#: Steps the ladder and the timeline leave to the legend.
_LEGEND_STEPS = frozenset({"branch"})


@dataclass(frozen=True, slots=True)
class _Arrow:
    wall: float
    src: str
    dst: str
    label: str
    keep: str = ""
    """A label's end that is never cut (a push's latency)."""
    short: str = ""
    """A shorter label for a short arrow (``200/BYE`` for ``200 OK (BYE)``)."""
    notes: tuple[tuple[str, str], ...] = ()
    """``EXPLAINING_HEADERS`` of the message, printed under the arrow."""


@dataclass(frozen=True, slots=True)
class _Note:
    wall: float
    text: str
    lane: str = ""
    """A lane whose label ends the text (filled in once labels are known)."""


def format_offset(seconds: float) -> str:
    """``+0.000 s``: seconds since the call's first entry."""
    return f"+{max(seconds, 0.0):.3f} s"


def message_label(first_line: str, cseq_method: str = "") -> str:
    """An arrow's label: a request's method, a response's status and reason (and the
    method it answers unless that is INVITE)."""
    if first_line.startswith("SIP/"):
        label = first_line.partition(" ")[2].strip() or first_line
        if cseq_method and cseq_method != "INVITE":
            label = f"{label} ({cseq_method})"
        return label
    return first_line.partition(" ")[0]


def _short_label(first_line: str, cseq_method: str) -> str:
    """A response's label without its reason phrase (``200/BYE``), for short arrows."""
    if not first_line.startswith("SIP/"):
        return ""
    status = first_line.split(" ")[1] if first_line.count(" ") else first_line
    return f"{status}/{cseq_method}" if cseq_method and cseq_method != "INVITE" else status


def render_timeline(record: CallRecord, parties: tuple[Participant, ...] = ()) -> list[str]:
    """One line per step: offset, step, detail (devices named by their labels in
    ``parties``)."""
    t0 = _start(record)
    return [
        f"{format_offset(e.wall - t0):>10}  {e.step:<11} {name_devices(e.detail, parties)}".rstrip()
        for e in record.events
        if e.step not in _LEGEND_STEPS
    ]


def render_ladder(record: CallRecord, *, width: int = DEFAULT_WIDTH) -> list[str]:
    """The call as a ladder diagram, one string per line (no trailing spaces)."""
    return Ladder.of(record).render(width=width)


@dataclass(frozen=True, slots=True)
class Ladder:
    """A call's lanes (``participants``) and the arrows and notes between them."""

    parties: tuple[Participant, ...]
    items: tuple[_Arrow | _Note, ...]
    t0: float

    @classmethod
    def of(cls, record: CallRecord) -> Ladder:
        items = _items(record)
        message_peers = {m.peer for m in record.messages}
        push_lanes: list[str] = []
        for item in items:
            if isinstance(item, _Arrow):
                for lane in (item.src, item.dst):
                    if lane != SIPWAKE and lane not in message_peers and lane not in push_lanes:
                        push_lanes.append(lane)
        parties = participants(record, push_lanes)
        items = [_labelled(item, parties) for item in items]
        return cls(tuple(parties), tuple(items), _start(record))

    def label(self, lane: str) -> str:
        return next((p.label for p in self.parties if p.lane == lane), lane)

    def render(self, *, width: int = DEFAULT_WIDTH) -> list[str]:
        lanes = [p.lane for p in self.parties]
        labels = [p.label for p in self.parties]
        hints = [p.hint for p in self.parties]
        gaps, edge = _spacing(lanes, labels, hints, self.items, width - _PREFIX)
        xs: dict[str, int] = {}
        x = _PREFIX + edge // 2
        for i, lane in enumerate(lanes):
            xs[lane] = x
            x += gaps[i] if i < len(gaps) else 0
        at = [xs[lane] for lane in lanes]
        label_rooms = _rooms(labels, at, width)
        hint_rooms = _rooms(hints, at, width)
        out = [
            _header([_fit_label(t, r) for t, r in zip(labels, label_rooms, strict=True)], at),
            _header([_fit(t, r) for t, r in zip(hints, hint_rooms, strict=True)], at),
        ]
        out = [line for line in out if line]
        out.append(_bars(xs, width=0).rstrip())
        for item in self.items:
            prefix = f"{format_offset(item.wall - self.t0):>10} "
            row = list(_bars(xs, width=0))
            if isinstance(item, _Arrow):
                _draw_arrow(row, xs[item.src], xs[item.dst], item.label, item.keep, item.short)
            else:
                _draw_note(row, xs[SIPWAKE], item.text, width)
            out.append((prefix + "".join(row)[_PREFIX:]).rstrip())
            if isinstance(item, _Arrow):
                for name, value in item.notes:  # the header fields that explain it
                    row = list(_bars(xs, width=0))
                    _draw_text(row, min(xs[item.src], xs[item.dst]) + 3, f"{name}: {value}", width)
                    out.append(("".join(row)).rstrip())
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
    answerer = ""
    """Peer of the latest 2xx to INVITE received (the branch that answered)."""
    for entry in entries:
        if isinstance(entry, CallMessageRecord):
            method = entry.cseq_method
            label = message_label(entry.first_line, method)
            short = _short_label(entry.first_line, method)
            notes = tuple((n, v) for n, v in entry.headers if n in EXPLAINING_HEADERS)
            if entry.direction == "in":
                out.append(_Arrow(entry.wall, entry.peer, SIPWAKE, label, "", short, notes))
                if entry.first_line.startswith("SIP/2.0 2") and method in ("INVITE", ""):
                    answerer = entry.peer
            else:
                out.append(_Arrow(entry.wall, SIPWAKE, entry.peer, label, "", short, notes))
        elif entry.step in _LEGEND_STEPS:
            continue
        elif entry.step == "push-sent":
            lane, label = pushes.sent(entry)
            out.append(_Arrow(entry.wall, SIPWAKE, lane, label))
        elif entry.step == "push-result":
            lane, label, latency = pushes.result(entry)
            out.append(_Arrow(entry.wall, lane, SIPWAKE, label, latency))
        elif entry.step == "answered" and answerer:
            out.append(_Note(entry.wall, "answered by ", answerer))
        else:
            out.append(_Note(entry.wall, f"{entry.step} {entry.detail}".strip()))
    return out


def _labelled(item: _Arrow | _Note, parties: list[Participant]) -> _Arrow | _Note:
    """A note with its devices named by their labels (``forked alice#1``; the lane that
    answered for ``answered by``)."""
    if not isinstance(item, _Note):
        return item
    if item.lane:
        label = next((p.label for p in parties if p.lane == item.lane), item.lane)
        return _Note(item.wall, item.text + label)
    return _Note(item.wall, name_devices(item.text, parties))


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


def _spacing(
    lanes: list[str],
    labels: list[str],
    hints: list[str],
    items: tuple[_Arrow | _Note, ...],
    room: int,
) -> tuple[list[int], int]:
    """Columns between neighbouring lanes, and the margin (``edge``, half left of the
    first lane, half right of the last), fitting ``room`` columns when they can. Each
    gap starts from what its arrows and header texts need (``_MIN_GAP`` to
    ``_MAX_GAP``), gives up columns where it is widest until the ladder fits, and
    shares out any columns left over."""
    index = {lane: i for i, lane in enumerate(lanes)}
    needs = [_MIN_GAP] * (len(lanes) - 1)
    for i in range(len(needs)):
        for texts in (labels, hints):
            needs[i] = max(needs[i], (len(texts[i]) + len(texts[i + 1])) // 2 + 2)
    for item in items:
        if isinstance(item, _Arrow):
            lo, hi = sorted((index[item.src], index[item.dst]))
            if hi == lo + 1:
                need = len(item.label) + 5 + (len(item.keep) + 1 if item.keep else 0)
                needs[lo] = max(needs[lo], need)
    gaps = [min(_MAX_GAP, need) for need in needs]
    edge = max(_MIN_GAP, min(20, room // len(lanes)))
    while gaps and sum(gaps) + edge > room and max(gaps) > _MIN_GAP:
        gaps[gaps.index(max(gaps))] -= 1
    spare = room - sum(gaps) - edge
    while gaps and spare > 0 and min(gaps) < _MAX_GAP:
        for i in sorted(range(len(gaps)), key=lambda i: gaps[i]):
            if spare > 0 and gaps[i] < _MAX_GAP:
                gaps[i] += 1
                spare -= 1
    return gaps, edge


def _rooms(texts: list[str], at: list[int], width: int) -> list[int]:
    """Columns each header text may take, centred on its lane at ``at``: up to its
    neighbours' texts (each given at most half the distance), and ``width``."""
    rooms = []
    for i, x in enumerate(at):
        sides = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(at):
                distance = abs(x - at[j])
                sides.append(distance - min((len(texts[j]) + 1) // 2, distance // 2) - 1)
        sides.append(x if i == 0 else width)
        if i + 1 == len(at):
            sides.append(width - x - 1)
        rooms.append(max(2 * min(sides) - 1, 1))
    return rooms


def _header(texts: list[str], at: list[int]) -> str:
    if not any(texts):
        return ""
    row = [" "] * (max(at) + max(len(t) for t in texts) + 1)
    for text, x in zip(texts, at, strict=True):
        start = max(0, x - len(text) // 2)
        row[start : start + len(text)] = text
    return "".join(row).rstrip()


def _draw_arrow(
    row: list[str], x_src: int, x_dst: int, label: str, keep: str, short: str = ""
) -> None:
    lo, hi = min(x_src, x_dst), max(x_src, x_dst)
    span = hi - lo - 1
    if short and len(label) > span - 5:
        label = short
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


def _draw_text(row: list[str], x: int, text: str, width: int) -> None:
    """``text`` from column ``x`` over the lanes to its right, cut at ``width``."""
    text = _fit(text, max(width - x, 8))
    end = x + len(text)
    if end > len(row):
        row.extend(" " * (end - len(row)))
    row[x - 1 : end] = " " + text


def _fit_label(label: str, room: int) -> str:
    """A lane label cut to ``room``, keeping a device's ``#n`` (``alexand…#2``)."""
    base, hash_, number = label.rpartition("#")
    if len(label) <= room or not hash_ or not number.isdigit() or room < len(number) + 3:
        return _fit(label, room)
    return f"{_fit(base, room - len(number) - 1)}#{number}"


def _fit(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    return text[: max(room - 1, 0)] + "…"
