"""Two baresip softphones register to sipwake with digest auth and call each other."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from peers import Peer, free_port, lab_config, need, wait_until

from sipwake.server import Server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

CONFIG = """\
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
sip_trans_def		udp
call_local_timeout	30
call_max_calls		4
audio_player		aubridge,nil
audio_source		aubridge,nil
audio_alert		aubridge,nil
audio_level		no
rtp_ports		{rtp_port}-{rtp_end}
rtcp_mux		no
net_interface		127.0.0.1
dns_server		127.0.0.1:53
module_path		/usr/lib/baresip/modules
module			g711.so
module			aubridge.so
module_tmp		uuid.so
module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
"""


def _port_pair() -> int:
    """A port P with P and P+1 free (baresip also listens for TLS on SIP port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


class Baresip:
    """One baresip process driven over its ctrl_tcp socket (JSON in netstrings)."""

    def __init__(self, home: Path, user: str, password: str, server_port: int) -> None:
        self.user = user
        home.mkdir(parents=True)
        sip_port = _port_pair()
        rtp = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        (home / "config").write_text(
            CONFIG.format(
                sip_port=sip_port, rtp_port=rtp, rtp_end=rtp + 10, ctrl_port=self.ctrl_port
            )
        )
        (home / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{server_port};transport=udp>;auth_user={user};"
            f"auth_pass={password};answermode=auto;regint=600;audio_codecs=PCMU\n"
        )
        self.peer = Peer([need("baresip"), "-f", str(home), "-t", "60"], limit=70, cwd=home)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: list[dict[str, object]] = []

    async def connect(self) -> None:
        for _ in range(100):
            try:
                self.reader, self.writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"baresip ctrl_tcp for {self.user} did not come up")

    async def command(self, command: str, params: str = "") -> None:
        assert self.writer is not None
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.writer.write(str(len(body)).encode() + b":" + body + b",")
        await self.writer.drain()

    async def wait_event(self, kind: str, within: float = 15.0) -> dict[str, object]:
        assert self.reader is not None
        async with asyncio.timeout(within):
            while True:
                length = int((await self.reader.readuntil(b":"))[:-1])
                body = await self.reader.readexactly(length + 1)
                message = json.loads(body[:-1])
                if message.get("event"):
                    self.events.append(message)
                    if message.get("type") == kind:
                        return message

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.peer.stop()


async def test_two_baresip_register_call_and_hang_up(tmp_path: Path) -> None:
    need("baresip")
    config = lab_config(tmp_path, open_=False, users={"alice": "alice-pw", "bob": "bob-pw"})
    server = Server(config)
    await server.start()
    port = server.bound[0].port
    alice = Baresip(tmp_path / "alice", "alice", "alice-pw", port)
    bob = Baresip(tmp_path / "bob", "bob", "bob-pw", port)
    try:
        await asyncio.gather(alice.connect(), bob.connect())
        assert server.node is not None
        registrar = server.node.registrar
        # Registration may finish before ctrl_tcp is up: watch the registrar instead.
        await wait_until(
            lambda: (
                bool(registrar.lookup("sip:alice@lab.test", 0.0))
                and bool(registrar.lookup("sip:bob@lab.test", 0.0))
            ),
            10,
            "both baresip registrations",
        )
        assert len(registrar.lookup("sip:bob@lab.test", 0.0)) == 1
        await alice.command("dial", f"sip:bob@127.0.0.1:{port}")
        await asyncio.gather(
            alice.wait_event("CALL_ESTABLISHED"), bob.wait_event("CALL_ESTABLISHED")
        )
        await alice.command("hangup")
        await asyncio.gather(alice.wait_event("CALL_CLOSED"), bob.wait_event("CALL_CLOSED"))
    finally:
        alice.stop()
        bob.stop()
        await server.close()
