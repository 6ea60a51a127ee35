"""linphonec registers with RFC 8599 push parameters in its Contact; sipwake stores them."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import pytest
from peers import LINPHONE_RC, free_port, lab_config, need, wait_until

from sipwake.server import Server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


TOKEN = "d3adbeef" * 8


async def test_linphonec_registers_with_rfc8599_push_parameters(tmp_path: Path) -> None:
    linphonec = need("linphonec")
    config = lab_config(tmp_path, open_=False, users={"frank": "frank-pw"})
    server = Server(config)
    await server.start()
    home = tmp_path / "home"
    (home / ".local" / "share" / "linphone").mkdir(parents=True)
    rc = tmp_path / "frank.rc"  # linphonec rewrites its -c file: this is a fresh copy
    rtp = free_port()
    rc.write_text(
        LINPHONE_RC.format(
            sip_port=free_port(),
            rtp_port=rtp,
            video_port=rtp + 2,
            server_port=server.bound[0].port,
            identity=f"sip:frank@127.0.0.1:{server.bound[0].port}",
            expires=600,
            uuid="56d23112-661e-55b8-8f48-e74a1bddaa82",
            token=TOKEN,
            extra="[auth_info_0]\nusername=frank\npasswd=frank-pw\nrealm=lab.test\n",
        )
    )
    proc = await asyncio.create_subprocess_exec(
        *("timeout", "-k", "2", "40", linphonec, "-c", str(rc), "-d", "0"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    try:
        assert server.node is not None
        registrar = server.node.registrar
        await wait_until(
            lambda: bool(registrar.lookup("sip:frank@lab.test", 0.0)), 20, "linphonec to register"
        )
        (binding,) = registrar.lookup("sip:frank@lab.test", 0.0)
        assert binding.push is not None
        assert binding.push.provider == "apns"
        assert binding.push.prid == TOKEN
        assert binding.push.topic == "org.example.phone.voip"
        assert binding.push.team_id == "ABCDE12345"
        assert binding.instance is not None
        assert "56d23112-661e-55b8-8f48-e74a1bddaa82" in binding.instance
        # what is forwarded to the phone carries no push parameters
        assert "pn-prid" not in str(binding.forward_uri())
        assert TOKEN not in repr(binding)
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await server.close()
