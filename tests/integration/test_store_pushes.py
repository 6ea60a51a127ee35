"""Push records in the stores (memory, SQLite across reopen) and ``sipwake pushes``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sipwake.push.base import PushOutcome, PushRecord, PushRequest
from sipwake.sip.pushtarget import PushTarget, mask_token
from sipwake.store import MemoryStore, SqliteStore
from sipwake.store.base import PushLog

pytestmark = pytest.mark.timeout(60)

TOKEN = "c0ffee00" * 8
WALL = 1_800_000_000.0
SIPWAKE = [sys.executable, "-m", "sipwake"]


def record(i: int, *, aor: str = "sip:alice@lab.test", token: str = TOKEN) -> PushRecord:
    request = PushRequest(
        kind="call",
        target=PushTarget(provider="apns", prid=token, param="TEAM.org.lab.phone.voip"),
        call_id=f"call-{i}",
        apns_id=f"00000000-0000-4000-8000-{i:012d}",
    )
    outcome = PushOutcome(
        status="invalid_target" if i % 2 else "delivered",
        provider="apns",
        reason="Unregistered" if i % 2 else None,
        http_status=410 if i % 2 else 200,
        latency=0.012 + i / 1000,
    )
    return PushRecord.of(request, outcome, wall=WALL + i, binding_id=f"b{i}", aor=aor)


def check_log(log: PushLog) -> None:
    for i in range(5):
        log.record_push(record(i, aor="sip:bob@lab.test" if i == 3 else "sip:alice@lab.test"))
    latest = log.pushes(limit=3)
    assert [r.call_id for r in latest] == ["call-4", "call-3", "call-2"]
    assert latest[1] == record(3, aor="sip:bob@lab.test")
    assert [r.call_id for r in log.pushes(aor="sip:bob@lab.test")] == ["call-3"]
    assert [r.call_id for r in log.pushes(limit=2, aor="sip:alice@lab.test")] == [
        "call-4",
        "call-2",
    ]
    assert log.pushes(aor="sip:nobody@lab.test") == []
    assert log.pushes(limit=0) == []
    assert all(r.token == mask_token(TOKEN) for r in log.pushes())


def test_memory_store_keeps_push_records_bounded() -> None:
    store = MemoryStore()
    check_log(store)
    small = MemoryStore(max_pushes=2)
    for i in range(4):
        small.record_push(record(i))
    assert [r.call_id for r in small.pushes()] == ["call-3", "call-2"]


def test_sqlite_store_keeps_push_records_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"
    with SqliteStore(path) as store:
        check_log(store)
    with SqliteStore(path) as store:
        again = store.pushes()
        assert [r.call_id for r in again] == [f"call-{i}" for i in (4, 3, 2, 1, 0)]
        assert again[3] == record(1)  # every field survives, floats included
        assert again[3].apns_id == "00000000-0000-4000-8000-000000000001"
    db = sqlite3.connect(path)
    try:
        dumped = "\n".join(db.iterdump())
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert TOKEN not in dumped  # the file holds the masked token only
    assert mask_token(TOKEN) in dumped


def test_sqlite_push_table_is_pruned(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "lab.db", synchronous="NORMAL", max_pushes=500) as store:
        for i in range(2000):
            store.record_push(record(i))
        count = store._db.execute("SELECT COUNT(*) FROM pushes").fetchone()[0]
        assert 500 <= count < 1500
        assert store.pushes(limit=1)[0].call_id == "call-1999"


def test_sqlite_file_without_push_table_gains_it(tmp_path: Path) -> None:
    """A file written before push records existed opens and records pushes."""
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE pushes")
    db.commit()
    db.close()
    with SqliteStore(path) as store:
        assert store.pushes() == []
        store.record_push(record(0))
        assert [r.call_id for r in store.pushes()] == ["call-0"]
        assert store.count() == 0  # the binding table is untouched


def test_sqlite_refuses_a_bad_limit(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "lab.db") as store, pytest.raises(ValueError, match="limit"):
        store.pushes(limit=-1)


# -- sipwake pushes ------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIPWAKE, *args], capture_output=True, text=True, encoding="utf-8", timeout=30, check=False
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "lab.db"
    with SqliteStore(path) as store:
        store.record_push(record(0))
        store.record_push(record(1, aor="sip:bob@lab.test", token="deadbeef" * 8))
    return path


def test_cli_prints_a_table_with_masked_tokens(db: Path) -> None:
    result = run("pushes", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert mask_token(TOKEN) in out
    assert mask_token("deadbeef" * 8) in out
    assert TOKEN not in out
    assert "deadbeef" * 8 not in out
    for text in ("sip:alice@lab.test", "sip:bob@lab.test", "invalid_target", "410 Unregistered"):
        assert text in out
    assert "13" in out  # latency of record 1, in ms


def test_cli_filters_by_user_and_limit_and_prints_json(db: Path) -> None:
    result = run("pushes", "--db", str(db), "--user", "bob@lab.test", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["aor"], r["status"], r["http_status"]) for r in rows] == [
        ("sip:bob@lab.test", "invalid_target", 410)
    ]
    assert rows[0]["token"] == mask_token("deadbeef" * 8)
    latest = json.loads(run("pushes", "--db", str(db), "--limit", "1", "--json").stdout)
    assert [r["call_id"] for r in latest] == ["call-1"]
    empty = run("pushes", "--db", str(db), "--user", "sip:carol@lab.test")
    assert empty.returncode == 0
    assert "no push attempts" in empty.stdout


def test_cli_without_a_database_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = run("pushes", "--db", str(missing))
    assert result.returncode == 2
    assert "no such database" in result.stderr
    assert not missing.exists()  # a read command creates nothing
