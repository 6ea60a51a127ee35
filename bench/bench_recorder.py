"""CPU time the call recorder takes per proxied call, on the message path.

    python bench/bench_recorder.py          # prints microseconds per call and message

One call as sipwake proxies it is fourteen messages (INVITE, 100, INVITE to the
phone, its 100, 180 both ways, 200 both ways, ACK both ways, BYE both ways and its
200 both ways), each handed to ``CallRecorder.message_bytes`` as the driver does,
with the wake engine's "received" and "answered" steps between. The queued entries
are dropped instead of written (store writes happen off the message path). The
best of ``--runs`` rounds of ``--calls`` calls is printed, in CPU time of the
thread (``time.thread_time``: what other processes do to a shared machine moves
wall-clock rounds by half, CPU time much less).

The second figure is what the writer thread then spends per call writing those
entries to SQLite (``SqliteStore.record_call_entries`` in batches of 500 entries, a
file in a temporary folder, ``synchronous=NORMAL``: no fsync at each commit): it
runs off the loop, but its Python part holds the same interpreter lock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sipwake.calls import CallRecorder
from sipwake.proxy.wake import CallEvent
from sipwake.store import MemoryStore, SqliteStore

FLOW = (
    ("in", "INVITE sip:bob@lab.test SIP/2.0", "1 INVITE"),
    ("out", "SIP/2.0 100 Trying", "1 INVITE"),
    ("out", "INVITE sip:bob@127.0.0.1:5062 SIP/2.0", "1 INVITE"),
    ("in", "SIP/2.0 100 Trying", "1 INVITE"),
    ("in", "SIP/2.0 180 Ringing", "1 INVITE"),
    ("out", "SIP/2.0 180 Ringing", "1 INVITE"),
    ("in", "SIP/2.0 200 OK", "1 INVITE"),
    ("out", "SIP/2.0 200 OK", "1 INVITE"),
    ("in", "ACK sip:bob@127.0.0.1:5062 SIP/2.0", "1 ACK"),
    ("out", "ACK sip:bob@127.0.0.1:5062 SIP/2.0", "1 ACK"),
    ("in", "BYE sip:bob@127.0.0.1:5062 SIP/2.0", "2 BYE"),
    ("out", "BYE sip:bob@127.0.0.1:5062 SIP/2.0", "2 BYE"),
    ("in", "SIP/2.0 200 OK", "2 BYE"),
    ("out", "SIP/2.0 200 OK", "2 BYE"),
)


def message(first_line: str, call_id: str, cseq: str) -> bytes:
    head = (
        f"{first_line}\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1044e882b0b5e937;rport\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:33917;branch=z9hG4bKc8af5bd99f267a0e;received=127.0.0.1\r\n"
        "Max-Forwards: 69\r\nFrom: <sip:alice@lab.test>;tag=ft\r\n"
        f"To: <sip:bob@lab.test>;tag=bt\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
        "Contact: <sip:alice@127.0.0.1:33917>\r\nUser-Agent: Zoiper 5\r\n"
        "Content-Type: application/sdp\r\nContent-Length: 120\r\n\r\n"
    )
    return head.encode() + b"v=0\r\n" * 24


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    calls = [
        [(direction, message(line, f"cid-{i}", cseq)) for direction, line, cseq in FLOW]
        for i in range(args.calls)
    ]
    best = float("inf")
    kept: list[object] = []
    for run in range(args.runs):
        recorder = CallRecorder(
            MemoryStore(), wall_offset=0.0, schedule=lambda d, cb: None, max_batch=10**9
        )
        queue: list[object] = recorder._queue  # type: ignore[assignment]
        started = time.thread_time()
        for i, call in enumerate(calls):
            ref = f"r{run}-{i}"
            for j, (direction, data) in enumerate(call):
                recorder.message_bytes(direction, "udp:127.0.0.1:5062", data, 1.0)  # type: ignore[arg-type]
                if j in (0, 6):
                    step = "received" if j == 0 else "answered"
                    recorder.call_event(
                        CallEvent(call_ref=ref, aor="sip:bob@lab.test", at=1.0, step=step)
                    )
            if run == 0:
                kept.extend(queue)
            queue.clear()
        best = min(best, (time.thread_time() - started) / args.calls)
    print(f"recorder: {best * 1e6:.0f} us per call, {best * 1e6 / len(FLOW):.1f} us per message")
    store_best = float("inf")
    with tempfile.TemporaryDirectory() as folder:
        for run in range(max(1, args.runs // 3)):
            with SqliteStore(Path(folder) / f"bench{run}.db", synchronous="NORMAL") as store:
                started = time.thread_time()
                for i in range(0, len(kept), 500):
                    store.record_call_entries(kept[i : i + 500])  # type: ignore[arg-type]
                store_best = min(store_best, (time.thread_time() - started) / args.calls)
    print(f"store writes: {store_best * 1e6:.0f} us per call")


if __name__ == "__main__":
    main()
