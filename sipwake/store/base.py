"""The binding store contract: what the node persists and loads back at start.

A store keeps bindings across restarts. The registrar stays in memory and is
the authority while the process runs; the store is written through, change by
change, and read once at start (``Registrar.restore(store.load(now, wall))``).

The rule a store must keep (RFC 3261 §10.3 step 8: a 200 lists bindings the
registrar holds): ``apply(result.changes, now, wall)`` returns only once the
changes are durable, and the node sends the 200 only after it returned. If it
raises ``StoreError``, the node calls ``Registrar.revert(changes)`` and answers
500 (§10.3 step 7: all updates or none).

Time: bindings carry monotonic times (``now``, seconds); a store writes
wall-clock times (``wall``, Unix seconds) so that a binding keeps its
remaining lifetime across a restart, and converts back with the ``now`` and
``wall`` of the loading process. Flow ids are not kept: a flow names a
connection of the process that wrote it, and a restarted process must never
send over a recycled flow number to another client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, assert_never

from sipwake.calls.records import (
    CallEntry,
    CallMessageRecord,
    CallRecord,
    CallStepRecord,
    CallSummary,
)
from sipwake.errors import SipwakeError
from sipwake.push.base import PushRecord
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    PushTargetRemoved,
    RegistrarEvent,
)

__all__ = ["BindingStore", "CallLog", "PushLog", "StoreError", "net_writes"]


class StoreError(SipwakeError):
    """A store could not read or write (disk, schema version, corrupt data)."""


class BindingStore(Protocol):
    """Where bindings survive a restart. Methods are synchronous and cheap (one
    transaction each); call them from the event loop thread."""

    def load(self, now: float, wall: float) -> list[Binding]:
        """Every unexpired binding, times converted to this process's monotonic
        clock; expired rows are deleted."""
        ...

    def apply(self, changes: Iterable[RegistrarEvent], now: float, wall: float) -> None:
        """Persist the registrar's changes in one durable transaction, or raise
        ``StoreError`` having persisted none of them."""
        ...

    def upsert(self, binding: Binding, now: float, wall: float) -> None:
        """Write one binding (insert or replace by ``binding_id``)."""
        ...

    def delete(self, binding_id: str) -> None:
        """Forget one binding (no error if absent)."""
        ...

    def close(self) -> None: ...


class PushLog(Protocol):
    """Where push attempts are kept for ``sipwake pushes`` (a store may offer it beside
    ``BindingStore``). Records carry tokens only masked. Synchronous, cheap, bounded:
    the oldest records make way for new ones."""

    def record_push(self, record: PushRecord) -> None:
        """Keep one push attempt; raise ``StoreError`` if it cannot."""
        ...

    def pushes(self, limit: int = 50, aor: str | None = None) -> list[PushRecord]:
        """The ``limit`` latest attempts, newest first; only ``aor``'s when given."""
        ...


class CallLog(Protocol):
    """Where call records are kept for ``sipwake calls`` (a store may offer it beside
    ``BindingStore`` and ``PushLog``; ``sipwake.calls.CallRecorder`` writes it).
    Synchronous and bounded: the oldest calls make way for new ones. Each entry updates
    the call's summary with ``sipwake.calls.records.advance``."""

    def record_call_event(self, event: CallStepRecord) -> None:
        """Keep one step of a call; raise ``StoreError`` if it cannot."""
        ...

    def record_call_message(self, message: CallMessageRecord) -> None:
        """Keep one SIP message of a call; raise ``StoreError`` if it cannot."""
        ...

    def record_call_entries(self, entries: Sequence[CallEntry]) -> None:
        """Keep several steps and messages at once (one transaction where the store has
        them): all of them, or none and ``StoreError``."""
        ...

    def calls(self, limit: int = 50, aor: str | None = None) -> list[CallSummary]:
        """The ``limit`` latest calls, newest first; only calls to ``aor`` when given."""
        ...

    def call(self, ref: str) -> CallRecord | None:
        """One call in full, with the push attempts recorded under its Call-ID."""
        ...


def net_writes(changes: Iterable[RegistrarEvent]) -> dict[str, Binding | None]:
    """What ``changes`` leave to write: ``binding_id`` → the binding to upsert, or
    None to delete. Later changes of one binding win; the order of first
    appearance is kept."""
    out: dict[str, Binding | None] = {}
    for change in changes:
        match change:
            case (
                BindingAdded(binding=b) | BindingRefreshed(binding=b) | PushTargetRemoved(binding=b)
            ):
                out[b.binding_id] = b
            case BindingRemoved(binding=b) | BindingExpired(binding=b):
                out[b.binding_id] = None
            case _:
                assert_never(change)
    return out
