"""The command line as a user runs it: parse, check-config, serve (with restart and kill -9)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipwake.sip.message import Response
from sipwake.sip.parser import parse_message

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
SIPWAKE = [sys.executable, "-m", "sipwake"]

pytestmark = pytest.mark.timeout(60)

REGISTER = (
    "REGISTER sip:lab.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
    "From: <sip:alice@lab.test>;tag=a1\r\n"
    "To: <sip:alice@lab.test>\r\n"
    "Call-ID: cli-{call}\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "{contact}"
    "Expires: 600\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)
TOKEN = "feedface" * 8


def run(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SIPWAKE, *args], input=stdin, capture_output=True, timeout=30, cwd=cwd, check=False
    )


# -- sipwake parse --------------------------------------------------------------------


def test_parse_explains_a_valid_message() -> None:
    data = REGISTER.format(
        port=5070,
        branch="p1",
        call="p",
        cseq=1,
        contact="Contact: <sip:alice@127.0.0.1:5070;pn-provider=apns;pn-param=T.org.ex.voip;"
        f"pn-prid={TOKEN}>\r\n",
    ).encode()
    result = run("parse", "-", stdin=data)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "request: method=REGISTER" in out
    assert "via[0] transport=UDP host=127.0.0.1 port=5070" in out
    assert "push target (RFC 8599): provider=apns param=T.org.ex.voip" in out
    assert TOKEN not in out  # the push token is masked everywhere


def test_parse_refuses_with_reason_and_status() -> None:
    result = run(
        "parse", "-", stdin=b"INVITE sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"
    )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "version SIP/7.0 not supported" in err
    assert "505" in err


def test_parse_reads_a_torture_file() -> None:
    path = CORPORA / "rfc4475" / "esc01.sip"
    if not path.exists():
        pytest.skip(f"corpora not found at {CORPORA}")
    result = run("parse", str(path))
    assert result.returncode == 0
    assert "i (call-id): esc01." in result.stdout.decode()


# -- sipwake check-config ----------------------------------------------------------------


def test_check_config_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("domain: lab.test\nlisten:\n  - udp:127.0.0.1:5070\n  - tcpx:127.0.0.1:5070\n")
    result = run("check-config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4: listen.1:" in result.stderr.decode()
    good = tmp_path / "good.yaml"
    good.write_text("domain: example.test\nusers:\n  dave: {password: pw}\n")
    result = run("check-config", str(good))
    assert result.returncode == 0
    assert "ok (domain example.test" in result.stdout.decode()


def test_serve_with_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("registrar:\n  max_expire: 10\n")
    result = run("serve", "-c", str(bad))
    assert result.returncode == 2
    assert (
        result.stderr.decode().strip() == f"error: {bad}:2: registrar.max_expire: unknown setting"
    )


# -- sipwake serve ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``sipwake serve`` as a subprocess in its own working directory."""

    def __init__(self, cwd: Path, port: int, *extra: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [*SIPWAKE, "serve", "--open", "--listen", f"udp:127.0.0.1:{port}", *extra],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read().decode() if self.proc.stderr else "")
            if self.ask(self.options()) is not None:
                return
        raise AssertionError("sipwake serve did not answer within 15 s")

    def options(self) -> bytes:
        local = self.sock.getsockname()[1]
        return (
            f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKo{time.monotonic_ns()}\r\n"
            "From: <sip:probe@lab.test>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def ask(self, data: bytes) -> Response | None:
        """Send ``data`` and return its response; a late answer to an earlier probe (same
        socket, another branch) is skipped rather than taken for this one's."""
        request = parse_message(data)
        self.sock.sendto(data, ("127.0.0.1", self.port))
        deadline = time.monotonic() + 1.0  # a busy machine (CI) may take a while
        while time.monotonic() < deadline:
            try:
                reply = parse_message(self.sock.recv(65535))
            except OSError:
                return None
            assert isinstance(reply, Response)
            if reply.top_via.branch == request.top_via.branch:
                return reply
        return None

    def register(self, n: int, *, contact: bool = True) -> Response:
        local = self.sock.getsockname()[1]
        line = (
            f"Contact: <sip:alice@127.0.0.1:{local};pn-provider=apns;"
            f"pn-param=ABCDE12345.org.example.voip;pn-prid={TOKEN}>\r\n"
            if contact
            else ""
        )
        data = REGISTER.format(
            port=local, branch=f"r{n}{time.monotonic_ns()}", call=n, cseq=n, contact=line
        )
        for _ in range(5):
            reply = self.ask(data.encode())
            if reply is not None:
                return reply
        raise AssertionError("no answer to REGISTER")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.sock.close()
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out.decode(), err.decode()


def test_serve_keeps_bindings_across_restart_and_kill_9(tmp_path: Path) -> None:
    port = _free_port()
    server = Serve(tmp_path, port)
    try:
        ok = server.register(1)
        assert ok.status == 200
    finally:
        code, out, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "lab PBX for domain lab.test" in out
    assert "WARNING: --open" in out
    assert (tmp_path / "sipwake.db").exists()
    # Graceful restart: the binding is back, with its remaining lifetime.
    server = Serve(tmp_path, port)
    try:
        query = server.register(2, contact=False)
        assert query.status == 200
        contacts = query.contacts
        assert contacts is not None
        assert len(contacts) == 1
        assert 580 <= int(contacts[0].param("expires") or 0) <= 600
        assert server.register(3).status == 200
    finally:
        server.proc.send_signal(signal.SIGKILL)  # a crash: no chance to flush anything
        server.proc.wait(timeout=10)
        server.sock.close()
    server = Serve(tmp_path, port)
    try:
        query = server.register(4, contact=False)
        assert query.contacts is not None
        assert len(query.contacts) == 1, "a binding answered 200 survived kill -9"
    finally:
        code, _, err = server.stop()
    assert code == 0
    assert TOKEN not in err


def test_serve_trace_masks_push_tokens_and_json_logs(tmp_path: Path) -> None:
    port = _free_port()
    server = Serve(tmp_path, port, "--trace", "--memory", "--log-format", "json")
    try:
        assert server.register(1).status == 200
    finally:
        code, _, err = server.stop()
    assert code == 0
    assert TOKEN not in err
    assert "pn-prid=feed…face" in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(entry["logger"] == "sipwake.trace" for entry in lines)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)
