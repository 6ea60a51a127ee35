"""A store in memory: the ``BindingStore`` contract without a disk (tests, replays).

A load behaves as after a restart (times converted through the wall clock, flows
forgotten), exactly as with ``SqliteStore``: each binding is kept with the clocks of its
write (bindings are immutable) and goes through the row codec when loaded, not when
written, so a REGISTER costs a dict store here rather than an encoding.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sipwake.calls.heads import readable
from sipwake.calls.records import (
    CallEntry,
    CallMessageRecord,
    CallRecord,
    CallStepRecord,
    CallSummary,
    advance,
)
from sipwake.push.base import PushRecord
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import RegistrarEvent
from sipwake.store.base import StoreError, net_writes
from sipwake.store.codec import decode, encode

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Call:
    summary: CallSummary
    events: list[CallStepRecord] = field(default_factory=list)
    messages: list[CallMessageRecord] = field(default_factory=list)


class MemoryStore:
    """``BindingStore`` in a dict keyed by ``binding_id``; ``PushLog`` in a deque
    keeping the last ``max_pushes`` attempts; ``CallLog`` keeping the last
    ``max_calls`` calls."""

    def __init__(self, *, max_pushes: int = 10_000, max_calls: int = 10_000) -> None:
        if max_pushes <= 0:
            raise ValueError(f"max_pushes must be > 0, got {max_pushes}")
        if max_calls <= 0:
            raise ValueError(f"max_calls must be > 0, got {max_calls}")
        #: binding_id → (binding, monotonic and wall-clock time of its write).
        self._rows: dict[str, tuple[Binding, float, float]] = {}
        self._pushes: deque[PushRecord] = deque(maxlen=max_pushes)
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self.max_calls = max_calls
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows)

    def load(self, now: float, wall: float) -> list[Binding]:
        self._check()
        rows = [encode(*kept) for kept in self._rows.values()]
        for row in rows:
            if row.expires_wall <= wall:
                del self._rows[row.binding_id]
        live = sorted(
            (r for r in rows if r.expires_wall > wall), key=lambda r: (r.aor, r.registered_wall)
        )
        return [decode(row, now, wall) for row in live]

    def apply(self, changes: Iterable[RegistrarEvent], now: float, wall: float) -> None:
        self._check()
        for binding_id, binding in net_writes(changes).items():
            if binding is None:
                self._rows.pop(binding_id, None)
            else:
                self._rows[binding_id] = (binding, now, wall)

    def upsert(self, binding: Binding, now: float, wall: float) -> None:
        self._check()
        self._rows[binding.binding_id] = (binding, now, wall)

    def delete(self, binding_id: str) -> None:
        self._check()
        self._rows.pop(binding_id, None)

    def close(self) -> None:
        self._closed = True

    # -- PushLog ------------------------------------------------------------
    def record_push(self, record: PushRecord) -> None:
        self._check()
        self._pushes.append(record)

    def pushes(self, limit: int = 50, aor: str | None = None) -> list[PushRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self._check()
        out: list[PushRecord] = []
        for record in reversed(self._pushes):
            if len(out) >= limit:
                break
            if aor is None or record.aor == aor:
                out.append(record)
        return out

    # -- CallLog ------------------------------------------------------------
    def record_call_event(self, event: CallStepRecord) -> None:
        self.record_call_entries([event])

    def record_call_message(self, message: CallMessageRecord) -> None:
        self.record_call_entries([message])

    def record_call_entries(self, entries: Sequence[CallEntry]) -> None:
        self._check()
        for entry in entries:
            call = self._calls.get(entry.ref)
            if call is None:
                call = self._calls[entry.ref] = _Call(summary=advance(None, entry))
                while len(self._calls) > self.max_calls:
                    self._calls.popitem(last=False)
            else:
                call.summary = advance(call.summary, entry)
            if isinstance(entry, CallStepRecord):
                call.events.append(entry)
            else:
                call.messages.append(entry)

    def calls(self, limit: int = 50, aor: str | None = None) -> list[CallSummary]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self._check()
        out: list[CallSummary] = []
        for call in reversed(self._calls.values()):
            if len(out) >= limit:
                break
            if aor is None or call.summary.aor == aor:
                out.append(call.summary)
        return out

    def call(self, ref: str) -> CallRecord | None:
        self._check()
        call = self._calls.get(ref)
        if call is None:
            return None
        call_id = call.summary.call_id
        pushes = [p for p in self._pushes if call_id and p.call_id == call_id]
        return CallRecord(
            summary=call.summary,
            events=tuple(sorted(call.events, key=lambda e: (e.wall, e.seq))),
            messages=tuple(
                readable(m) for m in sorted(call.messages, key=lambda m: (m.wall, m.seq))
            ),
            pushes=tuple(sorted(pushes, key=lambda p: p.wall)),
        )

    def _check(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
