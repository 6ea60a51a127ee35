"""Group commit in ``sipwake serve`` with its SQLite store, over real UDP on loopback.

RFC 3261 §10.3: a REGISTER's 200 lists bindings the registrar holds, so it is sent
only once they are stored (README: synced before the 200). Several REGISTERs read
together share that transaction; one that fails answers 500 to each of them and
keeps none (§10.3 step 7, all or nothing). Call records are not acknowledged to
anyone: they are written in the background, and all of them by a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from serving import running
from sipua import udp_address

from sipwake.config import AuthConfig, Config, ListenerSpec, StoreConfig, TlsConfig
from sipwake.store import SqliteStore
from sipwake.store.sqlite import BindingRows

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def register(user: str, port: int, n: int = 1) -> bytes:
    return (
        "REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{user}-{n};rport\r\n"
        f"From: <sip:{user}@lab.test>;tag=t{n}\r\n"
        f"To: <sip:{user}@lab.test>\r\n"
        f"Call-ID: reg-{user}-{n}\r\n"
        f"CSeq: {n} REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        "Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def invite(user: str, port: int) -> bytes:
    return (
        f"INVITE sip:{user}@lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-inv-{user};rport\r\n"
        f"From: <sip:caller@lab.test>;tag=c1\r\n"
        f"To: <sip:{user}@lab.test>\r\n"
        f"Call-ID: call-{user}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def lab_config(tmp_path: Path) -> Config:
    return Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="sqlite", path=tmp_path / "sipwake.db"),
        auth=AuthConfig(open=True),
        tls=TlsConfig(dir=tmp_path / "tls"),
        secret_file=tmp_path / "secret",
    )


@pytest.fixture
async def phone() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def responses(sock: socket.socket, count: int, wait: float = 10.0) -> dict[str, int]:
    """Call-ID → status of the final responses, until ``count`` of them came."""
    loop = asyncio.get_running_loop()
    got: dict[str, int] = {}
    deadline = loop.time() + wait
    while len(got) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), remaining)
        except TimeoutError:
            break
        status = int(data.split(b" ", 2)[1])
        if status >= 200:
            call_id = re.search(rb"\r\nCall-ID: *([^\r]+)", data)
            assert call_id is not None
            got[call_id.group(1).decode()] = status
    return got


def stored_aors(db: Path) -> set[str]:
    raw = sqlite3.connect(db)
    try:
        return {aor for (aor,) in raw.execute("SELECT aor FROM bindings")}
    finally:
        raw.close()


async def test_registers_read_together_share_one_commit(
    tmp_path: Path, phone: socket.socket
) -> None:
    users = [f"u{i}" for i in range(40)]
    port = phone.getsockname()[1]
    async with running(lab_config(tmp_path)) as server:
        driver, writer = server._driver, server._bindings
        assert driver is not None
        assert writer is not None  # bindings are committed by the writer thread
        before, committed = driver.commits, writer.commits
        # Sent in one go, before the server's loop runs again: one UDP batch.
        for user in users:
            phone.sendto(register(user, port), udp_address(server))
        got = await responses(phone, len(users))
        assert got == {f"reg-{user}-1": 200 for user in users}
        assert driver.commits - before == 1
        assert writer.commits - committed == 1
        # The 200s went out after that commit: every binding is in the file for any
        # other reader, as after a restart.
        assert stored_aors(tmp_path / "sipwake.db") == {f"sip:{u}@lab.test" for u in users}


async def test_a_failed_batch_answers_500_to_each_and_keeps_no_binding(
    tmp_path: Path, phone: socket.socket
) -> None:
    db = tmp_path / "sipwake.db"
    SqliteStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON bindings WHEN NEW.aor = 'sip:poison@lab.test' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    raw.commit()
    raw.close()
    port = phone.getsockname()[1]
    users = ["a1", "a2", "a3", "poison", "a4", "a5"]
    async with running(lab_config(tmp_path)) as server:
        assert server.node is not None
        for user in users:
            phone.sendto(register(user, port), udp_address(server))
        got = await responses(phone, len(users))
        assert got == {f"reg-{user}-1": 500 for user in users}
        registrar = server.node.registrar
        assert all(registrar.lookup(f"sip:{u}@lab.test", 0.0) == [] for u in users)
        assert stored_aors(db) == set()
        # The store works again for a batch without the poisoned row.
        phone.sendto(register("a1", port, 2), udp_address(server))
        assert await responses(phone, 1) == {"reg-a1-2": 200}
        assert len(registrar.lookup("sip:a1@lab.test", 0.0)) == 1
    assert stored_aors(db) == {"sip:a1@lab.test"}


async def test_call_records_land_and_are_all_there_after_a_graceful_stop(
    tmp_path: Path, phone: socket.socket
) -> None:
    """INVITEs to users with no device: each is a call with its steps and messages."""
    port = phone.getsockname()[1]
    callees = [f"nobody{i}" for i in range(30)]
    async with running(lab_config(tmp_path)) as server:
        assert server.node is not None
        for callee in callees[:10]:
            phone.sendto(invite(callee, port), udp_address(server))
        assert len(await responses(phone, 10)) == 10
        recorder, log = server.recorder, server._log
        assert recorder is not None
        assert log is not None
        recorder.flush()
        assert log.flush()  # written a few milliseconds after, by the writer thread
        with SqliteStore(tmp_path / "sipwake.db") as reader:
            assert len(reader.calls(100)) == 10
        assert log.batches < 10 * 3  # grouped: not one transaction per step or message
        # The rest just before the stop: close() writes every one of them.
        for callee in callees[10:]:
            phone.sendto(invite(callee, port), udp_address(server))
        assert len(await responses(phone, 20)) == 20
    with SqliteStore(tmp_path / "sipwake.db") as reader:
        calls = reader.calls(100)
        assert sorted(c.call_id for c in calls) == sorted(f"call-{c}" for c in callees)
        record = reader.call(calls[0].ref)
        assert record is not None
        assert record.events
        assert [m.first_line.split()[0] for m in record.messages][:1] == ["INVITE"]


def options(port: int, n: int) -> bytes:
    return (
        "OPTIONS sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-opt-{n};rport\r\n"
        f"From: <sip:probe@lab.test>;tag=o{n}\r\nTo: <sip:lab.test>\r\n"
        f"Call-ID: options-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Binding commits of the writer thread wait until the test sets this (a slow disk)."""
    opened = threading.Event()
    write_rows = SqliteStore.write_rows

    def held(self: SqliteStore, rows: BindingRows) -> None:
        if threading.current_thread().name == "sipwake-binding-writer":
            assert opened.wait(20), "the test never opened the gate"
        write_rows(self, rows)

    monkeypatch.setattr(SqliteStore, "write_rows", held)
    return opened


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


async def test_no_200_before_its_batch_is_committed_and_the_loop_serves_meanwhile(
    tmp_path: Path, phone: socket.socket, gate: threading.Event
) -> None:
    """RFC 3261 §10.3: the 200 lists stored bindings. While the commit waits for the
    disk, no 200 goes out and nothing is in the file; the loop still answers others."""
    users = [f"held{i}" for i in range(20)]
    port = phone.getsockname()[1]
    db = tmp_path / "sipwake.db"
    async with running(lab_config(tmp_path)) as server:
        writer = server._bindings
        assert writer is not None
        for user in users:
            phone.sendto(register(user, port), udp_address(server))
        await until(lambda: writer.busy, "the batch reached the writer")
        phone.sendto(options(port, 1), udp_address(server))  # the loop is not blocked
        assert await responses(phone, 1, wait=2.0) == {"options-1": 200}
        await asyncio.sleep(0.3)
        assert await responses(phone, 1, wait=0.05) == {}  # no 200 for any REGISTER
        assert stored_aors(db) == set()
        gate.set()
        got = await responses(phone, len(users))
        assert got == {f"reg-{user}-1": 200 for user in users}
        assert stored_aors(db) == {f"sip:{u}@lab.test" for u in users}


async def test_a_failed_batch_takes_the_registers_gathered_behind_it(
    tmp_path: Path, phone: socket.socket, gate: threading.Event
) -> None:
    """REGISTERs read while a batch commits may build on it (the registrar holds their
    changes already): when that batch fails, they get 500 with it and none is kept."""
    db = tmp_path / "sipwake.db"
    poison(db)
    port = phone.getsockname()[1]
    async with running(lab_config(tmp_path)) as server:
        assert server.node is not None
        writer = server._bindings
        assert writer is not None
        for user in ("b1", "poison"):
            phone.sendto(register(user, port), udp_address(server))
        await until(lambda: writer.busy, "the first batch reached the writer")
        for user in ("b2", "b3", "b1"):  # b1 again: a refresh of the held binding
            phone.sendto(register(user, port, 2), udp_address(server))
        await asyncio.sleep(0.1)  # read and handled: gathered for the next batch
        gate.set()
        got = await responses(phone, 5)
        assert got == {
            "reg-b1-1": 500,
            "reg-poison-1": 500,
            "reg-b2-2": 500,
            "reg-b3-2": 500,
            "reg-b1-2": 500,
        }
        registrar = server.node.registrar
        for user in ("b1", "b2", "b3", "poison"):
            assert registrar.lookup(f"sip:{user}@lab.test", 0.0) == []
        assert stored_aors(db) == set()
        phone.sendto(register("b2", port, 3), udp_address(server))
        assert await responses(phone, 1) == {"reg-b2-3": 200}
    assert stored_aors(db) == {"sip:b2@lab.test"}


def poison(db: Path) -> None:
    """A store in which the row of ``poison`` cannot be written."""
    SqliteStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON bindings WHEN NEW.aor = 'sip:poison@lab.test' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    raw.commit()
    raw.close()


def _serve(db: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """``sipwake serve --open`` with its SQLite store (synchronous=FULL), as users run it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipwake",
            "serve",
            "--open",
            "--db",
            str(db),
            "--listen",
            "udp:127.0.0.1:0",
            "--log-level",
            "info",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    seen = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        found = re.search(rb"serving \S+ on udp:127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, ("127.0.0.1", int(found.group(1)))
    proc.kill()
    proc.wait()
    raise AssertionError(f"sipwake serve did not start: {seen[-2000:]!r}")


async def test_kill_9_after_a_burst_loses_no_binding_answered_200(
    tmp_path: Path, phone: socket.socket
) -> None:
    """200 REGISTERs sent in one go over UDP; SIGKILL as soon as half of them are
    answered (the rest still being handled); every one answered 200 is in the file
    the next start loads."""
    db = tmp_path / "sipwake.db"
    proc, server = _serve(db, tmp_path)
    port = phone.getsockname()[1]
    users = [f"burst{i}" for i in range(200)]
    try:
        for user in users:
            phone.sendto(register(user, port), server)
        got = await responses(phone, len(users) // 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # What reached our socket before the kill was answered too.
    got.update(await responses(phone, len(users), wait=0.5))
    answered = {cid.removeprefix("reg-").removesuffix("-1") for cid, s in got.items() if s == 200}
    assert len(answered) >= len(users) // 2
    with SqliteStore(db) as store:  # what a restart loads
        restored = {b.aor for b in store.load(0.0, time.time())}
    assert {f"sip:{u}@lab.test" for u in answered} <= restored


async def test_kill_9_during_a_flood_loses_no_binding_answered_200(
    tmp_path: Path, phone: socket.socket
) -> None:
    """REGISTERs keep coming (bursts of 50 every 10 ms, 3000 users) while batches commit
    in the writer thread; SIGKILL once 500 are answered, the flood still going: every
    REGISTER answered 200 is in the file the next start loads."""
    db = tmp_path / "sipwake.db"
    proc, server = _serve(db, tmp_path)
    port = phone.getsockname()[1]
    users = [f"flood{i}" for i in range(3000)]
    loop = asyncio.get_running_loop()

    async def flood() -> None:
        for start in range(0, len(users), 50):
            for user in users[start : start + 50]:
                with contextlib.suppress(BlockingIOError):
                    phone.sendto(register(user, port), server)
            await asyncio.sleep(0.01)

    sending = loop.create_task(flood())
    got: dict[str, int] = {}
    try:
        while sum(1 for s in got.values() if s == 200) < 500:
            more = await responses(phone, 1, wait=10.0)
            assert more, "the server stopped answering"
            got.update(more)
        assert not sending.done()  # killed during the flood, not after it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        sending.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    got.update(await responses(phone, len(users), wait=0.5))
    answered = {cid.removeprefix("reg-").removesuffix("-1") for cid, s in got.items() if s == 200}
    assert len(answered) >= 500
    with SqliteStore(db) as store:
        restored = {b.aor for b in store.load(0.0, time.time())}
    assert {f"sip:{u}@lab.test" for u in answered} <= restored
