"""LogWriter: call records and push log rows written by a thread, on a real SQLite file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_store_calls import check_log, fill, push

from sipwake.calls.records import CallStepRecord
from sipwake.store import SqliteStore
from sipwake.store.background import LogWriter

pytestmark = pytest.mark.timeout(30)


def step(ref: str, seq: int) -> CallStepRecord:
    return CallStepRecord(
        ref=ref, seq=seq, wall=1_800_000_000.0 + seq, aor="sip:a@lab.test", step="received"
    )


def test_what_the_recorder_writes_reads_back_as_from_the_store(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    SqliteStore(db).close()
    writer = LogWriter(db)
    try:
        check_log(writer, writer)  # reads wait for the rows queued before them
    finally:
        writer.close()


def test_rows_are_written_in_batches_and_all_of_them_by_close(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    SqliteStore(db).close()
    writer = LogWriter(db, interval=0.05)
    for i in range(300):
        writer.record_call_entries([step(f"r{i}", i)])
        writer.record_push(push(f"cid-{i}"))
    writer.close()  # right after: nothing is left behind
    assert writer.batches < 20  # 600 rows, a handful of transactions
    assert writer.dropped == 0
    with SqliteStore(db) as store:
        assert len(store.calls(1000)) == 300
        assert len(store.pushes(1000)) == 300


def test_rows_wait_at_most_the_interval(tmp_path: Path) -> None:
    db = tmp_path / "i.db"
    SqliteStore(db).close()
    writer = LogWriter(db, interval=0.01)
    try:
        writer.record_call_entries([step("r1", 1)])
        deadline = time.monotonic() + 5.0
        while writer.batches == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert writer.batches == 1
        with SqliteStore(db) as store:  # another connection sees it: committed
            assert [c.ref for c in store.calls()] == ["r1"]
    finally:
        writer.close()


def test_a_slow_disk_bounds_the_queue(tmp_path: Path) -> None:
    """While the file is busy (the lock held as a long binding transaction would), at
    most ``max_queue`` rows wait; the rest are counted as dropped, nothing blocks."""
    db = tmp_path / "q.db"
    SqliteStore(db).close()
    lock = threading.Lock()
    writer = LogWriter(db, lock=lock, interval=0.001, max_rows=10, max_queue=50)
    try:
        with lock:
            writer.record_call_entries([step("first", 0)])
            deadline = time.monotonic() + 5.0
            while writer.queued and time.monotonic() < deadline:  # taken, now blocked
                time.sleep(0.001)
            assert writer.queued == 0
            started = time.monotonic()
            for i in range(60):
                writer.record_call_entries([step(f"r{i}", i + 1)])
            assert time.monotonic() - started < 1.0
            assert writer.queued == 50
            assert writer.dropped == 10
        assert writer.flush()
    finally:
        writer.close()
    with SqliteStore(db) as store:
        assert len(store.calls(1000)) == 51


def test_a_refused_batch_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    SqliteStore(db).close()
    writer = LogWriter(db, interval=0.001)
    try:
        with SqliteStore(db) as other:
            other._db.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON call_events WHEN NEW.ref = 'bad' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
        writer.record_call_entries([step("bad", 1)])
        assert writer.flush()
        writer.record_call_entries([step("good", 2)])
        assert writer.flush()
        assert writer.failures == 1
        assert [c.ref for c in writer.calls()] == ["good"]
    finally:
        writer.close()


def test_a_recorded_call_in_full(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    SqliteStore(db).close()
    writer = LogWriter(db)
    fill(writer, "r1", "cid-1", "sip:alice@lab.test")
    writer.close()
    with SqliteStore(db) as store:
        record = store.call("r1")
    assert record is not None
    assert record.summary.outcome == "answered"
    assert record.summary.messages == 7
    assert [e.step for e in record.events][:2] == ["received", "push-sent"]


def test_an_unopenable_file_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot open"):
        LogWriter(tmp_path / "missing" / "x.db")
