"""Bindings in a SQLite file: survives a restart and a ``kill -9``.

Durability (the choice and why): the database runs in WAL mode and every
``apply`` (``write_rows``) is one ``BEGIN IMMEDIATE … COMMIT`` transaction that
returns only after SQLite committed it; the node sends the 200 OK after that.
The server's driver hands the changes of every REGISTER read in one turn of the
event loop (or of the turns that ended while the previous batch committed) to
``sipwake.store.writer.BindingWriter`` at once (group commit): one transaction,
one fsync, in the writer's thread, then their 200s. Rows are written a few
dozen per statement (``_ROWS_PER_STATEMENT``), the bindings' JSON columns
formatted without ``json.dumps`` (``codec.encode_values``).
In WAL mode a committed transaction sits in the ``-wal`` file:

* ``synchronous=FULL`` (the default here) fsyncs the WAL at every commit: a
  binding answered 200 survives a process kill *and* a power cut. It costs
  one fsync per transaction (0.4 ms on this machine's disk), shared by the
  REGISTERs of a batch.
* ``synchronous=NORMAL`` skips that fsync (the WAL is synced at checkpoints):
  a commit has reached the kernel when ``apply`` returns, so it survives
  ``kill -9`` of the process but the last commits may be lost on a power cut
  or kernel crash. Choose it for benchmarks.

Schema: ``meta(key, value)`` holds ``schema_version``; ``bindings`` holds one
row per binding (``codec.COLUMNS``), wall-clock expiry in ``expires_wall``.
A file written by a newer schema is refused (``StoreError``) rather than
guessed at; an older one is migrated in place at open, in one transaction
(version 1 → 2: ``bindings.seal_key``, the push key, NULL for bindings stored
before it existed, so those devices get pushes without call details until they
register again over TLS). Rows that cannot be decoded are skipped at load with a warning
naming the binding (never its token). A new database file is created with
mode 0600: it holds push tokens (RFC 8599 §13).

Push attempts (``PushLog``) go to a ``pushes`` table, one row per attempt with the
token masked, created at open when missing (``CREATE TABLE IF NOT EXISTS``): it is an
addition beside the binding tables, so files written before it existed open as they
are, and the schema version stays 1. The table is bounded to the latest
``max_pushes`` rows (pruned every ``_PRUNE_EVERY`` inserts).

Call records (``CallLog``) are three more such additions: ``calls`` (one summary row
per call, updated as its entries arrive), ``call_events`` and ``call_messages`` (one
row per step and per SIP message: its first line and the header fields that explain a
call, see ``sipwake.calls.recorder``). The tables keep the latest
``max_calls`` calls: when a new call's row id reaches a multiple of the prune
interval, calls older than ``max_calls`` are deleted with their entries.

Nobody waits for a push log row or a call record, so the server does not write them
from the event loop: ``sipwake.store.background.LogWriter`` queues them and writes
each batch (``record_log``: pushes and call entries, one transaction) from a thread
with a connection of its own. Connections of one process that write the same file
share a ``lock``, held around each write transaction, so that one waits for the
other's transaction rather than for SQLite's busy-retry sleeps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Literal

from sipwake.calls.heads import readable, scrub
from sipwake.calls.records import (
    CallEntry,
    CallMessageRecord,
    CallRecord,
    CallStepRecord,
    CallSummary,
    advance,
    advance_messages,
)
from sipwake.push.base import PushRecord
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import RegistrarEvent
from sipwake.sip.pushtarget import mask_token
from sipwake.store.base import StoreError, net_writes
from sipwake.store.codec import COLUMNS, BindingRow, decode, encode_values

__all__ = ["SCHEMA_VERSION", "BindingRows", "SqliteStore", "binding_rows"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE bindings (
    binding_id      TEXT PRIMARY KEY,
    aor             TEXT NOT NULL,
    contact         TEXT NOT NULL,
    expires_wall    REAL NOT NULL,
    registered_wall REAL NOT NULL,
    call_id         TEXT NOT NULL,
    cseq            INTEGER NOT NULL,
    q               REAL NOT NULL,
    instance        TEXT,
    reg_id          INTEGER,
    path            TEXT NOT NULL,
    source          TEXT NOT NULL,
    push            TEXT,
    user_agent      TEXT,
    pnsreg          INTEGER NOT NULL,
    seal_key        BLOB
);
CREATE INDEX bindings_aor ON bindings (aor);
CREATE INDEX bindings_expires ON bindings (expires_wall);
"""

#: The push log beside the binding tables (see the module text).
#: Schema upgrades: the statements taking a file from version ``n`` to ``n + 1``.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE bindings ADD COLUMN seal_key BLOB",),
}

_PUSHES_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    wall        REAL NOT NULL,
    aor         TEXT,
    binding_id  TEXT,
    kind        TEXT NOT NULL,
    provider    TEXT NOT NULL,
    pn_provider TEXT NOT NULL,
    token       TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    http_status INTEGER,
    latency     REAL NOT NULL,
    apns_id     TEXT,
    call_id     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pushes_aor ON pushes (aor, id);
"""
#: Instant messages held for a suspended device until it registers (store-and-forward).
_MESSAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    aor        TEXT NOT NULL,
    wall       REAL NOT NULL,
    data       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_aor ON messages (aor, wall);
"""
_PUSH_COLUMNS = (
    "wall",
    "aor",
    "binding_id",
    "kind",
    "provider",
    "pn_provider",
    "token",
    "status",
    "reason",
    "http_status",
    "latency",
    "apns_id",
    "call_id",
)
_INSERT_PUSH = (
    f"INSERT INTO pushes ({', '.join(_PUSH_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _PUSH_COLUMNS)})"
)
_SELECT_PUSHES = f"SELECT {', '.join(_PUSH_COLUMNS)} FROM pushes"
_PRUNE_EVERY = 1000
#: Call summaries kept in memory between batches of call records (the latest calls).
_SUMMARIES_KEPT = 4096

#: Call records beside the binding tables (see the module text).
_CALLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ref         TEXT NOT NULL UNIQUE,
    aor         TEXT NOT NULL,
    caller      TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    started     REAL NOT NULL,
    updated     REAL NOT NULL,
    outcome     TEXT NOT NULL,
    answered_by TEXT,
    ringing     REAL,
    pushes      INTEGER NOT NULL,
    messages    INTEGER NOT NULL,
    answered    REAL,
    ended       REAL,
    ended_by    TEXT
);
CREATE INDEX IF NOT EXISTS calls_aor ON calls (aor, id);
CREATE TABLE IF NOT EXISTS call_events (
    ref     TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    wall    REAL NOT NULL,
    aor     TEXT NOT NULL,
    step    TEXT NOT NULL,
    detail  TEXT NOT NULL,
    call_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_events_ref ON call_events (ref, wall, seq);
CREATE TABLE IF NOT EXISTS call_messages (
    ref        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    wall       REAL NOT NULL,
    direction  TEXT NOT NULL,
    peer       TEXT NOT NULL,
    first_line TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    headers    TEXT NOT NULL DEFAULT '',
    head       BLOB NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS call_messages_ref ON call_messages (ref, wall, seq);
CREATE INDEX IF NOT EXISTS pushes_call_id ON pushes (call_id);
"""
#: Columns added to the call tables after their first release: (table, column, type).
#: A file that lacks one gets it at open (``ALTER TABLE … ADD COLUMN``), NULL (or "")
#: in its older rows: the answer and end times of a call, the header fields kept of a
#: message (JSON pairs, "" for none), its raw head (``sipwake.calls.heads``, parsed
#: when read; x'' for none). Additions like these keep the schema version.
_CALLS_ADDED = (
    ("calls", "answered", "REAL"),
    ("calls", "ended", "REAL"),
    ("calls", "ended_by", "TEXT"),
    ("call_messages", "headers", "TEXT NOT NULL DEFAULT ''"),
    ("call_messages", "head", "BLOB NOT NULL DEFAULT x''"),
)
_SUMMARY_COLUMNS = (
    "ref",
    "aor",
    "caller",
    "call_id",
    "started",
    "updated",
    "outcome",
    "answered_by",
    "ringing",
    "pushes",
    "messages",
    "answered",
    "ended",
    "ended_by",
)
_EVENT_COLUMNS = ("ref", "seq", "wall", "aor", "step", "detail", "call_id")
_MESSAGE_COLUMNS = (
    "ref",
    "seq",
    "wall",
    "direction",
    "peer",
    "first_line",
    "call_id",
    "headers",
    "head",
)
_SELECT_SUMMARY = f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM calls"
_INSERT_SUMMARY = (
    f"INSERT INTO calls ({', '.join(_SUMMARY_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _SUMMARY_COLUMNS)})"
)
_UPDATE_SUMMARY = (
    f"UPDATE calls SET {', '.join(f'{c} = ?' for c in _SUMMARY_COLUMNS[1:])} WHERE ref = ?"
)
_INSERT_EVENT = (
    f"INSERT INTO call_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})"
)
_INSERT_MESSAGE = (
    f"INSERT INTO call_messages ({', '.join(_MESSAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _MESSAGE_COLUMNS)})"
)

_UPSERT = (
    f"INSERT OR REPLACE INTO bindings ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM bindings ORDER BY aor, registered_wall"
#: Rows one statement writes at most (x 16 columns: far below SQLite's 32,766 variables).
_ROWS_PER_STATEMENT = 64
_ROW_MARKS = f"({', '.join('?' for _ in COLUMNS)})"

#: What a batch of binding changes writes: the rows to upsert (``COLUMNS`` values) and
#: the binding ids to delete.
BindingRows = tuple[list[tuple[object, ...]], list[str]]


def binding_rows(changes: Iterable[RegistrarEvent], now: float, wall: float) -> BindingRows:
    """The rows ``changes`` leave to write (later changes of one binding win)."""
    writes = net_writes(changes)
    upserts = [encode_values(b, now, wall) for b in writes.values() if b is not None]
    deletes = [i for i, b in writes.items() if b is None]
    return upserts, deletes


@functools.cache
def _upsert_sql(rows: int) -> str:
    marks = ", ".join([_ROW_MARKS] * rows)
    return f"INSERT OR REPLACE INTO bindings ({', '.join(COLUMNS)}) VALUES {marks}"


@functools.cache
def _delete_sql(rows: int) -> str:
    return f"DELETE FROM bindings WHERE binding_id IN ({', '.join('?' * rows)})"


class SqliteStore:
    """``BindingStore`` in one SQLite file (WAL mode; see the module text for durability)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = 5.0,
        max_pushes: int = 100_000,
        max_calls: int = 10_000,
        lock: threading.Lock | None = None,
    ) -> None:
        """``lock``: taken around every write transaction, when other connections in this
        process write the same file (``LogWriter``)."""
        if max_pushes <= 0:
            raise ValueError(f"max_pushes must be > 0, got {max_pushes}")
        if max_calls <= 0:
            raise ValueError(f"max_calls must be > 0, got {max_calls}")
        self.path = os.fspath(path)
        self.max_pushes = max_pushes
        self.max_calls = max_calls
        self._prune_calls_every = max(1, min(100, max_calls // 10))
        self._summaries: dict[str, CallSummary] = {}
        self._batch_summaries: dict[str, CallSummary] = {}
        self._lock = lock
        try:
            if self.path != ":memory:" and not os.path.exists(self.path):
                # Push tokens are secrets (RFC 8599 §13): owner-only, and SQLite gives
                # the -wal and -shm files the database file's mode.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open ({exc})") from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if self.path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        except StoreError:
            self._db.close()
            raise

    # -- BindingStore -----------------------------------------------------
    def load(self, now: float, wall: float) -> list[Binding]:
        with self._transaction():
            self._db.execute("DELETE FROM bindings WHERE expires_wall <= ?", (wall,))
            rows = self._db.execute(_SELECT).fetchall()
        out: list[Binding] = []
        for values in rows:
            row = BindingRow(**dict(zip(COLUMNS, values, strict=True)))
            try:
                out.append(decode(row, now, wall))
            except StoreError as exc:
                log.warning("%s: skipping %s", self.path, exc)
        return out

    def apply(self, changes: Iterable[RegistrarEvent], now: float, wall: float) -> None:
        self.write_rows(binding_rows(changes, now, wall))

    def write_rows(self, rows: BindingRows) -> None:
        """Write rows ``binding_rows`` made, in one transaction (all, or none and
        ``StoreError``). A few statements of up to ``_ROWS_PER_STATEMENT`` rows each
        rather than one per row: each statement is one step of SQLite, which Python's
        lock leaves once (this runs in ``BindingWriter``'s thread beside the loop)."""
        upserts, deletes = rows
        if not upserts and not deletes:
            return
        with self._transaction():
            for start in range(0, len(deletes), _ROWS_PER_STATEMENT):
                ids = deletes[start : start + _ROWS_PER_STATEMENT]
                self._db.execute(_delete_sql(len(ids)), ids)
            for start in range(0, len(upserts), _ROWS_PER_STATEMENT):
                chunk = upserts[start : start + _ROWS_PER_STATEMENT]
                self._db.execute(_upsert_sql(len(chunk)), [v for row in chunk for v in row])

    def upsert(self, binding: Binding, now: float, wall: float) -> None:
        with self._transaction():
            self._db.execute(_UPSERT, encode_values(binding, now, wall))

    def delete(self, binding_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM bindings WHERE binding_id = ?", (binding_id,))

    def close(self) -> None:
        self._db.close()

    # -- PushLog ------------------------------------------------------------
    def record_push(self, record: PushRecord) -> None:
        self.record_log([record], [])

    def record_log(self, pushes: Sequence[PushRecord], entries: Sequence[CallEntry]) -> None:
        """Push attempts and call entries in one transaction (``LogWriter``'s batches)."""
        if not pushes and not entries:
            return
        try:
            with self._transaction():
                for record in pushes:
                    cursor = self._db.execute(_INSERT_PUSH, _row(record, _PUSH_COLUMNS))
                    row_id = cursor.lastrowid or 0
                    if row_id % _PRUNE_EVERY == 0:
                        self._db.execute(
                            "DELETE FROM pushes WHERE id <= ?", (row_id - self.max_pushes,)
                        )
                pruned = self._insert_call_entries(entries) if entries else False
        except BaseException:
            self._summaries.clear()
            raise
        self._keep_summaries(pruned)

    def pushes(self, limit: int = 50, aor: str | None = None) -> list[PushRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        try:
            if aor is None:
                rows = self._db.execute(
                    f"{_SELECT_PUSHES} ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"{_SELECT_PUSHES} WHERE aor = ? ORDER BY id DESC LIMIT ?", (aor, limit)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return [_push_record(values) for values in rows]

    # -- CallLog ------------------------------------------------------------
    def record_call_event(self, event: CallStepRecord) -> None:
        self.record_call_entries([event])

    def record_call_message(self, message: CallMessageRecord) -> None:
        self.record_call_entries([message])

    def record_call_entries(self, entries: Sequence[CallEntry]) -> None:
        self.record_log([], entries)

    def _insert_call_entries(self, entries: Sequence[CallEntry]) -> bool:
        """Insert call entries and bring their calls' summaries up to date (inside a
        transaction); whether old calls were pruned.

        The summaries of calls still being written are kept between batches
        (``_summaries``, at most ``_SUMMARIES_KEPT``), so that a batch reads only the calls
        it is the first to mention; a failed or pruning batch forgets them all."""
        known = self._summaries
        found: dict[str, CallSummary | None] = {}
        fresh: set[str] = set()
        events: list[tuple[object, ...]] = []
        messages: list[tuple[object, ...]] = []
        # A run of messages moves a summary's times and count only: it is applied in one
        # step (``advance_messages``) before the call's next step, or at the end.
        runs: dict[str, list[Any]] = {}
        for entry in entries:
            ref = entry.ref
            if ref not in found:
                summary = known.pop(ref, None)
                if summary is None:
                    summary = self._summary(ref)
                    if summary is None:
                        fresh.add(ref)
                found[ref] = summary
            wall = entry.wall
            if isinstance(entry, CallMessageRecord):
                messages.append(
                    (
                        ref,
                        entry.seq,
                        wall,
                        entry.direction,
                        entry.peer,
                        entry.first_line,
                        entry.call_id,
                        json.dumps(entry.headers, ensure_ascii=False) if entry.headers else "",
                        entry.head,
                    )
                )
                run = runs.get(ref)
                if run is None:
                    runs[ref] = [1, wall, wall, entry.call_id]
                else:
                    run[0] += 1
                    if wall < run[1]:
                        run[1] = wall
                    elif wall > run[2]:
                        run[2] = wall
                    if not run[3]:
                        run[3] = entry.call_id
            else:
                events.append(
                    (ref, entry.seq, wall, entry.aor, entry.step, entry.detail, entry.call_id)
                )
                summary = found[ref]
                run = runs.pop(ref, None)
                if run is not None:
                    summary = advance_messages(summary, ref, *run)
                found[ref] = advance(summary, entry)
        for ref, run in runs.items():
            found[ref] = advance_messages(found[ref], ref, *run)
        summaries = {ref: s for ref, s in found.items() if s is not None}
        self._batch_summaries = summaries
        if events:
            self._db.executemany(_INSERT_EVENT, events)
        if messages:
            self._db.executemany(_INSERT_MESSAGE, messages)
        rows = [_summary_row(summary) for summary in summaries.values()]
        updates = [(*values[1:], values[0]) for values in rows if values[0] not in fresh]
        if updates:
            self._db.executemany(_UPDATE_SUMMARY, updates)
        pruned = False
        for values in rows:
            if values[0] in fresh:
                row_id = self._db.execute(_INSERT_SUMMARY, values).lastrowid or 0
                if row_id % self._prune_calls_every == 0:
                    pruned = self._prune_calls(row_id - self.max_calls) or pruned
        return pruned

    def _keep_summaries(self, pruned: bool) -> None:
        """After a committed batch: remember its calls' summaries for the next."""
        summaries, self._batch_summaries = self._batch_summaries, {}
        known = self._summaries
        if pruned:  # a call of this batch may be gone: read them again next time
            known.clear()
            return
        known.update(summaries)
        while len(known) > _SUMMARIES_KEPT:
            del known[next(iter(known))]

    def calls(self, limit: int = 50, aor: str | None = None) -> list[CallSummary]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        try:
            if aor is None:
                rows = self._db.execute(
                    f"{_SELECT_SUMMARY} ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"{_SELECT_SUMMARY} WHERE aor = ? ORDER BY id DESC LIMIT ?", (aor, limit)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return [CallSummary(**dict(zip(_SUMMARY_COLUMNS, r, strict=True))) for r in rows]

    def call(self, ref: str) -> CallRecord | None:
        try:
            summary = self._summary(ref)
            if summary is None:
                return None
            events = self._db.execute(
                f"SELECT {', '.join(_EVENT_COLUMNS)} FROM call_events "
                "WHERE ref = ? ORDER BY wall, seq",
                (ref,),
            ).fetchall()
            messages = self._db.execute(
                f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM call_messages "
                "WHERE ref = ? ORDER BY wall, seq",
                (ref,),
            ).fetchall()
            pushes = (
                self._db.execute(
                    f"{_SELECT_PUSHES} WHERE call_id = ? ORDER BY wall, id", (summary.call_id,)
                ).fetchall()
                if summary.call_id
                else []
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return CallRecord(
            summary=summary,
            events=tuple(
                CallStepRecord(**dict(zip(_EVENT_COLUMNS, r, strict=True))) for r in events
            ),
            messages=tuple(_message_record(r) for r in messages),
            pushes=tuple(_push_record(r) for r in pushes),
        )

    def _summary(self, ref: str) -> CallSummary | None:
        row = self._db.execute(f"{_SELECT_SUMMARY} WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            return None
        return CallSummary(**dict(zip(_SUMMARY_COLUMNS, row, strict=True)))

    def _prune_calls(self, last_id: int) -> bool:
        """Delete calls whose row id is ``last_id`` or lower, with their entries; whether
        there was anything to delete."""
        if last_id <= 0:
            return False
        old = "SELECT ref FROM calls WHERE id <= ?"
        self._db.execute(f"DELETE FROM call_events WHERE ref IN ({old})", (last_id,))
        self._db.execute(f"DELETE FROM call_messages WHERE ref IN ({old})", (last_id,))
        self._db.execute("DELETE FROM calls WHERE id <= ?", (last_id,))
        self._summaries.clear()
        return True

    # -- MessageStore -------------------------------------------------------
    def keep_message(self, message_id: str, aor: str, data: bytes, wall: float) -> None:
        """Hold a MESSAGE for ``aor`` until it is delivered (durable before 202 is sent)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO messages (message_id, aor, wall, data) VALUES (?,?,?,?)",
                (message_id, aor, wall, data),
            )

    def drop_message(self, message_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))

    def held_messages(self) -> list[tuple[str, str, bytes, float]]:
        """(message_id, aor, data, wall) of every message not yet delivered, oldest first."""
        try:
            rows = self._db.execute(
                "SELECT message_id, aor, data, wall FROM messages ORDER BY wall"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return [(str(m), str(a), bytes(d), float(w)) for m, a, d, w in rows]

    # -- extras -----------------------------------------------------------
    def count(self) -> int:
        """Rows stored, expired or not."""
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def purge_expired(self, wall: float) -> int:
        """Delete rows whose expiry has passed; returns how many."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM bindings WHERE expires_wall <= ?", (wall,))
        return cursor.rowcount

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path, self._lock)

    def _migrate(self) -> None:
        with self._transaction():
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            found = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if found is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif found[0] != str(SCHEMA_VERSION):
                version = int(found[0]) if str(found[0]).isdigit() else None
                if version not in _MIGRATIONS:
                    raise StoreError(
                        f"{self.path}: schema version {found[0]!r}, "
                        f"this sipwake reads {SCHEMA_VERSION}"
                    )
                for step in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[step]:
                        self._db.execute(statement)
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )
                log.info("%s: schema upgraded from %s to %s", self.path, version, SCHEMA_VERSION)
            for statement in (_PUSHES_SCHEMA + _MESSAGES_SCHEMA + _CALLS_SCHEMA).split(";"):
                if statement.strip():
                    self._db.execute(statement)
            for table, column, kind in _CALLS_ADDED:
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _push_record(values: Sequence[object]) -> PushRecord:
    fields = dict(zip(_PUSH_COLUMNS, values, strict=True))
    fields["token"] = mask_token(str(fields["token"]))  # never trust the file
    return PushRecord(**fields)  # type: ignore[arg-type]


def _summary_row(s: CallSummary) -> tuple[object, ...]:
    """``_row(s, _SUMMARY_COLUMNS)``, written out (one per call and batch)."""
    return (
        s.ref,
        s.aor,
        s.caller,
        s.call_id,
        s.started,
        s.updated,
        s.outcome,
        s.answered_by,
        s.ringing,
        s.pushes,
        s.messages,
        s.answered,
        s.ended,
        s.ended_by,
    )


def _row(item: object, columns: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(_column(getattr(item, name)) for name in columns)


def _column(value: object) -> object:
    """A field as SQLite keeps it: a message's header fields as JSON ("" for none)."""
    if isinstance(value, tuple):
        return json.dumps(value, ensure_ascii=False) if value else ""
    return value


def _message_record(values: Sequence[object]) -> CallMessageRecord:
    fields = dict(zip(_MESSAGE_COLUMNS, values, strict=True))
    try:
        pairs = json.loads(str(fields["headers"])) if fields["headers"] else []
    except ValueError:
        pairs = []  # a damaged field loses its headers, not the call
    fields["headers"] = tuple(
        (str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2
    )
    head = fields["head"]
    fields["head"] = scrub(head) if isinstance(head, bytes) else b""  # never trust the file
    return readable(CallMessageRecord(**fields))  # type: ignore[arg-type]


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error); sqlite errors become
    ``StoreError``. COMMIT returning means the transaction is durable to the
    ``synchronous`` level chosen. With a ``lock``, it is held from BEGIN to the end."""

    __slots__ = ("_db", "_lock", "_path")

    def __init__(self, db: sqlite3.Connection, path: str, lock: threading.Lock | None) -> None:
        self._db = db
        self._path = path
        self._lock = lock

    def __enter__(self) -> None:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._release()
            raise StoreError(f"{self._path}: cannot begin a transaction ({exc})") from exc

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as commit_exc:
                    self._rollback()
                    raise StoreError(f"{self._path}: commit failed ({commit_exc})") from commit_exc
                return
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self._path}: {exc}") from exc
        finally:
            self._release()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction left to roll back
            self._db.execute("ROLLBACK")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
