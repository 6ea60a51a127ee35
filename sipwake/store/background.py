"""Call records and push log rows written by a thread, off the path of SIP messages.

Theory of operation
-------------------
Nobody waits for a call record or a push log row: no SIP response confirms one.
So they do not share the event loop's time with the messages. ``record_push`` and
``record_call_entries`` only append to a bounded queue (a few microseconds); a
writer thread takes what gathered and writes it in one transaction of its own
SQLite connection, every ``interval`` seconds after the first row queued, or at
once when ``max_rows`` wait, whichever comes first. SQLite leaves Python's lock
while it writes and syncs, so the loop goes on handling messages meanwhile.

Durability: a row is on disk (``synchronous=FULL``) a few milliseconds after it
was queued. A crash may lose those last milliseconds of call records and pushes;
never a binding answered 200 (bindings are not written here: see
``sipwake.transport.driver``, group commit). ``close()`` writes everything
queued, then stops the thread.

Bounds: at most ``max_queue`` rows wait; beyond that new rows are dropped and
counted (``dropped``), with one warning per episode, rather than let a slow
disk grow the process. A batch the store refuses is logged and dropped
(``failures``).

The loop's connection and this one take turns through ``lock`` (shared with the
``SqliteStore`` that writes bindings): a binding commit waits at most for the
batch being written, not for SQLite's busy-retry sleeps.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from sipwake.calls.records import (
    CallEntry,
    CallMessageRecord,
    CallRecord,
    CallStepRecord,
    CallSummary,
)
from sipwake.push.base import PushRecord
from sipwake.store.sqlite import SqliteStore

__all__ = ["LogWriter"]

logger = logging.getLogger("sipwake.store")


class LogWriter:
    """``PushLog`` and ``CallLog``: writes through a writer thread; reads (after the
    writes queued so far) through ``reader``, a store of the caller's thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock: threading.Lock | None = None,
        reader: SqliteStore | None = None,
        interval: float = 0.005,
        max_rows: int = 1000,
        max_queue: int = 100_000,
        max_pushes: int = 100_000,
        max_calls: int = 10_000,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if max_rows <= 0 or max_queue < max_rows:
            raise ValueError(f"need 0 < max_rows <= max_queue, got {max_rows}, {max_queue}")
        self.path = os.fspath(path)
        self.interval = interval
        self.max_rows = max_rows
        self.max_queue = max_queue
        self.dropped = 0
        """Rows refused because ``max_queue`` were waiting."""
        self.failures = 0
        """Batches the store refused (each logged, then dropped)."""
        self.batches = 0
        """Transactions written."""
        self._lock = lock
        self._reader = reader
        self._own_reader = reader is None
        self._pushes: list[PushRecord] = []
        self._entries: list[CallEntry] = []
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._full = False
        self._opened = threading.Event()
        self._open_error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(max_pushes, max_calls),
            name="sipwake-log-writer",
            daemon=True,
        )
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    # -- PushLog / CallLog writes -------------------------------------------------------
    def record_push(self, record: PushRecord) -> None:
        with self._cond:
            if self._room(1):
                self._pushes.append(record)
                self._queued()

    def record_call_event(self, event: CallStepRecord) -> None:
        self.record_call_entries([event])

    def record_call_message(self, message: CallMessageRecord) -> None:
        self.record_call_entries([message])

    def record_call_entries(self, entries: Sequence[CallEntry]) -> None:
        if not entries:
            return
        with self._cond:
            if self._room(len(entries)):
                self._entries.extend(entries)
                self._queued()

    # -- reads --------------------------------------------------------------------------
    def pushes(self, limit: int = 50, aor: str | None = None) -> list[PushRecord]:
        return self._read().pushes(limit, aor)

    def calls(self, limit: int = 50, aor: str | None = None) -> list[CallSummary]:
        return self._read().calls(limit, aor)

    def call(self, ref: str) -> CallRecord | None:
        return self._read().call(ref)

    def _read(self) -> SqliteStore:
        self.flush()
        if self._reader is None:
            self._reader = SqliteStore(self.path, lock=self._lock)
        return self._reader

    # -- control ------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or refused); False on timeout."""
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not (self._pushes or self._entries or self._busy), timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("call records: the writer did not finish within %.0f s", timeout)
        if self._own_reader and self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pushes) + len(self._entries)

    # -- internals ----------------------------------------------------------------------
    def _room(self, rows: int) -> bool:
        if self._closing:
            return False
        if len(self._pushes) + len(self._entries) + rows > self.max_queue:
            self.dropped += rows
            if not self._full:
                self._full = True
                logger.warning(
                    "call records: %d rows wait for the disk: new ones are dropped",
                    self.max_queue,
                )
            return False
        self._full = False
        return True

    def _queued(self) -> None:
        waiting = len(self._pushes) + len(self._entries)
        if waiting == 1 or waiting >= self.max_rows:
            self._cond.notify_all()

    def _run(self, max_pushes: int, max_calls: int) -> None:
        try:
            store = SqliteStore(
                self.path, max_pushes=max_pushes, max_calls=max_calls, lock=self._lock
            )
        except Exception as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pushes or self._entries or self._closing)
                    if not self._closing:
                        # Rows gather for ``interval`` after the first, unless enough wait.
                        self._cond.wait_for(
                            lambda: (
                                self._closing
                                or len(self._pushes) + len(self._entries) >= self.max_rows
                            ),
                            self.interval,
                        )
                    pushes, entries = self._pushes, self._entries
                    self._pushes, self._entries = [], []
                    self._busy = bool(pushes or entries)
                    if not self._busy and self._closing:
                        return
                try:
                    store.record_log(pushes, entries)
                    self.batches += 1
                except Exception as exc:  # a full disk must not stop the writer
                    self.failures += 1
                    logger.warning(
                        "call records: cannot write %d rows: %s", len(pushes) + len(entries), exc
                    )
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        finally:
            store.close()
