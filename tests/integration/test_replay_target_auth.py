"""``sipwake replay --target`` against ``sipwake serve`` run as a user runs it: a
subprocess with users that have passwords (no ``--open``) and push settings pointing at
the replay's mock APNs/FCM on fixed ports (``--mock-push``). The simulated phone answers
the server's 401, the caller its 407; a suspended iPhone is woken by a real APNs push
(HTTP/2 + TLS, ES256 token) through the mock and answers. A wrong password fails,
naming the user."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sipwake.push.mock import write_self_signed_cert, write_service_account
from sipwake.push.mockcli import KEY_ID, apns_key

ROOT = Path(__file__).resolve().parents[2]
SIPWAKE = [sys.executable, "-m", "sipwake"]
#: The subprocesses run this checkout's sipwake, whatever their working directory.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

pytestmark = pytest.mark.timeout(60)

SCENARIO = """\
name: Authenticated iPhone asleep is woken through another server's push
users:
  bob:
    password: bob-secret-1
    devices:
      - name: iphone
        platform: ios
        transport: tls
        state: suspended
        wake_delay_s: 0.5
        answer_after_s: 0.5
  carol:
    password: carol-secret-2
timeline:
  - at: 0.5
    call: {from: carol, to: bob}
expect:
  - push: {kind: call, to: bob.iphone, within: 0.5}
  - answered: {by: bob.iphone, at: 1.6, tolerance: 0.4}
  - final_status: 200
duration_s: 10
"""


def _free(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(n: int, *, udp: bool) -> int:
    """A base port with ``n`` consecutive TCP ports free (and UDP on the first)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65535:
            continue
        tcp = all(_free(socket.SOCK_STREAM, base + i) for i in range(n))
        if tcp and (not udp or _free(socket.SOCK_DGRAM, base)):
            return base
    raise RuntimeError("no free ports")


def _prepare_mock_dir(directory: Path, mock_port: int) -> dict[str, object]:
    """What ``sipwake replay --target`` (or ``sipwake mock-push``) leaves in its directory,
    made ahead so the server can be configured before the first replay: the APNs key, the
    mocks' certificates and an FCM service account; the ``push:`` settings that use them."""
    directory.mkdir()
    key_file, _ = apns_key(directory)
    apns_cert, _ = write_self_signed_cert(directory, stem="mock-apns", days=365)
    fcm_cert, _ = write_self_signed_cert(directory, stem="mock-fcm", days=365)
    account = write_service_account(
        directory, "lab-phone", f"https://127.0.0.1:{mock_port + 1}/token"
    )
    return {
        "apns": {
            "team_id": "TEAM123456",
            "key_id": KEY_ID,
            "key_file": str(key_file),
            "bundle_id": "org.lab.phone",
            "base_url": f"https://127.0.0.1:{mock_port}",
            "ca_file": str(apns_cert),
        },
        "fcm": {
            "service_account": str(account.path),
            "base_url": f"https://127.0.0.1:{mock_port + 1}",
            "ca_file": str(fcm_cert),
        },
    }


@contextlib.contextmanager
def _serve(
    tmp_path: Path,
    sip_port: int,
    push: dict[str, object],
    calls: dict[str, object] | None = None,
) -> Iterator[None]:
    """``sipwake serve`` with bob and carol (passwords), no --open, until stopped."""
    config: dict[str, object] = {
        "domain": "lab.test",
        "listen": [
            f"udp:127.0.0.1:{sip_port}",
            f"tcp:127.0.0.1:{sip_port}",
            f"tls:127.0.0.1:{sip_port + 1}",
        ],
        "tls": {"dir": str(tmp_path / "server-tls")},
        "store": {"backend": "memory"},
        "users": {"bob": {"password": "bob-secret-1"}, "carol": {"password": "carol-secret-2"}},
        "push": push,
        "admin": None,
        "secret_file": str(tmp_path / "secret"),
    }
    if calls is not None:
        config["calls"] = calls
    path = tmp_path / "sipwake.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [*SIPWAKE, "serve", "-c", str(path)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # ready once it accepts TLS connections
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", sip_port + 1)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("sipwake serve did not listen within 15 s")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _replay(
    tmp_path: Path, scenario: str, sip_port: int, mock_port: int, mock_dir: Path
) -> subprocess.CompletedProcess[bytes]:
    file = tmp_path / "scenario.yaml"
    file.write_text(scenario)
    return subprocess.run(
        [
            *SIPWAKE,
            "replay",
            "--target",
            f"127.0.0.1:{sip_port}",
            "--mock-push",
            f"127.0.0.1:{mock_port}",
            "--mock-push-dir",
            str(mock_dir),
            str(file),
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        timeout=40,
        check=False,
    )


def test_replay_against_an_authenticating_sipwake_wakes_the_iphone(tmp_path: Path) -> None:
    sip_port = _ports(2, udp=True)
    mock_port = _ports(2, udp=False)
    mock_dir = tmp_path / "mock-push"
    push = _prepare_mock_dir(mock_dir, mock_port)
    apns_cert = (mock_dir / "mock-apns.pem").read_bytes()
    with _serve(tmp_path, sip_port, push):
        result = _replay(tmp_path, SCENARIO, sip_port, mock_port, mock_dir)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert out.startswith(f"mock APNs at https://127.0.0.1:{mock_port}, mock FCM at ")
    assert f"PASS {tmp_path / 'scenario.yaml'}" in out
    assert f"against 127.0.0.1:{sip_port}" in out
    # The challenges and the answers with credentials, as the agents saw them.
    assert "401 (REGISTER)" in out
    assert "407 Proxy Authentication Required" in out
    assert "call push (apns) for bob.iphone" in out
    # The mocks kept the certificate the server trusts, and wrote the settings it uses.
    assert (mock_dir / "mock-apns.pem").read_bytes() == apns_cert
    written = yaml.safe_load((mock_dir / "push.yaml").read_text())["push"]
    assert written["apns"]["base_url"] == f"https://127.0.0.1:{mock_port}"
    assert written["fcm"]["base_url"] == f"https://127.0.0.1:{mock_port + 1}"
    assert written["apns"]["key_file"] == push["apns"]["key_file"]  # type: ignore[index]


def test_sealed_call_details_are_judged_at_the_target(tmp_path: Path) -> None:
    # The target seals the call details (calls.encrypt_push): the replay sees the push
    # body the mock APNs received, the phone opens enc with the key of its REGISTER's
    # 200, and push.encrypted is judged on it (it used to be "payload not known").
    sip_port = _ports(2, udp=True)
    mock_port = _ports(2, udp=False)
    mock_dir = tmp_path / "mock-push"
    push = _prepare_mock_dir(mock_dir, mock_port)
    sealed = SCENARIO.replace(
        "push: {kind: call, to: bob.iphone, within: 0.5}",
        "push: {kind: call, to: bob.iphone, within: 0.5, encrypted: true}",
    )
    clear = SCENARIO.replace(
        "push: {kind: call, to: bob.iphone, within: 0.5}",
        "push: {kind: call, to: bob.iphone, within: 0.5, encrypted: false}",
    )  # the same seed: the second run registers the same phone in a new REGISTER dialog
    with _serve(tmp_path, sip_port, push, calls={"encrypt_push": True}):
        result = _replay(tmp_path, sealed, sip_port, mock_port, mock_dir)
        wrong = _replay(tmp_path, clear, sip_port, mock_port, mock_dir)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "enc opened by bob.iphone (call from Carol), nothing in clear" in out
    assert "payload is not known" not in out
    missed = wrong.stdout.decode()
    assert wrong.returncode == 1, missed
    assert "MISSED  push: expected a call push to bob.iphone within 0.5 s" in missed, missed
    assert "without enc, got sent at" in missed, missed


def test_a_wrong_password_against_the_target_fails_naming_the_user(tmp_path: Path) -> None:
    sip_port = _ports(2, udp=True)
    mock_port = _ports(2, udp=False)
    mock_dir = tmp_path / "mock-push"
    push = _prepare_mock_dir(mock_dir, mock_port)
    scenario = SCENARIO.replace("password: bob-secret-1", "password: not-bobs")
    scenario = scenario.replace("wake_delay_s: 0.5", "wake_delay_s: never")
    with _serve(tmp_path, sip_port, push):
        result = _replay(tmp_path, scenario, sip_port, mock_port, mock_dir)
    out = result.stdout.decode()
    assert result.returncode == 1, out + result.stderr.decode()
    assert "MISSED  authentication: expected every simulated phone and caller authenticates" in out
    assert "bob (bob.iphone): the server refused the credentials of bob (403" in out


def test_a_taken_mock_push_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _replay(tmp_path, SCENARIO, _ports(2, udp=True), port, tmp_path / "mock")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert f"error: cannot start the mock push services on 127.0.0.1 ports {port}-{port + 1}" in err
    assert "Traceback" not in err


def test_mock_push_needs_a_target(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SCENARIO)
    result = subprocess.run(
        [*SIPWAKE, "replay", "--mock-push", "127.0.0.1:18443", str(tmp_path / "s.yaml")],
        env=ENV,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--mock-push only applies with --target" in result.stderr.decode()
