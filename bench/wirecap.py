"""Kernel timestamps of the SIP messages bench_wake cares about, taken on the loopback
interface, so that a latency is the server's alone (not the measuring client's too).

    python bench/wirecap.py --tcp PORT --udp PORT     # prints records until SIGTERM

It reads every IPv4 packet on ``lo`` from an AF_PACKET socket (needs CAP_NET_RAW, i.e.
root) with ``SO_TIMESTAMPNS`` (on loopback the kernel stamps a packet as the sender's
system call hands it over), and prints one line per message of interest:

    R <ns> <phone port>   a REGISTER from a phone to the server's TCP port
    I <ns> <phone port>   an INVITE from the server to that phone's TCP connection
    V <ns> <Call-ID>      an INVITE from the caller to the server's UDP port
    T <ns> <Call-ID>      a 180 Ringing from the server's UDP port to the caller

It prints ``ready`` once capturing; on SIGTERM or SIGINT it prints ``C <seconds> cpu``
(its own CPU time, which bench_wake takes off the server's) and exits. Where the socket
cannot be opened it prints ``unavailable: <reason>`` and exits 0.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CALL_ID_RE = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
_TIMESPEC = struct.Struct("@ll")


def _invite_in(payload: bytes) -> bool:
    """An INVITE starts the segment or follows a body-less message in it."""
    return payload.startswith(b"INVITE ") or b"\r\n\r\nINVITE " in payload


def classify(packet: bytes, tcp_port: int, udp_port: int) -> tuple[str, str] | None:
    """``(kind, key)`` for an IPv4 packet that carries a message of interest."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    if len(packet) < ihl + 8:
        return None
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    if proto == socket.IPPROTO_TCP:
        offset = ihl + (packet[ihl + 12] >> 4) * 4
        payload = packet[offset:]
        if dport == tcp_port and payload.startswith(b"REGISTER "):
            return "R", str(sport)
        if sport == tcp_port and _invite_in(payload):
            return "I", str(dport)
    elif proto == socket.IPPROTO_UDP:
        payload = packet[ihl + 8 :]
        if dport == udp_port and payload.startswith(b"INVITE "):
            kind = "V"
        elif sport == udp_port and payload.startswith(b"SIP/2.0 180"):
            kind = "T"
        else:
            return None
        m = _CALL_ID_RE.search(payload)
        if m is not None:
            return kind, m.group(1).strip().decode("ascii", "replace")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tcp", type=int, required=True, help="the server's TCP port")
    parser.add_argument("--udp", type=int, required=True, help="the server's UDP port")
    args = parser.parse_args()
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        sock.bind(("lo", 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    except (OSError, AttributeError) as exc:
        print(f"unavailable: {exc}", flush=True)
        return 0
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sock.settimeout(0.2)
    out = sys.stdout
    print("ready", flush=True)
    while not stop:
        try:
            packet, ancillary, _flags, address = sock.recvmsg(65535, 64)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        if address[2] == PACKET_OUTGOING:
            continue  # only seen by ETH_P_ALL taps; the receiving copy is stamped as sent
        found = classify(packet, args.tcp, args.udp)
        if found is None:
            continue
        stamp = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(data)
                stamp = sec * 1_000_000_000 + nsec
        if stamp is not None:
            out.write(f"{found[0]} {stamp} {found[1]}\n")
    out.write(f"C {time.process_time():.3f} cpu\n")  # this capture's own CPU seconds
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
