"""A store in memory: the ``BindingStore`` contract without a disk (tests, replays).

It keeps the encoded rows, not the bindings, so a load behaves as after a
restart (times converted through the wall clock, flows forgotten), exactly
as with ``SqliteStore``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sipwake.push.base import PushRecord
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import RegistrarEvent
from sipwake.store.base import StoreError, net_writes
from sipwake.store.codec import BindingRow, decode, encode

__all__ = ["MemoryStore"]


class MemoryStore:
    """``BindingStore`` in a dict keyed by ``binding_id``; ``PushLog`` in a deque
    keeping the last ``max_pushes`` attempts."""

    def __init__(self, *, max_pushes: int = 10_000) -> None:
        if max_pushes <= 0:
            raise ValueError(f"max_pushes must be > 0, got {max_pushes}")
        self._rows: dict[str, BindingRow] = {}
        self._pushes: deque[PushRecord] = deque(maxlen=max_pushes)
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows)

    def load(self, now: float, wall: float) -> list[Binding]:
        self._check()
        for binding_id in [k for k, r in self._rows.items() if r.expires_wall <= wall]:
            del self._rows[binding_id]
        rows = sorted(self._rows.values(), key=lambda r: (r.aor, r.registered_wall))
        return [decode(row, now, wall) for row in rows]

    def apply(self, changes: Iterable[RegistrarEvent], now: float, wall: float) -> None:
        self._check()
        for binding_id, binding in net_writes(changes).items():
            if binding is None:
                self._rows.pop(binding_id, None)
            else:
                self._rows[binding_id] = encode(binding, now, wall)

    def upsert(self, binding: Binding, now: float, wall: float) -> None:
        self._check()
        self._rows[binding.binding_id] = encode(binding, now, wall)

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

    def _check(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
