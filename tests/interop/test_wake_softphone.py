"""A real softphone woken by a push: linphonec registers with RFC 8599 parameters and is
stopped (the app is suspended); a SIPp caller calls it; sipwake pushes through the webhook
provider to this test, which starts linphonec again (the push woke the app); linphonec
re-registers, gets the held INVITE through late forking and answers (auto-answer)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from peers import LINPHONE_RC, SCENARIOS, Peer, free_port, lab_config, need, sip_port, wait_until

from sipwake.config import WebhookConfig
from sipwake.push.webhook import verify_signature
from sipwake.server import Server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

TOKEN = "c0ffee00" * 8
SECRET = "webhook-test-secret"


class Linphone:
    """linphonec in auto-answer mode on a private HOME; each ``start`` is an app launch."""

    def __init__(self, tmp_path: Path, server_port: int) -> None:
        self.binary = need("linphonec")
        self.home = tmp_path / "home"
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True)
        self.tmp = tmp_path
        rtp = free_port()
        self.text = LINPHONE_RC.format(
            sip_port=free_port(),
            rtp_port=rtp,
            video_port=rtp + 2,
            server_port=server_port,
            identity="sip:frank@lab.test",
            expires=3600,
            uuid="5b1f0f3e-7a34-4c1e-9d7e-2f6a1c0b9e11",
            token=TOKEN,
            extra="",
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.launches = 0

    async def start(self) -> None:
        self.launches += 1
        rc = self.tmp / f"frank-{self.launches}.rc"  # linphonec rewrites its -c file
        rc.write_text(self.text)
        self.proc = await asyncio.create_subprocess_exec(
            *("timeout", "-k", "2", "60", self.binary, "-c", str(rc), "-a", "-d", "0"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
            cwd=self.tmp,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"soundcard use files\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class WebhookReceiver:
    """A tiny HTTP/1.1 server: verifies each signed push and runs ``on_push`` on it."""

    def __init__(self, on_push: Callable[[dict[str, object]], object]) -> None:
        self.on_push = on_push
        self.pushes: list[dict[str, object]] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                ok = verify_signature(SECRET, headers.get("x-sipwake-signature"), body, time.time())
                status = "200 OK" if ok else "401 Unauthorized"
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
                if ok:
                    push = json.loads(body)
                    self.pushes.append(push)
                    result = self.on_push(push)
                    if asyncio.iscoroutine(result):
                        task = asyncio.ensure_future(result)
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _sipp_call(server_port: int, tmp_path: Path) -> Peer:
    sipp = need("sipp")
    return Peer(
        [
            sipp,
            f"127.0.0.1:{server_port}",
            *("-i", "127.0.0.1", "-cp", str(free_port(socket.SOCK_STREAM))),
            *("-mp", str(free_port()), "-nostdin", "-p", str(free_port())),
            *("-sf", str(SCENARIOS / "uac.xml"), "-s", "frank", "-m", "1"),
            *("-default_behaviors", "all,-abortunexp", "-recv_timeout", "30000"),
        ],
        limit=45,
        cwd=tmp_path,
    )


async def test_stopped_linphone_is_woken_by_webhook_push_and_answers(tmp_path: Path) -> None:
    config = lab_config(tmp_path, open_=True, users={"frank": "frank-pw"})
    receiver_holder: dict[str, Linphone] = {}

    async def wake(push: dict[str, object]) -> None:
        if push.get("kind") == "call":
            await receiver_holder["phone"].start()  # the push launches the app

    receiver = WebhookReceiver(wake)
    await receiver.start()
    config.push.webhook = WebhookConfig(url=f"http://127.0.0.1:{receiver.port}/wake", secret=SECRET)
    # UDP phones with push parameters count as suspended at once (the app stops between
    # calls), and there is time to wake.
    config.calls.udp_foreground_s = 0.0
    config.calls.no_answer_s = 30.0
    server = Server(config)
    await server.start()
    phone = Linphone(tmp_path, sip_port(server))
    receiver_holder["phone"] = phone
    try:
        assert server.node is not None
        registrar = server.node.registrar
        await phone.start()
        await wait_until(
            lambda: bool(registrar.lookup("sip:frank@lab.test", 0.0)), 20, "linphonec to register"
        )
        await phone.stop()  # the app is suspended: nothing answers at its contact
        (binding,) = registrar.lookup("sip:frank@lab.test", 0.0)
        assert binding.push is not None
        assert binding.push.prid == TOKEN
        caller = _sipp_call(sip_port(server), tmp_path)
        code, out = await asyncio.to_thread(caller.wait, 45)
        assert code == 0, out[-3000:]
        assert "Successful call" in out
        assert phone.launches == 2  # woken once, by the push
        (push,) = [p for p in receiver.pushes if p.get("kind") == "call"]
        assert push["prid"] == TOKEN
        assert push["provider"] == "apns"
    finally:
        await phone.stop()
        await receiver.close()
        await server.close()


async def test_linphone_that_never_wakes_diverts_to_builtin_voicemail(tmp_path: Path) -> None:
    config = lab_config(tmp_path, open_=True, users={"frank": "frank-pw"})
    receiver = WebhookReceiver(lambda push: None)  # the push reaches nobody
    await receiver.start()
    config.push.webhook = WebhookConfig(url=f"http://127.0.0.1:{receiver.port}/wake", secret=SECRET)
    config.calls.udp_foreground_s = 0.0
    config.calls.no_answer_s = 3.0
    config.calls.voicemail = "builtin"
    config.voicemail_box.dir = tmp_path / "voicemail"
    server = Server(config)
    await server.start()
    phone = Linphone(tmp_path, sip_port(server))
    try:
        assert server.node is not None
        assert server.voicemail is not None
        registrar = server.node.registrar
        await phone.start()
        await wait_until(
            lambda: bool(registrar.lookup("sip:frank@lab.test", 0.0)), 20, "linphonec to register"
        )
        await phone.stop()
        started = time.monotonic()
        caller = _sipp_call(sip_port(server), tmp_path)
        code, out = await asyncio.to_thread(caller.wait, 45)
        assert code == 0, out[-3000:]  # answered by the voicemail after the no-answer time
        assert time.monotonic() - started >= 3.0
        assert phone.launches == 1  # nobody woke it
        assert [p["kind"] for p in receiver.pushes][:1] == ["call"]
        await wait_until(
            lambda: any((tmp_path / "voicemail").rglob("*.json")), 10, "the voicemail record"
        )
        (sidecar,) = (tmp_path / "voicemail").rglob("*.json")
        record = json.loads(sidecar.read_text())
        assert record["callee"] == "sip:frank@lab.test"
        assert record["cause"] == 480  # pushed, never reached: unavailable
        wav = sidecar.with_suffix(".wav")
        assert wav.exists()
        assert wav.read_bytes()[:4] == b"RIFF"
    finally:
        await phone.stop()
        await receiver.close()
        await server.close()
