"""SqliteStore on real files: round trips, restarts, schema, atomicity, kill -9 durability."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from sipwake.ids import SeededIds
from sipwake.registrar import (
    Binding,
    BindingAdded,
    BindingRemoved,
    Registrar,
    RegistrarConfig,
    RegistrarEvent,
)
from sipwake.sip.message import Request
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri, parse_uri
from sipwake.store import SCHEMA_VERSION, SqliteStore, StoreError

REPO = pathlib.Path(__file__).resolve().parents[2]
AOR = "sip:alice@example.com"
WALL = 1_700_000_000.0


def make_binding(binding_id: str, *, expires_at: float = 3600.0) -> Binding:
    contact = parse_uri(
        f"sip:alice@10.0.0.1;transport=tcp;pn-provider=fcm;pn-param=proj;pn-prid=tok-{binding_id}"
    )
    assert isinstance(contact, SipUri)
    return Binding(
        binding_id=binding_id,
        aor=AOR,
        contact=contact,
        expires_at=expires_at,
        registered_at=0.0,
        call_id="c",
        cseq=1,
        source=Peer(transport="tcp", host="10.0.0.1", port=5070, flow=1),
    )


def register(contact: str, cseq: int = 1) -> Request:
    message = parse_message(
        (
            "REGISTER sip:example.com SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKx\r\n"
            "From: <sip:alice@example.com>;tag=f\r\n"
            "To: <sip:alice@example.com>\r\n"
            "Call-ID: reg-1\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: {contact}\r\n"
            "User-Agent: test\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def test_registrar_bindings_survive_a_restart(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "sipwake.db"
    registrar = Registrar(ids=SeededIds(1), config=RegistrarConfig(domains={"example.com"}))
    source = Peer(transport="tcp", host="10.0.0.1", port=5070, flow=3)
    contact = (
        "<sip:alice@10.0.0.1:5070;transport=tcp;pn-provider=apns;"
        'pn-param=ABCD1234.com.example.app.voip;pn-prid=00fc13adff78>;+sip.instance="<urn:uuid:1>"'
        ";expires=600;q=0.7"
    )
    with SqliteStore(db) as store:
        result = registrar.handle_register(register(contact), source, 1000.0)
        store.apply(result.changes, 1000.0, WALL)
    [before] = result.bindings

    # A new process, 200 s later on the wall clock, with a fresh monotonic clock.
    with SqliteStore(db) as store:
        loaded = store.load(5.0, WALL + 200.0)
    [after] = loaded
    assert after.remaining(5.0) == pytest.approx(400.0)
    assert after.binding_id == before.binding_id
    assert after.contact == before.contact
    assert str(after.contact) == str(before.contact)
    assert after.push == before.push
    assert (after.instance, after.q, after.call_id, after.cseq) == ("urn:uuid:1", 0.7, "reg-1", 1)
    assert after.user_agent == "test"
    assert after.source == Peer(transport="tcp", host="10.0.0.1", port=5070)

    restarted = Registrar(ids=SeededIds(2), config=RegistrarConfig(domains={"example.com"}))
    restarted.restore(loaded)
    assert restarted.lookup(AOR, 5.0) == loaded
    assert restarted.next_deadline() == pytest.approx(405.0)
    # The device refreshes after the restart: the same binding, not a new one.
    again = restarted.handle_register(register(contact, cseq=2), source, 10.0)
    assert [c.binding.binding_id for c in again.changes] == [before.binding_id]


def test_expired_rows_are_dropped_at_load(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "b.db"
    with SqliteStore(db) as store:
        store.apply(
            [
                BindingAdded(binding=make_binding("short", expires_at=60.0)),
                BindingAdded(binding=make_binding("long", expires_at=3600.0)),
            ],
            0.0,
            WALL,
        )
        assert store.count() == 2
    with SqliteStore(db) as store:
        assert [b.binding_id for b in store.load(0.0, WALL + 60.0)] == ["long"]
        assert store.count() == 1
        assert store.purge_expired(WALL + 3600.0) == 1
        assert store.count() == 0


def test_removals_upserts_and_deletes(tmp_path: pathlib.Path) -> None:
    with SqliteStore(tmp_path / "c.db") as store:
        a, b = make_binding("a"), make_binding("b")
        store.apply([BindingAdded(binding=a), BindingAdded(binding=b)], 0.0, WALL)
        store.apply([BindingRemoved(binding=a, reason="unregistered")], 0.0, WALL)
        store.upsert(make_binding("c"), 0.0, WALL)
        store.delete("b")
        store.delete("never-stored")
        store.apply([], 0.0, WALL)
        assert [x.binding_id for x in store.load(0.0, WALL)] == ["c"]


def test_apply_is_all_or_nothing(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "d.db"
    with SqliteStore(db) as store:
        store.apply([BindingAdded(binding=make_binding("a"))], 0.0, WALL)
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON bindings WHEN NEW.binding_id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    raw.commit()
    raw.close()
    with SqliteStore(db) as store:
        changes: list[RegistrarEvent] = [
            BindingRemoved(binding=make_binding("a"), reason="unregistered"),
            BindingAdded(binding=make_binding("poison")),
        ]
        with pytest.raises(StoreError, match="poisoned"):
            store.apply(changes, 0.0, WALL)
        assert [b.binding_id for b in store.load(0.0, WALL)] == ["a"]


def test_batches_larger_than_one_statement_are_written_whole(tmp_path: pathlib.Path) -> None:
    """A batch of 150 additions (several multi-row statements), then one removing 70 of
    them and refreshing 10 others: every row as the changes leave it."""
    with SqliteStore(tmp_path / "big.db") as store:
        bindings = [make_binding(f"b{i:03}") for i in range(150)]
        store.apply([BindingAdded(binding=b) for b in bindings], 0.0, WALL)
        assert store.count() == 150
        refreshed = [dataclasses.replace(b, cseq=2, expires_at=7200.0) for b in bindings[70:80]]
        changes: list[RegistrarEvent] = [
            *(BindingRemoved(binding=b, reason="unregistered") for b in bindings[:70]),
            *(BindingAdded(binding=b) for b in refreshed),
        ]
        store.apply(changes, 0.0, WALL)
        loaded = {b.binding_id: b for b in store.load(0.0, WALL)}
    assert sorted(loaded) == [f"b{i:03}" for i in range(70, 150)]
    assert all(
        (loaded[b.binding_id].cseq, loaded[b.binding_id].expires_at) == (2, 7200.0)
        for b in refreshed
    )
    assert (loaded["b100"].cseq, loaded["b100"].contact) == (1, bindings[100].contact)


def test_a_poisoned_row_in_a_later_statement_undoes_the_whole_batch(
    tmp_path: pathlib.Path,
) -> None:
    db = tmp_path / "e.db"
    SqliteStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON bindings WHEN NEW.binding_id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    raw.commit()
    raw.close()
    with SqliteStore(db) as store:
        changes: list[RegistrarEvent] = [
            BindingAdded(binding=make_binding(f"b{i:03}")) for i in range(100)
        ]
        changes.append(BindingAdded(binding=make_binding("poison")))
        with pytest.raises(StoreError, match="poisoned"):
            store.apply(changes, 0.0, WALL)
        assert store.count() == 0


def test_schema_version_and_pragmas(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "e.db"
    with SqliteStore(db) as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with SqliteStore(db, synchronous="NORMAL") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="schema version '99'"):
        SqliteStore(db)


def test_unreadable_row_is_skipped_with_a_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "f.db"
    with SqliteStore(db) as store:
        store.apply(
            [BindingAdded(binding=make_binding("ok")), BindingAdded(binding=make_binding("bad"))],
            0.0,
            WALL,
        )
        store._db.execute("UPDATE bindings SET source = 'not json' WHERE binding_id = 'bad'")
        with caplog.at_level(logging.WARNING, logger="sipwake.store.sqlite"):
            assert [b.binding_id for b in store.load(0.0, WALL)] == ["ok"]
    assert "'bad': unreadable source column" in caplog.text
    assert "tok-bad" not in caplog.text


def test_new_database_is_owner_only(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "g.db"
    with SqliteStore(db) as store:
        store.apply([BindingAdded(binding=make_binding("a"))], 0.0, WALL)
        for path in (db, tmp_path / "g.db-wal"):
            assert path.stat().st_mode & 0o777 == 0o600, path


def test_unopenable_path_is_a_store_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "missing-dir" / "x.db")


_WRITER = textwrap.dedent(
    """
    import sys
    from sipwake.registrar import Binding, BindingAdded
    from sipwake.sip.peer import Peer
    from sipwake.sip.uri import parse_uri
    from sipwake.store import SqliteStore

    store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
    contact = parse_uri("sip:alice@10.0.0.1;pn-provider=fcm;pn-param=p;pn-prid=tok")
    source = Peer(transport="udp", host="10.0.0.1", port=5060)
    i = 0
    while True:
        binding = Binding(
            binding_id=f"b{i}", aor="sip:alice@example.com", contact=contact,
            expires_at=3600.0, registered_at=0.0, call_id="c", cseq=i, source=source,
        )
        store.apply([BindingAdded(binding=binding)], 0.0, 1.7e9)
        # Only now may the 200 OK go out.
        print(f"stored b{i}", flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_kill_9_loses_no_stored_binding(tmp_path: pathlib.Path, synchronous: str) -> None:
    """Every binding the writer reported as stored (the point where the node sends
    200 OK) is there after SIGKILL, in FULL and in NORMAL mode."""
    db = tmp_path / "kill.db"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        bufsize=0,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    output = b""
    deadline = time.monotonic() + 30.0
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        try:
            while output.count(b"\n") < 30:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    pytest.fail(f"writer too slow; stderr: {stderr.read(2000)!r}")
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    pytest.fail(f"writer exited; stderr: {stderr.read(2000)!r}")
                output += chunk
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is still committing
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    output += stdout.read()  # whatever it printed before it died
    stdout.close()
    stderr.close()
    assert proc.returncode == -signal.SIGKILL

    reported = {
        line.split()[1] for line in output.decode().splitlines() if line.startswith("stored")
    }
    assert len(reported) >= 30
    with SqliteStore(db) as store:
        present = {b.binding_id for b in store.load(0.0, 1.7e9)}
    assert reported <= present


# The schema of version 1 as sipwake wrote it before push keys (``seal_key``) existed.
_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
CREATE TABLE bindings (
    binding_id TEXT PRIMARY KEY, aor TEXT NOT NULL, contact TEXT NOT NULL,
    expires_wall REAL NOT NULL, registered_wall REAL NOT NULL, call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL, q REAL NOT NULL, instance TEXT, reg_id INTEGER,
    path TEXT NOT NULL, source TEXT NOT NULL, push TEXT, user_agent TEXT,
    pnsreg INTEGER NOT NULL
);
CREATE INDEX bindings_aor ON bindings (aor);
CREATE INDEX bindings_expires ON bindings (expires_wall);
"""


def test_push_key_round_trips_and_stays_out_of_repr(tmp_path: pathlib.Path) -> None:
    key = bytes(range(32))
    binding = dataclasses.replace(make_binding("k"), seal_key=key)
    with SqliteStore(tmp_path / "k.db") as store:
        store.apply(
            [BindingAdded(binding=binding), BindingAdded(binding=make_binding("n"))], 0, WALL
        )
    with SqliteStore(tmp_path / "k.db") as store:
        loaded = {b.binding_id: b for b in store.load(0.0, WALL)}
    assert loaded["k"].seal_key == key
    assert loaded["n"].seal_key is None
    assert key.hex() not in repr(loaded["k"])
    assert repr(key) not in repr(loaded["k"])


def test_version_1_file_is_migrated_and_keeps_its_bindings(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "v1.db"
    raw = sqlite3.connect(db)
    raw.executescript(_SCHEMA_V1)
    raw.execute(
        "INSERT INTO bindings VALUES ('old', ?, 'sip:alice@10.0.0.1;transport=tcp', ?, ?, 'c', 1,"
        ' 1.0, NULL, NULL, \'[]\', \'{"host": "10.0.0.1", "port": 5070, "transport": "tcp"}\','
        " NULL, NULL, 0)",
        (AOR, WALL + 600, WALL - 10),
    )
    raw.commit()
    raw.close()
    with SqliteStore(db) as store:
        [old] = store.load(0.0, WALL)
        assert old.binding_id == "old"
        assert old.seal_key is None
        assert 599 <= old.remaining(0.0) <= 600
        key = b"\x07" * 32
        fresh = dataclasses.replace(make_binding("new"), seal_key=key)
        store.apply([BindingAdded(binding=fresh)], 0.0, WALL)
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    assert raw.execute("SELECT seal_key FROM bindings WHERE binding_id='new'").fetchone() == (key,)
    raw.close()
    with SqliteStore(db) as store:  # opening the migrated file again changes nothing
        assert {b.binding_id: b.seal_key for b in store.load(0.0, WALL)} == {
            "old": None,
            "new": key,
        }
