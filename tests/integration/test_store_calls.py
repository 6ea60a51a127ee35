"""Call records in the stores (memory, SQLite across reopen) and ``sipwake calls [show]``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sipwake.calls import CallMessageRecord, CallRecorder, CallStepRecord, render_ladder
from sipwake.proxy.wake import CallEvent, CallStep
from sipwake.push.base import PushOutcome, PushRecord, PushRequest
from sipwake.sip.pushtarget import PushTarget
from sipwake.store import MemoryStore, SqliteStore
from sipwake.store.base import CallLog, PushLog, StoreError

pytestmark = pytest.mark.timeout(60)

OFFSET = 1_800_000_000.0
SIPWAKE = [sys.executable, "-m", "sipwake"]
CALLER = "udp:10.0.0.9:5060"
PHONE = "udp:10.0.0.5:5062"
TOKEN = "c0ffee00" * 8


def fill(log: CallLog, ref: str, call_id: str, aor: str, *, at: float = 0.0) -> None:
    """A push-wake call written the way the recorder writes it."""
    rec = CallRecorder(log, wall_offset=OFFSET)

    def step(t: float, name: CallStep, detail: str = "") -> None:
        rec.call_event(CallEvent(call_ref=ref, aor=aor, at=at + t, step=name, detail=detail))

    rec.message("in", CALLER, f"INVITE {aor} SIP/2.0", call_id, at)
    rec.message("out", CALLER, "SIP/2.0 100 Trying", call_id, at)
    step(0.0, "received", "from sip:bob@lab.test")
    step(0.0, "push-sent", "call to apns (try 1)")
    step(0.02, "push-result", "call apns delivered")
    step(0.9, "registered", "iphone")
    step(0.9, "forked", "iphone")
    rec.message("out", PHONE, "INVITE sip:alice@10.0.0.5:5062 SIP/2.0", call_id, at + 0.9)
    rec.message("in", PHONE, "SIP/2.0 180 Ringing", call_id, at + 1.0)
    rec.message("out", CALLER, "SIP/2.0 180 Ringing", call_id, at + 1.0)
    rec.message("in", PHONE, "SIP/2.0 200 OK", call_id, at + 2.5)
    step(2.5, "answered", "iphone")
    rec.message("out", CALLER, "SIP/2.0 200 OK", call_id, at + 2.5)
    rec.close()


def push(call_id: str) -> PushRecord:
    request = PushRequest(
        kind="call",
        target=PushTarget(provider="apns", prid=TOKEN, param="TEAM.org.lab.phone.voip"),
        call_id=call_id,
    )
    outcome = PushOutcome(status="delivered", provider="apns", http_status=200, latency=0.0134)
    return PushRecord.of(request, outcome, wall=OFFSET + 0.001, binding_id="b1", aor="x")


def check_log(store: CallLog, pushes: PushLog) -> None:
    fill(store, "r1", "cid-1", "sip:alice@lab.test")
    fill(store, "r2", "cid-2", "sip:bob@lab.test", at=10.0)
    fill(store, "r3", "cid-3", "sip:alice@lab.test", at=20.0)
    pushes.record_push(push("cid-1"))
    pushes.record_push(push("cid-other"))
    assert [s.ref for s in store.calls()] == ["r3", "r2", "r1"]
    assert [s.ref for s in store.calls(limit=1)] == ["r3"]
    assert [s.ref for s in store.calls(aor="sip:alice@lab.test")] == ["r3", "r1"]
    assert store.calls(aor="sip:nobody@lab.test") == []
    assert store.calls(limit=0) == []
    summary = store.calls(aor="sip:bob@lab.test")[0]
    assert summary.started == OFFSET + 10.0
    assert (summary.outcome, summary.answered_by, summary.pushes) == ("answered", "iphone", 1)
    assert summary.ringing == pytest.approx(2.5)
    assert (summary.call_id, summary.caller, summary.messages) == ("cid-2", "sip:bob@lab.test", 7)
    record = store.call("r1")
    assert record is not None
    assert [e.step for e in record.events] == [
        "received",
        "push-sent",
        "push-result",
        "registered",
        "forked",
        "answered",
    ]
    assert [m.first_line for m in record.messages][:2] == [
        "INVITE sip:alice@lab.test SIP/2.0",
        "SIP/2.0 100 Trying",
    ]
    assert record.pushes == (push("cid-1"),)  # joined by Call-ID only
    assert store.call("nope") is None


def test_memory_store_keeps_call_records_bounded() -> None:
    store = MemoryStore()
    check_log(store, store)
    small = MemoryStore(max_calls=2)
    for i in range(4):
        fill(small, f"r{i}", f"cid-{i}", "sip:alice@lab.test", at=float(i))
    assert [s.ref for s in small.calls()] == ["r3", "r2"]
    assert small.call("r0") is None


def test_sqlite_store_keeps_call_records_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"
    with SqliteStore(path) as store:
        check_log(store, store)
        before = store.call("r2")
    with SqliteStore(path) as store:
        assert [s.ref for s in store.calls()] == ["r3", "r2", "r1"]
        again = store.call("r2")
        assert again == before  # every field survives, floats included
        assert again is not None
        assert "|- INVITE -------->|" in render_ladder(again)[3]
        record = store.call("r1")
        assert record is not None
        assert record.pushes[0].token == push("cid-1").token  # masked
        # Entries written in separate batches extend the same call.
        store.record_call_event(
            CallStepRecord(ref="r1", seq=99, wall=OFFSET + 60, aor="", step="ended")
        )
        store.record_call_message(
            CallMessageRecord(
                ref="r1",
                seq=100,
                wall=OFFSET + 60,
                direction="in",
                peer=CALLER,
                first_line="BYE sip:a SIP/2.0",
                call_id="cid-1",
            )
        )
        record = store.call("r1")
        assert record is not None
        assert (record.events[-1].step, record.messages[-1].first_line) == (
            "ended",
            "BYE sip:a SIP/2.0",
        )
        assert (record.summary.outcome, record.summary.messages) == ("answered", 8)
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"calls", "call_events", "call_messages", "pushes", "bindings"} <= tables
    finally:
        db.close()


def test_sqlite_file_from_before_the_new_call_columns_is_upgraded_at_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    try:  # the call tables as the first release wrote them, with one call in them
        db.executescript(
            """
            DROP TABLE calls; DROP TABLE call_messages;
            CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, ref TEXT NOT NULL UNIQUE,
                aor TEXT NOT NULL, caller TEXT NOT NULL, call_id TEXT NOT NULL,
                started REAL NOT NULL, updated REAL NOT NULL, outcome TEXT NOT NULL,
                answered_by TEXT, ringing REAL, pushes INTEGER NOT NULL,
                messages INTEGER NOT NULL);
            CREATE TABLE call_messages (ref TEXT NOT NULL, seq INTEGER NOT NULL,
                wall REAL NOT NULL, direction TEXT NOT NULL, peer TEXT NOT NULL,
                first_line TEXT NOT NULL, call_id TEXT NOT NULL);
            INSERT INTO calls (ref, aor, caller, call_id, started, updated, outcome,
                answered_by, ringing, pushes, messages)
                VALUES ('old', 'sip:a@lab', 'sip:b@lab', 'c0', 1.0, 2.0, 'answered', 'x',
                    1.0, 0, 1);
            INSERT INTO call_messages VALUES ('old', 1, 1.0, 'in', 'udp:10.0.0.9:5060',
                'INVITE sip:a@lab SIP/2.0', 'c0');
            """
        )
        db.commit()
    finally:
        db.close()
    with SqliteStore(path) as store:
        old = store.call("old")
        assert old is not None
        assert (old.summary.answered, old.summary.ended, old.summary.ended_by) == (None,) * 3
        assert old.messages[0].headers == ()
        # New entries keep their header fields and end times in the upgraded tables.
        bye = CallMessageRecord(
            ref="old",
            seq=2,
            wall=9.0,
            direction="in",
            peer=CALLER,
            first_line="BYE sip:a@10.0.0.5 SIP/2.0",
            call_id="c0",
            headers=(("From", "<sip:b@lab>;tag=1"), ("Reason", "Q.850;cause=16")),
        )
        store.record_call_entries(
            [
                bye,
                CallStepRecord(
                    ref="old", seq=3, wall=9.0, aor="", step="hangup", detail="by the caller"
                ),
            ]
        )
    with SqliteStore(path) as store:
        again = store.call("old")
        assert again is not None
        assert again.messages[-1] == bye
        assert (again.summary.ended, again.summary.ended_by) == (9.0, "caller")


def test_sqlite_store_prunes_the_oldest_calls(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "lab.db", max_calls=3) as store:
        for i in range(7):
            fill(store, f"r{i}", f"cid-{i}", "sip:alice@lab.test", at=float(i))
        assert [s.ref for s in store.calls()] == ["r6", "r5", "r4"]
        assert store.call("r1") is None
    db = sqlite3.connect(tmp_path / "lab.db")
    try:
        refs = {r[0] for r in db.execute("SELECT DISTINCT ref FROM call_events")}
        refs |= {r[0] for r in db.execute("SELECT DISTINCT ref FROM call_messages")}
        assert refs == {"r4", "r5", "r6"}  # no orphan entries left behind
    finally:
        db.close()


def test_a_failed_batch_writes_nothing(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "lab.db") as store:
        good = CallStepRecord(ref="r1", seq=1, wall=OFFSET, aor="sip:a@lab", step="received")
        bad = CallStepRecord(ref="r1", seq=2, wall=OFFSET, aor="sip:a@lab", step=None)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="NOT NULL"):
            store.record_call_entries([good, bad])
        assert store.calls() == []


# -- the command line ----------------------------------------------------------------------
def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIPWAKE, *args], capture_output=True, text=True, encoding="utf-8", timeout=30, check=False
    )


@pytest.fixture
def lab_db(tmp_path: Path) -> Path:
    path = tmp_path / "lab.db"
    with SqliteStore(path) as store:
        fill(store, "r1", "cid-1", "sip:alice@lab.test")
        fill(store, "r2", "cid-2", "sip:bob@lab.test", at=10.0)
        store.record_push(push("cid-1"))
    return path


def test_calls_lists_recent_calls(lab_db: Path) -> None:
    done = run("calls", "--db", str(lab_db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)  # piped: 80 columns
    rows = [line for line in lines if " r1 " in line or " r2 " in line]
    assert len(rows) == 2
    assert rows[0].split()[2:7] == ["r2", "bob", "→", "bob", "answered"]
    # Rung 2.5 s, still talking (no BYE recorded): no talk time, nobody hung up.
    assert rows[1].split()[2:] == ["r1", "bob", "→", "alice", "answered", "2.5s", "-", "-", "1"]
    only = run("calls", "--db", str(lab_db), "--user", "alice@lab.test", "--json")
    assert only.returncode == 0, only.stderr
    data = json.loads(only.stdout)
    assert [c["ref"] for c in data] == ["r1"]
    assert data[0]["call_id"] == "cid-1"
    assert data[0]["started"] == OFFSET
    assert data[0]["answered"] == OFFSET + 2.5
    assert (data[0]["ring_s"], data[0]["talk_s"], data[0]["ended_by"]) == (2.5, None, None)
    none = run("calls", "--db", str(lab_db), "--user", "sip:nobody@lab.test")
    assert none.stdout.strip() == f"no calls recorded in {lab_db} for sip:nobody@lab.test"


def test_calls_show_prints_summary_legend_timeline_and_ladder(lab_db: Path) -> None:
    done = run("calls", "show", "r1", "--db", str(lab_db))
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "call r1: sip:bob@lab.test → sip:alice@lab.test"
    assert "  outcome   answered by alice sip:alice@10.0.0.5:5062 (udp)" in out  # no device known
    assert any(line.startswith("  answered  ") and line.endswith("ring 2.500 s") for line in out)
    timeline = out.index("timeline")
    assert out[timeline + 1] == "  +0.000 s  received    from sip:bob@lab.test"
    legend = out[out.index("participants") + 1 : timeline]
    assert legend[0] == "  caller    sip:bob@lab.test (udp)"
    assert "    via       udp:10.0.0.9:5060" in legend
    ladder = out[out.index("ladder") + 1 :]
    assert ladder[0].split() == ["caller", "sipwake", "apns", "alice"]
    assert any("|<- delivered 13 ms" in line for line in ladder)  # the push record's
    assert ladder[-1].split()[:5] == ["+2.500", "s", "|<-", "200", "OK"]
    assert all(len(line) <= 80 for line in out)
    # --db before the subcommand works too; --json carries the ladder.
    as_json = run("calls", "--db", str(lab_db), "show", "r1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["summary"]["ref"] == "r1"
    assert data["summary"]["ring_s"] == 2.5
    assert len(data["events"]) == 6
    assert len(data["messages"]) == 7
    assert data["pushes"][0]["call_id"] == "cid-1"
    assert data["ladder"] == ladder
    assert [p["label"] for p in data["participants"]] == ["caller", "sipwake", "apns", "alice"]


def test_calls_without_a_database_or_call_fail_in_one_line(lab_db: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    for args in (["calls", "--db", str(missing)], ["calls", "show", "r1", "--db", str(missing)]):
        done = run(*args)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            f"error: {missing}: no such database (sipwake serve --db PATH writes one)"
        ]
        assert not missing.exists()
    unknown = run("calls", "show", "zz", "--db", str(lab_db))
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == [
        f"error: no call 'zz' in {lab_db} (sipwake calls lists them)"
    ]


def test_sqlite_keeps_raw_heads_without_secrets_and_reads_them_back(tmp_path: Path) -> None:
    """The file holds each message's head as recorded (cut, credentials and push tokens
    hidden), and ``call`` parses it into the first line and the fields shown."""
    response = "6629fae49393a05397450978507c4ef1"

    def sip(first_line: str, *headers: str) -> bytes:
        lines = [first_line, "Call-ID: c9", *headers, "Content-Length: 4"]
        return ("\r\n".join(lines) + "\r\n\r\nv=0\n").encode()

    path = tmp_path / "lab.db"
    with SqliteStore(path) as store:
        rec = CallRecorder(store, wall_offset=OFFSET)
        rec.message_bytes(
            "in",
            CALLER,
            sip(
                "INVITE sip:alice@lab.test SIP/2.0",
                "From: <sip:bob@lab.test>;tag=b1",
                "CSeq: 2 INVITE",
                f'Proxy-Authorization: Digest username="bob", response="{response}"',
            ),
            1.0,
        )
        rec.call_event(CallEvent(call_ref="r9", aor="sip:alice@lab.test", at=1.0, step="received"))
        contact = f"Contact: <sip:alice@10.0.0.5:5062;pn-provider=apns;pn-prid={TOKEN}>"
        rec.message_bytes("in", PHONE, sip("SIP/2.0 486 Busy Here", "CSeq: 2 INVITE", contact), 2)
        rec.close()
        record = store.call("r9")
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT first_line, headers, head FROM call_messages").fetchall()
    finally:
        db.close()
    assert len(rows) == 2
    for first_line, headers, head in rows:
        assert (first_line, headers) == ("", "")  # parsed when read, not when recorded
        assert head.startswith((b"INVITE ", b"SIP/2.0 486"))
        assert b"v=0" not in head
        assert response.encode() not in head
        assert TOKEN.encode() not in head
    assert record is not None
    invite, busy = record.messages
    assert invite.first_line == "INVITE sip:alice@lab.test SIP/2.0"
    assert invite.headers == (("From", "<sip:bob@lab.test>;tag=b1"), ("CSeq", "2 INVITE"))
    assert busy.headers == (
        ("CSeq", "2 INVITE"),
        ("Contact", "<sip:alice@10.0.0.5:5062;pn-provider=apns;pn-prid=c0ff…ee00>"),
    )


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_sqlite_summaries_are_those_of_advance_entry_by_entry(tmp_path: Path, batch: int) -> None:
    """SQLite applies a run of messages to a summary at once: the summaries must be the
    ones ``advance`` gives one entry at a time (the memory store), whatever the batches,
    with messages before a call's first step, between steps and out of time order."""

    def msg(ref: str, seq: int, wall: float, call_id: str = "") -> CallMessageRecord:
        return CallMessageRecord(
            ref=ref,
            seq=seq,
            wall=wall,
            direction="in",
            peer=CALLER,
            first_line="SIP/2.0 180 Ringing",
            call_id=call_id,
        )

    def step(ref: str, seq: int, wall: float, name: str, detail: str = "") -> CallStepRecord:
        return CallStepRecord(
            ref=ref, seq=seq, wall=wall, aor="sip:alice@lab.test", step=name, detail=detail
        )

    entries = [
        msg("r1", 1, 5.0),
        msg("r1", 2, 4.0, "c1"),  # earlier than the first: the call starts here
        msg("r2", 3, 4.5, "c2"),
        step("r1", 4, 5.0, "received", "from sip:bob@lab.test"),
        msg("r1", 5, 6.0, "c1-other"),
        step("r2", 6, 4.6, "received", "from sip:carol@lab.test"),
        msg("r1", 7, 7.5),
        step("r1", 8, 7.0, "answered", "urn:uuid:phone"),
        msg("r2", 9, 9.0),
        step("r2", 10, 9.0, "cancelled"),
        msg("r1", 11, 12.0),
        msg("r1", 12, 11.0),
        step("r1", 13, 12.0, "hangup", "by the caller"),
        msg("r1", 14, 12.5),
    ]
    memory = MemoryStore()
    memory.record_call_entries(entries)
    with SqliteStore(tmp_path / "lab.db") as store:
        for i in range(0, len(entries), batch):
            store.record_call_entries(entries[i : i + batch])
        assert store.calls() == memory.calls()
    with SqliteStore(tmp_path / "lab.db") as store:  # and as read back from the file
        assert store.calls() == memory.calls()
    _, r1 = memory.calls()
    assert (r1.started, r1.updated, r1.messages, r1.call_id) == (4.0, 12.5, 7, "c1")
    assert r1.ringing == 3.0  # from the earliest message to the answer
