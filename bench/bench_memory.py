"""Resident memory of sipwake holding 100,000 bindings with RFC 8599 push targets.

    python bench/bench_memory.py            # target: under 300 MB RSS in all

The bindings are made the way a server makes them: each REGISTER's bytes go
through the node (parser, transaction layer, registrar) on a hand-moved clock,
at ``--rate`` registrations per simulated second with the node's timers run as
the driver would (so finished transactions go after Timer J, 32 s); the 200
responses are dropped. RSS is read from /proc/self/status.
"""

from __future__ import annotations

import argparse
import gc
import time

from sipwake.ids import SystemIds
from sipwake.node import Node, NodeSettings, PersistChanges
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.registrar import Registrar
from sipwake.sip.peer import Peer
from sipwake.transaction.layer import TransactionLayer


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def register(i: int) -> bytes:
    port = 10000 + i % 50000
    return (
        f"REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{port};"
        f"branch=z9hG4bK{i:x}m;rport\r\n"
        f"From: <sip:user{i}@lab.test>;tag=t{i}\r\n"
        f"To: <sip:user{i}@lab.test>\r\n"
        f"Call-ID: mem-{i}\r\n"
        f"CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:user{i}@10.0.0.1:{port};transport=udp;pn-provider=apns;"
        f"pn-param=ABCDE12345.org.example.phone.voip;pn-prid={i:064x}>"
        f';+sip.instance="<urn:uuid:00000000-0000-4000-8000-{i:012x}>"\r\n'
        f"Expires: 3600\r\n"
        f"Max-Forwards: 70\r\n"
        f"User-Agent: LinphoneiOS/5.1 (iPhone) LinphoneSDK/5.1\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=200.0, help="REGISTERs per simulated second")
    args = ap.parse_args()
    gc.collect()
    base = rss_mb()
    ids = SystemIds()
    listener = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
    registrar = Registrar(
        ids=ids,
        config=RegistrarConfig(domains={"lab.test"}, canonical_domain="lab.test"),
    )
    node = Node(
        settings=NodeSettings(domain="lab.test", realm="lab.test", open=True),
        ids=ids,
        locality=Locality(domain="lab.test", listeners=(listener,)),
        registrar=registrar,
        layer=TransactionLayer(ids),
        auth=None,
    )
    start = time.perf_counter()
    now = 0.0
    step = 1.0 / args.rate
    for i in range(args.n):
        now += step
        if i % 100 == 0:
            node.handle_timeout(now)
        source = Peer(
            transport="udp", host=f"10.0.{i >> 8 & 255}.{i & 255}", port=10000 + i % 50000
        )
        for output in node.receive(register(i), source, listener, now):
            if isinstance(output, PersistChanges) and output.token is not None:
                node.changes_stored(output.token, True, now)  # as the driver does
    # let the server transactions finish (Timer J) so only bindings remain
    node.handle_timeout(now + 64)
    elapsed = time.perf_counter() - start
    gc.collect()
    total = rss_mb()
    count = len(registrar.all_bindings())
    print(f"{'bindings':>9} {'RSS MB':>8} {'of which bindings':>18}", end="")
    print(f" {'bytes/binding':>14} {'target':>8}")
    per = (total - base) * 1024 * 1024 / max(count, 1)
    verdict = "ok" if total < 300 else "over"
    print(f"{count:>9,} {total:>8.1f} {total - base:>18.1f} {per:>14,.0f} {verdict:>8}")
    print(f"({count / elapsed:,.0f} REGISTER/s through the node on one core, no sockets)")


if __name__ == "__main__":
    main()
