"""Binding changes committed by a thread of their own while the event loop goes on.

Theory of operation
-------------------
A REGISTER's 200 waits until its bindings are durable (RFC 3261 §10.3; README:
storage). The driver gathers the binding changes of a loop turn and hands them
here as one batch (``submit``); this writer turns them into rows at once (on the
loop's thread: Python work, cheap), and a writer thread writes them with a SQLite
connection of its own in one transaction: ``BEGIN IMMEDIATE``, a few multi-row
statements, ``COMMIT`` with its fsync (``synchronous=FULL``) and, now and then,
a WAL checkpoint. SQLite leaves Python's lock while it works, so the loop keeps
reading and handling messages meanwhile. When the transaction is committed (or
failed) the writer calls ``done(ok)`` on the loop's thread
(``call_soon_threadsafe``); the driver then sends the 200s (or 500s).

At most one batch is in the writer at a time (``submit`` refuses a second): the
driver gathers what comes meanwhile into the next batch (group commit), so that
batches commit in the order they were made and a failed one never has a later
one, which built on it, committed behind it.

The loop's own connection (``SqliteStore``: load at start, held MESSAGEs), this
writer and ``LogWriter`` take turns through one ``lock``, held around each write
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Literal

from sipwake.registrar.events import RegistrarEvent
from sipwake.store.base import StoreError
from sipwake.store.sqlite import BindingRows, SqliteStore, binding_rows

__all__ = ["BindingWriter"]

logger = logging.getLogger("sipwake.store")

_Job = tuple[BindingRows, Callable[[bool], None]]


class BindingWriter:
    """A ``ChangeSink`` for the driver that commits in a thread (see the module text)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loop: asyncio.AbstractEventLoop,
        lock: threading.Lock | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        self.path = os.fspath(path)
        self.commits = 0
        """Transactions committed."""
        self.failures = 0
        """Batches the store refused (each answered ``done(False)``)."""
        self._loop = loop
        self._lock = lock
        self._synchronous: Literal["FULL", "NORMAL"] = synchronous
        self._cond = threading.Condition()
        self._job: _Job | None = None
        self._closing = False
        self._opened = threading.Event()
        self._open_error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, name="sipwake-binding-writer", daemon=True
        )
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def submit(
        self, events: tuple[RegistrarEvent, ...], now: float, done: Callable[[bool], None]
    ) -> None:
        """Commit ``events`` (``now``: the loop's clock, read just before) in one
        transaction, then call ``done(ok)`` on the loop's thread; never calls it before
        returning. Raises ``StoreError`` when closed, ``RuntimeError`` when a batch is
        still in the writer."""
        rows = binding_rows(events, now, time.time())
        with self._cond:
            if self._closing:
                raise StoreError(f"{self.path}: the binding writer is closed")
            if self._job is not None:
                raise RuntimeError("a batch is still being committed")
            self._job = (rows, done)
            self._cond.notify()

    @property
    def busy(self) -> bool:
        """A batch is being committed."""
        with self._cond:
            return self._job is not None

    def close(self, timeout: float = 10.0) -> None:
        """Commit the batch in the writer, if any, then stop the thread. Its ``done`` is
        not called once the loop has stopped (the 200s are not sent; the rows are
        durable)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("bindings: the writer did not finish within %.0f s", timeout)

    def _run(self) -> None:
        try:
            store = SqliteStore(self.path, lock=self._lock, synchronous=self._synchronous)
        except Exception as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._job is not None or self._closing)
                    job = self._job
                if job is None:
                    return  # closing, nothing left
                rows, done = job
                ok = True
                try:
                    store.write_rows(rows)
                    self.commits += 1
                except Exception:  # a full disk must not stop the writer
                    self.failures += 1
                    ok = False
                    logger.exception(
                        "binding store failed: %d rows not written", len(rows[0]) + len(rows[1])
                    )
                with self._cond:
                    self._job = None
                    self._cond.notify_all()
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    self._loop.call_soon_threadsafe(done, ok)
        finally:
            store.close()
