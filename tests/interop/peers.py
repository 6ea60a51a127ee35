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
