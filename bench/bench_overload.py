"""Overload: what sipwake serves when offered 1x, 2x and 4x the REGISTER rate it sustains.

    python bench/bench_overload.py --sustainable 9000        # known rate, interpreted
    python bench/bench_overload.py                           # measure it first (a ladder)
    python bench/bench_overload.py --server compiled --shed  # compiled core, limits.shed_load

For each multiple of the sustainable rate, a fresh ``sipwake serve --open --memory`` gets
SIPp REGISTERs (with RFC 8599 push parameters, bench/sipp/register_many.xml) at that
rate for ``--seconds``, while a prober sends an OPTIONS keepalive every 100 ms from its
own socket. Printed per step: the rate offered, the REGISTERs answered 200 per second
(goodput), the share that failed (no 200 within SIPp's 4 s receive timeout, or an
unexpected answer such as 503), the keepalives answered and their p99 round trip
during the flood, and how long after the flood the keepalives are answered promptly
again (recovery). Issue 18's target: at 2x, goodput >= 0.8 x the sustainable rate, keepalives
answered, recovery within 2 s. Everything runs on 127.0.0.1, bounded in count and time;
every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_proxy import bench_register, best, free_port, sipp, started, users_file
from compiled import build_compiled, missing_tools

HERE = Path(__file__).resolve().parent


@dataclass
class Probe:
    """OPTIONS every ``interval`` seconds from one socket; round trips by send time."""

    port: int
    interval: float = 0.1
    sent: dict[int, float] = field(default_factory=dict)
    rtt: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.01)
            local = sock.getsockname()[1]
            n = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_at:
                    n += 1
                    self.sent[n] = now
                    sock.sendto(_options(local, n, self.port), ("127.0.0.1", self.port))
                    next_at += self.interval
                try:
                    data = sock.recv(65535)
                except OSError:
                    continue
                marker = data.find(b"Call-ID: probe-")
                if marker >= 0:
                    end = data.find(b"\r\n", marker)
                    k = int(data[marker + len(b"Call-ID: probe-") : end])
                    self.rtt.setdefault(k, time.monotonic() - self.sent[k])

    def stop(self) -> None:
        self._stop.set()

    def window(self, start: float, end: float) -> tuple[int, int, float]:
        """(sent, answered, p99 round trip in ms) of the probes sent in [start, end)."""
        keys = [k for k, at in self.sent.items() if start <= at < end]
        rtts = sorted(self.rtt[k] for k in keys if k in self.rtt)
        p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1000 if rtts else float("nan")
        return len(keys), len(rtts), p99

    def recovered_after(self, end: float, prompt: float = 0.1, run: int = 5) -> float | None:
        """Seconds after ``end`` from which ``run`` probes in a row were answered within
        ``prompt`` seconds; None if that never happened."""
        keys = sorted(k for k, at in self.sent.items() if at >= end)
        streak = 0
        for k in keys:
            if self.rtt.get(k, prompt + 1) <= prompt:
                streak += 1
                if streak == run:
                    return max(0.0, self.sent[keys[keys.index(k) - run + 1]] - end)
            else:
                streak = 0
        return None


def _options(local: int, n: int, port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKprobe{n}\r\n"
        f"From: <sip:probe@lab.test>;tag=p{n}\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Row:
    multiple: float
    offered: int
    ok: int
    failed: int
    seconds: float
    probes: tuple[int, int, float]
    recovery: float | None


def server_cmd(port: int, workdir: Path, shed: bool) -> list[str]:
    config = workdir / "overload.yaml"
    config.write_text(
        f"admin: null\nlimits: {{shed_load: {'true' if shed else 'false'}}}\n"
        f"tls: {{dir: {workdir / 'tls'}}}\nsecret_file: {workdir / 'secret'}\n"
    )
    return [
        sys.executable,
        "-m",
        "sipwake",
        "serve",
        "-c",
        str(config),
        "--open",
        "--memory",
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]


def step(
    multiple: float,
    rate: int,
    seconds: float,
    workdir: Path,
    env: dict[str, str] | None,
    shed: bool,
) -> Row:
    port = free_port()
    offered = int(rate * multiple)
    total = int(offered * seconds)
    users = users_file(workdir / "users.csv", total)
    with started(server_cmd(port, workdir, shed), port, workdir, env):
        probe = Probe(port)
        prober = threading.Thread(target=probe.run, daemon=True)
        prober.start()
        time.sleep(0.5)
        began = time.monotonic()
        ok, failed, _ = sipp(
            [
                f"127.0.0.1:{port}",
                "-sf",
                str(HERE / "sipp" / "register_many.xml"),
                "-inf",
                str(users),
                "-r",
                str(offered),
                "-m",
                str(total),
                "-l",
                str(offered * 5),
                "-recv_timeout",
                "4000",
            ],
            limit=seconds * 3 + 15,
            cwd=workdir,
        )
        ended = time.monotonic()
        flood_end = began + seconds  # SIPp stops offering then; answers may trail
        time.sleep(4.0)
        probe.stop()
        prober.join(2)
    return Row(
        multiple=multiple,
        offered=offered,
        ok=ok,
        failed=failed,
        seconds=max(seconds, ended - began),
        probes=probe.window(began, flood_end),
        recovery=probe.recovered_after(flood_end),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sustainable", type=int, help="REGISTER/s the server sustains")
    parser.add_argument("--server", choices=["sipwake", "compiled"], default="sipwake")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--multiples", default="1,2,4")
    parser.add_argument("--shed", action="store_true", help="limits.shed_load: true")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60:
        parser.error("--seconds must be within 1..60")
    with tempfile.TemporaryDirectory(prefix="sipwake-overload-") as tmp:
        workdir = Path(tmp)
        env = None
        if args.server == "compiled":
            missing = missing_tools()
            if missing is not None:
                parser.error(f"cannot compile: {missing}")
            dest = build_compiled(workdir / "compiled", timeout=900)
            import os

            env = {**os.environ, "PYTHONPATH": str(dest), "PYTHONSAFEPATH": "1"}
        rate = args.sustainable
        if rate is None:
            import bench_proxy

            bench_proxy.COMPILED_DIR = workdir / "compiled" if env else None
            name = "compiled" if env else "sipwake"
            rate = best(bench_register(name, workdir, 6.0, 1000))
            print(f"sustainable REGISTER rate measured: {rate}/s", file=sys.stderr)
        rows = [
            step(float(m), rate, args.seconds, workdir, env, args.shed)
            for m in args.multiples.split(",")
        ]
    shed = " (shed_load)" if args.shed else ""
    print(f"\nsipwake {args.server}{shed} under REGISTER overload, sustainable rate {rate}/s")
    print(
        f"{'offered':>8} {'x':>4} {'goodput/s':>10} {'/ sust.':>8} {'failed':>7} "
        f"{'keepalive answered':>19} {'p99 ms':>8} {'recovery s':>11}"
    )
    for r in rows:
        sent, answered, p99 = r.probes
        recovery = "never" if r.recovery is None else f"{r.recovery:.1f}"
        total = r.ok + r.failed or 1
        print(
            f"{r.offered:>8} {r.multiple:>4g} {r.ok / r.seconds:>10,.0f} "
            f"{r.ok / r.seconds / rate:>8.2f} {100 * r.failed / total:>6.1f}% "
            f"{answered:>9}/{sent:<9} {p99:>8.1f} {recovery:>11}"
        )
    print("target at 2x: goodput >= 0.80 x sustainable, keepalives answered, recovery <= 2 s")


if __name__ == "__main__":
    main()
