"""REGISTER and call throughput through sipwake, next to Kamailio, driven by SIPp.

    python bench/bench_proxy.py                 # every server, prints a table
    python bench/bench_proxy.py --only sipwake  # one of them (repeatable)
    python bench/bench_proxy.py --sipwake-only --seconds 3 --register-from 3000
                                                # the sipwake rows only, a short ladder

The servers: sipwake as installed for development (interpreted), sipwake with its
core compiled by mypyc (built into a temporary directory by bench/compiled.py, as
``SIPWAKE_COMPILE=1 pip install .`` builds it), each run twice: with ``--memory``
(``sipwake``, ``compiled``) and with the default store, as ``sipwake serve --open``
runs it (``sipwake-db``, ``compiled-db``: bindings, call records and push log in
SQLite, ``synchronous=FULL``); and Kamailio. A ratio line compares each default-store
row with its ``--memory`` row.

For each server and each load (REGISTER with RFC 8599 push parameters, and calls
INVITE/100/180/200/ACK/BYE/200 through the proxy to a SIPp UAS), the rate is
raised step by step; a step passes when at most 1% of its requests fail and all
complete within the step's time limit. The highest passing rate is reported.
Everything runs on 127.0.0.1, each SIPp run is bounded in count and time
(coreutils ``timeout``), and every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compiled import build_compiled, missing_tools

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE.parent / "tests" / "interop" / "scenarios"

REGISTER_RATES = [
    1000,
    2000,
    3000,
    4000,
    5000,
    6000,
    7000,
    8000,
    9000,
    10000,
    12500,
    15000,
    17500,
    20000,
    25000,
    30000,
    35000,
    40000,
    45000,
    50000,
]
CALL_RATES = [
    100,
    200,
    300,
    400,
    500,
    600,
    700,
    800,
    1000,
    1250,
    1500,
    1750,
    2000,
    2250,
    2500,
    2750,
    3000,
    3500,
    4000,
    5000,
    6000,
    7000,
    8000,
    10000,
]


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
        try:
            with socket.socket() as t:
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


@dataclass
class Step:
    rate: int
    total: int
    ok: int
    failed: int
    seconds: float

    @property
    def passed(self) -> bool:
        return self.ok + self.failed >= self.total and self.failed <= 0.01 * self.total


def _stat(output: str, name: str) -> int:
    m = re.search(rf"{name}\s+\|\s+\d+\s+\|\s+(\d+)", output)
    return int(m.group(1)) if m else 0


def sipp(args: list[str], limit: float, cwd: Path) -> tuple[int, int, str]:
    """Run SIPp bounded by ``limit`` seconds; returns (successful, failed, output)."""
    cmd = [
        "timeout",
        "-k",
        "2",
        str(limit),
        "sipp",
        "-i",
        "127.0.0.1",
        "-nostdin",
        "-cp",
        str(free_port()),
        "-mp",
        str(free_port()),
        "-buff_size",
        "4194304",
        "-max_socket",
        "2000",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    return _stat(out, "Successful call"), _stat(out, "Failed call"), out


@contextlib.contextmanager
def started(
    cmd: list[str], port: int, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / f"{Path(cmd[0]).name}-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready when it answers an OPTIONS
            if _answers(port):
                break
            if proc.poll() is not None:
                log.flush()
                tail = log.name and Path(log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{cmd[0]} exited: {tail}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shed = Path(log.name).read_text(errors="replace").count("overloaded (")
        if shed:
            print(f"  ({shed} overload episodes: new requests answered 503)", file=sys.stderr)


def _answers(port: int) -> bool:
    msg = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKping\r\n"
        "From: <sip:bench@lab.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ping\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.bind(("127.0.0.1", 0))
        s.sendto(msg, ("127.0.0.1", port))
        try:
            s.recv(4096)
        except OSError:
            return False
    return True


def unregister_all(port: int, user: str) -> None:
    """Remove every binding of ``user`` (``Contact: *``, RFC 3261 §10.2.2): each call step
    registers a fresh SIPp UAS, and the last step's binding must not stay as a second,
    dead branch of every INVITE."""
    msg = (
        "REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKunreg{time.monotonic_ns()};rport\r\n"
        f"From: <sip:{user}@lab.test>;tag=1\r\nTo: <sip:{user}@lab.test>\r\n"
        f"Call-ID: unreg{time.monotonic_ns()}\r\nCSeq: 1 REGISTER\r\nContact: *\r\n"
        "Expires: 0\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.bind(("127.0.0.1", 0))
        for _ in range(10):  # a server still busy with the last step answers late
            s.sendto(msg, ("127.0.0.1", port))
            try:
                reply = s.recv(4096)
                break
            except TimeoutError:
                continue
        else:
            raise RuntimeError(f"unregistering {user}: no answer in 10 s")
    status = reply.partition(b"\r\n")[0]
    if not status.startswith(b"SIP/2.0 200"):
        raise RuntimeError(f"unregistering {user}: {status!r}")


#: Where ``--compiled`` built sipwake with its core compiled (bench/compiled.py).
COMPILED_DIR: Path | None = None


def server_env(name: str) -> dict[str, str] | None:
    """The compiled variant is the same command with the compiled build first on the path."""
    if not name.startswith("compiled"):
        return None
    assert COMPILED_DIR is not None
    return {**os.environ, "PYTHONPATH": str(COMPILED_DIR), "PYTHONSAFEPATH": "1"}


def server_cmd(name: str, port: int, workdir: Path) -> list[str]:
    if name != "kamailio":
        # The "-db" variants keep the default store: ./sipwake.db in the working directory.
        store = [] if name.endswith("-db") else ["--memory"]
        return [
            sys.executable,
            "-m",
            "sipwake",
            "serve",
            "--open",
            *store,
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    return [
        "kamailio",
        "-f",
        str(HERE / "kamailio.cfg"),
        "-DD",
        "-E",
        "-n",
        "2",
        "-l",
        f"udp:127.0.0.1:{port}",
        "-m",
        "256",
        "-M",
        "32",
        "-w",
        str(workdir),
        "-Y",
        str(workdir),
    ]


def users_file(path: Path, count: int) -> Path:
    lines = ["SEQUENTIAL"] + [f"u{i};{i:064x}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_register(name: str, workdir: Path, seconds: float, start: int) -> list[Step]:
    steps: list[Step] = []
    port = free_port()
    users = users_file(workdir / "users.csv", int(max(REGISTER_RATES) * seconds))
    with started(server_cmd(name, port, workdir), port, workdir, server_env(name)):
        for rate in (r for r in REGISTER_RATES if r >= start):
            total = int(rate * seconds)
            t0 = time.monotonic()
            ok, failed, _ = sipp(
                [
                    f"127.0.0.1:{port}",
                    "-sf",
                    str(HERE / "sipp" / "register_many.xml"),
                    "-inf",
                    str(users),
                    "-r",
                    str(rate),
                    "-m",
                    str(total),
                    "-l",
                    str(rate * 2),
                    "-recv_timeout",
                    "4000",
                ],
                limit=seconds * 3 + 10,
                cwd=workdir,
            )
            step = Step(rate, total, ok, failed, time.monotonic() - t0)
            steps.append(step)
            print(f"  {name} REGISTER {rate}/s: {ok} ok, {failed} failed", file=sys.stderr)
            if not step.passed:
                break
    return steps


def bench_calls(name: str, workdir: Path, seconds: float, start: int) -> list[Step]:
    steps: list[Step] = []
    port = free_port()
    with started(server_cmd(name, port, workdir), port, workdir, server_env(name)):
        for rate in (r for r in CALL_RATES if r >= start):
            unregister_all(port, "bob")
            callee = free_port()
            ok, _, out = sipp(
                [
                    f"127.0.0.1:{port}",
                    "-sf",
                    str(SCENARIOS / "register.xml"),
                    "-s",
                    "bob",
                    "-p",
                    str(callee),
                    "-m",
                    "1",
                ],
                limit=10,
                cwd=workdir,
            )
            if ok != 1:
                raise RuntimeError(f"{name}: callee did not register:\n{out[-2000:]}")
            total = int(rate * seconds)
            uas = subprocess.Popen(
                [
                    "timeout",
                    "-k",
                    "2",
                    str(seconds * 3 + 15),
                    "sipp",
                    "-sn",
                    "uas",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(callee),
                    "-nostdin",
                    "-cp",
                    str(free_port()),
                    "-mp",
                    str(free_port()),
                    "-buff_size",
                    "4194304",
                    "-m",
                    str(total),
                    "-default_behaviors",
                    "all,-abortunexp",
                ],
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(0.3)
                t0 = time.monotonic()
                ok, failed, _ = sipp(
                    [
                        f"127.0.0.1:{port}",
                        "-sf",
                        str(SCENARIOS / "uac.xml"),
                        "-s",
                        "bob",
                        "-r",
                        str(rate),
                        "-m",
                        str(total),
                        "-l",
                        str(rate * 3),
                        "-recv_timeout",
                        "8000",
                        "-default_behaviors",
                        "all,-abortunexp",
                    ],
                    limit=seconds * 3 + 12,
                    cwd=workdir,
                )
            finally:
                uas.terminate()  # coreutils timeout passes SIGTERM on to SIPp
                try:
                    uas.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    uas.kill()
                    uas.wait()
            step = Step(rate, total, ok, failed, time.monotonic() - t0)
            steps.append(step)
            print(f"  {name} calls {rate}/s: {ok} ok, {failed} failed", file=sys.stderr)
            if not step.passed:
                break
    return steps


def best(steps: list[Step]) -> int:
    return max((s.rate for s in steps if s.passed), default=0)


LABELS = {
    "sipwake": "sipwake --memory",
    "sipwake-db": "sipwake (SQLite)",
    "compiled": "compiled --memory",
    "compiled-db": "compiled (SQLite)",
    "kamailio": "kamailio",
}


def main() -> None:
    global COMPILED_DIR
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--only",
        choices=list(LABELS),
        action="append",
        help="measure only these (repeatable); default: all",
    )
    ap.add_argument(
        "--sipwake-only",
        action="store_true",
        help="the sipwake rows only (with --memory and with the default store): no Kamailio",
    )
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each rate step")
    ap.add_argument(
        "--register-from",
        type=int,
        default=0,
        metavar="RATE",
        help="start the REGISTER ladder at this rate (a shorter ladder while developing)",
    )
    ap.add_argument(
        "--register-rates",
        metavar="R1,R2,...",
        help="the REGISTER ladder instead of the built-in one (finer steps to compare two rows)",
    )
    ap.add_argument(
        "--call-rates",
        metavar="R1,R2,...",
        help="the call ladder instead of the built-in one",
    )
    ap.add_argument(
        "--calls-from",
        type=int,
        default=0,
        metavar="RATE",
        help="start the call ladder at this rate",
    )
    args = ap.parse_args()
    if args.register_rates:
        REGISTER_RATES[:] = _rates(ap, args.register_rates)
    if args.call_rates:
        CALL_RATES[:] = _rates(ap, args.call_rates)
    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (apt-get install sip-tester)")
    servers = list(LABELS) if args.only is None else [s for s in LABELS if s in args.only]
    if args.sipwake_only:
        servers = [s for s in servers if s != "kamailio"]
    if "kamailio" in servers and shutil.which("kamailio") is None:
        print("kamailio is not installed (apt-get install kamailio): not measured")
        servers.remove("kamailio")
    compiled = [s for s in servers if s.startswith("compiled")]
    if compiled and (reason := missing_tools()) is not None:
        print(f"sipwake compiled not measured: {reason}")
        servers = [s for s in servers if s not in compiled]
    results: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmp:
        if any(s.startswith("compiled") for s in servers):
            print("compiling sipwake's core with mypyc (about a minute)", file=sys.stderr)
            COMPILED_DIR = build_compiled(Path(tmp) / "build")
        for name in servers:
            workdir = Path(tmp) / name
            workdir.mkdir()
            registers = best(bench_register(name, workdir, args.seconds, args.register_from))
            calls = best(bench_calls(name, workdir, args.seconds, args.calls_from))
            results[name] = (registers, calls)
    header = f"\n{'server':<26} {'REGISTER/s':>11} {'calls/s':>9}"
    print(f"{header}   (<= 1% failures, {args.seconds:g} s steps)")
    for name, (registers, calls) in results.items():
        print(f"{LABELS[name]:<26} {registers:>11,} {calls:>9,}")
    for memory, label in (("sipwake", "ratio"), ("compiled", "ratio compiled")):
        if f"{memory}-db" in results and memory in results:
            print(
                _ratio_line(
                    f"{label} store / memory", results[f"{memory}-db"], results[memory], 0.80
                )
            )
    if "kamailio" in results:
        for name, label in (("sipwake", "ratio"), ("compiled", "ratio compiled")):
            if name in results:
                print(_ratio_line(f"{label} / kamailio", results[name], results["kamailio"], 0.50))
    print(f"machine: {os.cpu_count()} cores; SIPp and the server share them")


def _rates(ap: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        rates = sorted({int(r) for r in text.split(",") if r.strip()})
    except ValueError:
        ap.error(f"rates are whole numbers separated by commas, got {text!r}")
    if not rates or rates[0] <= 0:
        ap.error(f"rates must be > 0, got {text!r}")
    return rates


def _ratio_line(label: str, mine: tuple[int, int], other: tuple[int, int], target: float) -> str:
    """REGISTER/s and calls/s of ``mine`` over ``other``'s, as a table row."""
    ratios = [m / o if o else float("nan") for m, o in zip(mine, other, strict=True)]
    return f"{label:<26} {ratios[0]:>11.2f} {ratios[1]:>9.2f}   (target >= {target:.2f})"


if __name__ == "__main__":
    main()
