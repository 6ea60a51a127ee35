"""README "Softphone settings", checked with the real softphones it names.

``lab.test`` is not in DNS: a softphone calls ``sip:carol@lab.test`` only when every
request goes to sipwake as its outbound proxy. These tests take the linphonerc and
baresip settings from README.md itself (only the port and password change), so the
README cannot drift from what works: alice and carol register with digest, alice calls
``sip:carol@lab.test``, carol answers, alice hangs up and sipwake relays the BYE's 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import subprocess
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from peers import LINPHONE_RC, Peer, free_port, lab_config, need, wait_until
from test_baresip import CONFIG as BARESIP_CONFIG
from test_baresip import Baresip, _port_pair

from sipwake.server import Server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORDS = {"alice": "alice-pw", "carol": "carol-pw"}
#: The values the README shows, replaced by the test's own.
README_PORT = "127.0.0.1:5060"
README_PASSWORD = "PASSWORD"


def readme_section() -> str:
    text = README.read_text()
    start = text.index("### Softphone settings")
    end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start + 1)) if i > 0)
    return text[start:end]


def readme_block(after: str) -> str:
    """The first fenced block of the section after the text ``after``, dedented."""
    section = readme_section()
    found = re.search(r"```[a-z]*\n(.*?)```", section[section.index(after) :], re.S)
    assert found is not None, f"README 'Softphone settings': no code block after {after!r}"
    return textwrap.dedent(found.group(1))


def personalise(block: str, user: str, server_port: int) -> str:
    """The README's block for ``user`` on this test's server."""
    for shown in (README_PORT, README_PASSWORD, "alice"):
        assert shown in block, f"README block no longer shows {shown!r}:\n{block}"
    return (
        block.replace(README_PORT, f"127.0.0.1:{server_port}")
        .replace(README_PASSWORD, PASSWORDS[user])
        .replace("alice", user)
    )


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Server]:
    """sipwake for lab.test with digest auth, tracing what it sends (for the BYE's 200)."""
    server = Server(lab_config(tmp_path, open_=False, users=PASSWORDS), trace=True)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class TraceLog(logging.Handler):
    """sipwake's ``--trace`` records: ``send -> udp:HOST:PORT`` then the message."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())

    def sent_to(self, port: int) -> list[str]:
        prefix = f"send -> udp:127.0.0.1:{port}\n"
        return [r[len(prefix) :] for r in self.records if r.startswith(prefix)]

    def bye_answered_200_to(self, port: int) -> bool:
        return any(
            m.lstrip().startswith("SIP/2.0 200") and re.search(r"CSeq: \d+ BYE", m)
            for m in self.sent_to(port)
        )


@pytest.fixture
def trace() -> Iterator[TraceLog]:
    logger = logging.getLogger("sipwake.trace")
    handler = TraceLog()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def registered(server: Server, *users: str) -> None:
    assert server.node is not None
    registrar = server.node.registrar
    await wait_until(
        lambda: all(registrar.lookup(f"sip:{u}@lab.test", 0.0) for u in users),
        20,
        f"{', '.join(users)} to register",
    )


# -- linphonec --------------------------------------------------------------------------

#: linphonec's headless settings (ports, no sound card, fixed instance id) without an
#: account: the account is the README's ``[proxy_0]``/``[auth_info_0]``.
LINPHONE_HEADLESS = LINPHONE_RC.split("[proxy_0]", 1)[0]


class Linphonec:
    """linphonec fed commands on stdin; its call states read from stdout."""

    def __init__(self, tmp_path: Path, user: str, account: str, *, auto_answer: bool) -> None:
        self.user = user
        self.home = tmp_path / user
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True)
        self.sip_port = free_port()
        rtp = free_port()
        self.rc = self.home / "linphonerc"  # linphonec rewrites it: a fresh one per run
        self.rc.write_text(
            LINPHONE_HEADLESS.format(
                sip_port=self.sip_port,
                rtp_port=rtp,
                video_port=rtp + 2,
                uuid=f"5b0c3a52-7f1e-5d2a-9c11-{self.sip_port:012d}",
            )
            + account
        )
        self.auto_answer = auto_answer
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        args = [need("linphonec"), "-c", str(self.rc), "-d", "0"]
        if self.auto_answer:
            args.append("-a")
        self.proc = await asyncio.create_subprocess_exec(
            *("timeout", "-k", "2", "60", *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
            cwd=self.home,
        )
        self._reader = asyncio.create_task(self._read())
        await self.send("soundcard use files")

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new_line.set()

    async def send(self, command: str) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, pattern: str, within: float = 15.0) -> re.Match[str]:
        """The first output line (so far or to come) matching ``pattern``."""
        seen = 0
        async with asyncio.timeout(within):
            while True:
                for line in self.lines[seen:]:
                    if found := re.search(pattern, line):
                        return found
                seen = len(self.lines)
                self._new_line.clear()
                await self._new_line.wait()

    def tail(self) -> str:
        return "\n".join(self.lines[-15:])

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.send("quit")
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()  # by PID: the ``timeout`` process, which passes it on
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def linphonec_call(
    tmp_path: Path, server: Server, trace: TraceLog, accounts: dict[str, str], callee: str
) -> None:
    """alice calls ``callee`` (carol auto-answers), alice hangs up: all of it must work."""
    alice = Linphonec(tmp_path, "alice", accounts["alice"], auto_answer=False)
    carol = Linphonec(tmp_path, "carol", accounts["carol"], auto_answer=True)
    try:
        await asyncio.gather(alice.start(), carol.start())
        await registered(server, "alice", "carol")
        await alice.send(f"call {callee}")
        state = re.escape(callee) + r" (connected|error|ended)"
        outcome = await alice.expect(r"Call \d+ with " + state)
        assert outcome.group(1) == "connected", f"alice's call failed:\n{alice.tail()}"
        await carol.expect(r"Call \d+ with sip:alice@\S+ connected")
        await alice.send("terminate")
        await alice.expect(r"Call \d+ with .* ended")
        await carol.expect(r"Call \d+ with .* ended")
        await wait_until(
            lambda: trace.bye_answered_200_to(alice.sip_port), 5, "the BYE's 200 back to alice"
        )
    finally:
        await asyncio.gather(alice.stop(), carol.stop())


async def test_linphonec_with_the_readme_linphonerc_calls_carol_at_lab_test(
    tmp_path: Path, lab: Server, trace: TraceLog
) -> None:
    block = readme_block("linphonerc")
    assert "reg_route=" in block  # the outbound proxy: without it calls go to DNS
    port = lab.bound[0].port
    accounts = {user: personalise(block, user, port) for user in PASSWORDS}
    await linphonec_call(tmp_path, lab, trace, accounts, "sip:carol@lab.test")


async def test_linphonec_with_localhost_as_its_outbound_proxy_calls_carol(
    tmp_path: Path, lab: Server, trace: TraceLog
) -> None:
    """A user who types ``localhost`` for the proxy: the Route names ``localhost:PORT``,
    which sipwake must take as itself (it answered 403 Relaying denied before)."""
    port = lab.bound[0].port
    accounts = {
        user: personalise(readme_block("linphonerc"), user, port).replace(
            f"127.0.0.1:{port}", f"localhost:{port}"
        )
        for user in PASSWORDS
    }
    assert f"reg_route=<sip:localhost:{port};" in accounts["alice"]
    await linphonec_call(tmp_path, lab, trace, accounts, "sip:carol@lab.test")


async def test_linphonec_with_127_0_0_1_as_the_domain_needs_no_outbound_proxy(
    tmp_path: Path, lab: Server, trace: TraceLog
) -> None:
    """README's alternative: the server's address as the domain (here with its port)."""
    port = lab.bound[0].port
    block = readme_block("linphonerc")
    without_route = "".join(
        line for line in block.splitlines(keepends=True) if not line.startswith("reg_route=")
    )
    accounts = {
        user: personalise(without_route, user, port).replace("lab.test", f"127.0.0.1:{port}")
        for user in PASSWORDS
    }
    await linphonec_call(tmp_path, lab, trace, accounts, f"sip:carol@127.0.0.1:{port}")


# -- baresip ----------------------------------------------------------------------------


class ReadmeBaresip(Baresip):
    """baresip with the README's account line (plus auto-answer and PCMU for headless)."""

    def __init__(self, home: Path, user: str, account: str) -> None:
        self.user = user
        home.mkdir(parents=True)
        self.sip_port = _port_pair()
        rtp = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        (home / "config").write_text(
            BARESIP_CONFIG.format(
                sip_port=self.sip_port, rtp_port=rtp, rtp_end=rtp + 10, ctrl_port=self.ctrl_port
            )
        )
        (home / "accounts").write_text(
            account.strip() + ";answermode=auto;regint=600;audio_codecs=PCMU\n"
        )
        self.peer = Peer([need("baresip"), "-f", str(home), "-t", "60"], limit=70, cwd=home)
        self.reader = None
        self.writer = None
        self.events = []


async def test_baresip_with_the_readme_account_line_calls_carol_at_lab_test(
    tmp_path: Path, lab: Server, trace: TraceLog
) -> None:
    need("baresip")
    block = readme_block("**baresip**")
    assert "outbound" in block
    port = lab.bound[0].port
    alice = ReadmeBaresip(tmp_path / "alice", "alice", personalise(block, "alice", port))
    carol = ReadmeBaresip(tmp_path / "carol", "carol", personalise(block, "carol", port))
    try:
        await asyncio.gather(alice.connect(), carol.connect())
        await registered(lab, "alice", "carol")
        await alice.command("dial", "sip:carol@lab.test")
        await asyncio.gather(
            alice.wait_event("CALL_ESTABLISHED"), carol.wait_event("CALL_ESTABLISHED")
        )
        await alice.command("hangup")
        await asyncio.gather(alice.wait_event("CALL_CLOSED"), carol.wait_event("CALL_CLOSED"))
        await wait_until(
            lambda: trace.bye_answered_200_to(alice.sip_port), 5, "the BYE's 200 back to alice"
        )
    finally:
        alice.stop()
        carol.stop()
