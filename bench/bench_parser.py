"""Parse and serialise throughput for a typical INVITE and REGISTER, on one core.

    python bench/bench_parser.py            # prints a table; target >= 50,000 parses/s

Each figure is the best of several rounds of N messages (the best round is the
least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import time

from sipwake.sip.parser import parse_message

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0 8\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)
INVITE = (
    b"INVITE sip:bob@lab.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@lab.test>\r\n"
    b"From: Alice <sip:alice@lab.test>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.101\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n"
    b"Supported: replaces, outbound\r\n"
    b"User-Agent: sipwake-bench\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
REGISTER = (
    b"REGISTER sip:lab.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.7:53412;branch=z9hG4bKreg77;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@lab.test>;tag=a73kszlfl\r\n"
    b"To: <sip:alice@lab.test>\r\n"
    b"Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.7\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.7:53412;transport=tcp;pn-provider=apns;"
    b"pn-param=ABCD1234.com.example.app.voip;pn-prid=00fc13adff785122b4ad28809a3420982341241421>"
    b';+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1\r\n'
    b"Expires: 3600\r\n"
    b"Supported: path, outbound\r\n"
    b"User-Agent: sipwake-bench\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _rate(fn: object, n: int, rounds: int) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=20000, help="messages per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for name, data in (("INVITE", INVITE), ("REGISTER", REGISTER)):
        parse = _rate(lambda d=data: parse_message(d), args.n, args.rounds)
        both = _rate(lambda d=data: parse_message(d).to_bytes(), args.n, args.rounds)
        rows.append((name, len(data), parse, both))
    print(f"{'message':<10} {'bytes':>6} {'parse/s':>10} {'parse+serialise/s':>18} {'target':>8}")
    for name, size, parse, both in rows:
        verdict = "ok" if parse >= 50000 else "below"
        print(f"{name:<10} {size:>6} {parse:>10,.0f} {both:>18,.0f} {verdict:>8}")


if __name__ == "__main__":
    main()
