"""Helpers for the interop tests: real SIP peers (Debian packages) against sipwake.

Each peer is started by the test with a hard time limit (coreutils ``timeout``),
on 127.0.0.1, and stopped by its PID.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.server import Server

SCENARIOS = Path(__file__).parent / "scenarios"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install it; .ci/run does)")
    return path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


class Peer:
    """A peer process under ``timeout``; killed by PID at the end of the test."""

    def __init__(self, args: Sequence[str], *, limit: float, cwd: Path) -> None:
        self.args = list(args)
        self.proc = subprocess.Popen(
            ["timeout", "-k", "2", str(limit), *self.args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait(self, within: float) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=within)
        except subprocess.TimeoutExpired:
            self.stop()
            out, _ = self.proc.communicate()
            return -1, out.decode(errors="replace")
        return self.proc.returncode, out.decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (``timeout`` passes it on to the peer), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lab_config(tmp_path: Path, *, open_: bool, users: dict[str, str] | None = None) -> Config:
    port = free_port()
    return Config(
        domain="lab.test",
        listen=[
            ListenerSpec(transport="udp", host="127.0.0.1", port=port),
            ListenerSpec(transport="tcp", host="127.0.0.1", port=port),
        ],
        store=StoreConfig(backend="sqlite", path=tmp_path / "sipwake.db"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={name: UserConfig(password=pw) for name, pw in (users or {}).items()},
        secret_file=tmp_path / "secret",
        auth={"open": open_},  # type: ignore[arg-type]
    )


def sip_port(server: Server) -> int:
    return server.bound[0].port


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``predicate`` (state owned by another process shows no event to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


#: linphonec (5.1.65) headless configuration for one account on loopback with RFC 8599
#: push parameters in its Contact (see ../shared/PEERS.md). ``extra`` adds sections such
#: as ``[auth_info_0]``. linphonec rewrites its ``-c`` file: write a fresh copy per run.
LINPHONE_RC = """\
[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port=0
bind_address=127.0.0.1
guess_hostname=1
register_only_when_network_is_up=0
auto_net_state_mon=0
default_proxy=0
ipv6_enabled=0
[net]
firewall_policy=0
[rtp]
audio_rtp_port={rtp_port}
video_rtp_port={video_port}
[sound]
playback_dev_id=
capture_dev_id=
ringer_dev_id=
[video]
enabled=0
capture=0
display=0
[misc]
uuid={uuid}
enable_basic_to_client_group_chat_room_migration=0
[proxy_0]
reg_proxy=<sip:127.0.0.1:{server_port};transport=udp>
reg_identity={identity}
reg_expires={expires}
reg_sendregister=1
publish=0
dial_escape_plus=0
quality_reporting_enabled=0
contact_uri_parameters=pn-provider=apns;pn-prid={token};pn-param=ABCDE12345.org.example.phone.voip
{extra}"""
