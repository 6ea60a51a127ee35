"""``sipwake serve``'s start banner says what the server will do, and no secret."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SIPWAKE = [sys.executable, "-m", "sipwake"]

pytestmark = pytest.mark.timeout(60)

LAB = """\
users:
  alice: {password: "hunter2-not-for-logs"}
  bob: {mobile: "+4917011111"}
  carol: {}
calls: {voicemail: builtin}
push:
  webhook:
    url: "https://hookuser:hookpass@hooks.example.test:8443/wake?key=query-secret"
    secret: "webhook-hmac-secret"
"""


def banner(cwd: Path, *args: str) -> tuple[str, str]:
    """Start ``sipwake serve ARGS`` in ``cwd``, read its banner, stop it (SIGINT)."""
    proc = subprocess.Popen(
        [*SIPWAKE, "serve", "--listen", "udp:127.0.0.1:0", "--admin", "off", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and b"Ctrl-C stops" not in seen:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                seen += chunk
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest_out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest_out, err = proc.communicate()
    return (seen + rest_out).decode(), err.decode()


def test_banner_names_push_voicemail_twinning_and_hides_configured_passwords(
    tmp_path: Path,
) -> None:
    (tmp_path / "lab.yaml").write_text(LAB)
    out, err = banner(tmp_path, "-c", "lab.yaml")
    assert "Ctrl-C stops" in out, err
    lines = {
        line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()
    }
    assert "webhook https://hooks.example.test:8443/wake" in lines["push"]
    assert "every push" in lines["push"]
    assert "built-in sip:" in lines["voicemail"]
    assert "bob +4917011111" in lines["twinning"]
    assert "built-in mobile" in lines["twinning"]
    # A password the configuration sets is the user's: never printed. Demo ones are.
    assert "alice      (password set in lab.yaml)" in out
    whole = out + err
    for secret in ("hunter2-not-for-logs", "hookpass", "query-secret", "webhook-hmac-secret"):
        assert secret not in whole
    bob = next(line for line in out.splitlines() if line.strip().startswith("bob "))
    assert len(bob.split()[1]) == 12  # the derived demo password, shown


def test_default_banner_says_pushes_go_to_the_sandbox(tmp_path: Path) -> None:
    out, err = banner(tmp_path)
    assert "Ctrl-C stops" in out, err
    assert "every push -> sandbox: recorded, nobody woken" in out
    assert "voicemail  none" in out
    assert "twinning   none" in out
    assert "admin      off" in out


def test_a_taken_port_is_named_in_the_error(tmp_path: Path) -> None:
    """A newcomer whose 5060 is taken (another SIP server, a softphone) is told which
    listener failed and how to move it, not only "Address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SIPWAKE, "serve", "--listen", f"udp:127.0.0.1:{port}", "--admin", "off"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on udp:127.0.0.1:{port}: ")
    assert "--listen udp:127.0.0.1:PORT" in last
    assert "Errno" not in last
