"""Cost of one REGISTER and one call inside the node, without sockets or an event loop.

    python bench/bench_node.py            # prints a table (microseconds per operation)

The node is built as ``sipwake serve --open --memory`` builds it; the bytes are what
SIPp sends in ``bench/bench_proxy.py`` (a REGISTER with RFC 8599 push parameters; a
call INVITE/100/180/200/ACK/BYE/200 through the proxy to a registered UDP callee).
This is the part of the server's time that sipwake's own code decides; the socket
and event-loop cost comes on top (``bench_proxy`` measures the whole).
Each figure is the best of several rounds (the least disturbed by other work).
"""

from __future__ import annotations

import argparse
import gc
import time

from sipwake.ids import SystemIds
from sipwake.node import Node, NodeSettings, PersistChanges, SendBytes
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.registrar import Registrar
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction.layer import TransactionLayer

LISTENER = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
PHONES = Peer(transport="udp", host="127.0.0.1", port=5070)
CALLER = Peer(transport="udp", host="127.0.0.1", port=5080)
CALLEE = Peer(transport="udp", host="127.0.0.1", port=5090)
SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def register(i: int) -> bytes:
    return (
        "REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-reg-{i};rport\r\n"
        f"From: <sip:u{i}@lab.test>;tag={i}SIPpTag001\r\n"
        f"To: <sip:u{i}@lab.test>\r\n"
        f"Call-ID: {i}-reg@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:u{i}@127.0.0.1:5070;pn-provider=apns;"
        f"pn-param=ABCDE12345.org.example.phone.voip;pn-prid={i:064x}>\r\n"
        "Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def build_node() -> Node:
    ids = SystemIds()
    registrar = Registrar(
        ids=ids,
        config=RegistrarConfig(
            domains={"lab.test", "127.0.0.1", "localhost"},
            canonical_domain="lab.test",
            push_providers=frozenset({"apns", "fcm", "webpush"}),
        ),
    )
    return Node(
        settings=NodeSettings(domain="lab.test", realm="lab.test", open=True),
        ids=ids,
        locality=Locality(domain="lab.test", listeners=(LISTENER,)),
        registrar=registrar,
        layer=TransactionLayer(ids),
        auth=None,
    )


def feed(node: Node, data: bytes, peer: Peer, now: float) -> list[SendBytes]:
    """Receive ``data`` and do what the driver does: confirm stores, collect sends."""
    sent: list[SendBytes] = []
    work = node.receive(data, peer, LISTENER, now)
    while work:
        output = work.pop(0)
        if isinstance(output, PersistChanges) and output.token is not None:
            work[0:0] = node.changes_stored(output.token, True, now)
        elif isinstance(output, SendBytes):
            sent.append(output)
    return sent


def _rounds(fn: object, n: int, rounds: int) -> float:
    assert callable(fn)
    best = float("inf")
    for r in range(rounds):
        start = time.perf_counter()
        fn(r, n)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def bench_register(n: int, rounds: int) -> float:
    node = build_node()
    batches = [[register(r * n + i) for i in range(n)] for r in range(rounds)]

    def run(r: int, count: int) -> None:
        now = 1000.0 + r
        for data in batches[r][:count]:
            feed(node, data, PHONES, now)

    return _rounds(run, n, rounds)


def _header(data: bytes, name: bytes) -> bytes:
    for line in data.split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line
    raise KeyError(name)


def _answer(request: bytes, status: str, *, sdp: bool = False, tag: str = "callee") -> bytes:
    """The callee's response to a forwarded ``request`` (Vias, From, To, Call-ID, CSeq)."""
    lines = request.split(b"\r\n")
    vias = [line for line in lines if line.lower().startswith(b"via:")]
    to = _header(request, b"to")
    if b";tag=" not in to:
        to += f";tag={tag}".encode()
    body = SDP if sdp else b""
    head = [
        f"SIP/2.0 {status}".encode(),
        *vias,
        _header(request, b"from"),
        to,
        _header(request, b"call-id"),
        _header(request, b"cseq"),
    ]
    if sdp:
        head += [b"Contact: <sip:bob@127.0.0.1:5090>", b"Content-Type: application/sdp"]
    head.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _invite(i: int) -> bytes:
    base = (
        f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{{b}}-{i};rport\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5080>;tag={i}SIPpTag00\r\n"
        "To: <sip:bob@lab.test>{totag}\r\n"
        f"Call-ID: {i}-call@127.0.0.1\r\n"
        "CSeq: {cseq}\r\nContact: <sip:sipp@127.0.0.1:5080>\r\nMax-Forwards: 70\r\n"
    )
    return (
        "INVITE sip:bob@lab.test SIP/2.0\r\n"
        + base.format(b="inv", totag="", cseq="1 INVITE")
        + f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def bench_calls(n: int, rounds: int) -> float:
    node = build_node()
    feed(
        node,
        b"REGISTER sip:lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bob;rport\r\n"
        b"From: <sip:bob@lab.test>;tag=b\r\nTo: <sip:bob@lab.test>\r\n"
        b"Call-ID: bob-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:5090>\r\n"
        b"Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        CALLEE,
        0.0,
    )

    def one_call(i: int, now: float) -> None:
        out = feed(node, _invite(i), CALLER, now)
        forwarded = next(s.data for s in out if s.peer == CALLEE)
        feed(node, _answer(forwarded, "100 Trying"), CALLEE, now)
        feed(node, _answer(forwarded, "180 Ringing"), CALLEE, now)
        out = feed(node, _answer(forwarded, "200 OK", sdp=True), CALLEE, now)
        ok = next(s.data for s in out if s.peer == CALLER)
        to = _header(ok, b"to").decode()
        routes = [
            line.split(b":", 1)[1].strip().decode()
            for line in ok.split(b"\r\n")
            if line.lower().startswith(b"record-route:")
        ]
        route = "".join(f"Route: {r}\r\n" for r in routes)
        common = (
            f"From: sipp <sip:sipp@127.0.0.1:5080>;tag={i}SIPpTag00\r\n{to}\r\n"
            f"Call-ID: {i}-call@127.0.0.1\r\n{route}Max-Forwards: 70\r\n"
        )
        ack = (
            "ACK sip:bob@127.0.0.1:5090 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-ack-{i};rport\r\n"
            f"{common}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        out = feed(node, ack, CALLER, now)
        fwd_ack = next(s.data for s in out if s.peer == CALLEE)
        assert fwd_ack.startswith(b"ACK")
        bye = (
            "BYE sip:bob@127.0.0.1:5090 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bye-{i};rport\r\n"
            f"{common}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        out = feed(node, bye, CALLER, now)
        fwd_bye = next(s.data for s in out if s.peer == CALLEE)
        out = feed(node, _answer(fwd_bye, "200 OK"), CALLEE, now)
        assert any(s.peer == CALLER and s.data.startswith(b"SIP/2.0 200") for s in out)

    counter = iter(range(10**9))

    def run(r: int, count: int) -> None:
        now = 10.0 + 100 * r
        for _ in range(count):
            one_call(next(counter), now)
        node.handle_timeout(now + 50)  # let finished transactions go

    # Building the callee's answers, the ACK and the BYE is timed too (a few percent).
    return _rounds(run, n, rounds)


def bench_parse(n: int, rounds: int) -> float:
    data = register(7)

    def run(_r: int, count: int) -> None:
        for _ in range(count):
            parse_message(data)

    return _rounds(run, n, rounds)


def main() -> None:
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)  # as ``sipwake serve`` sets it
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = [
        ("parse REGISTER", bench_parse(args.n, args.rounds), 1),
        ("REGISTER (parse, registrar, 200 OK)", bench_register(args.n, args.rounds), 2),
        ("call (7 messages in, 7 out)", bench_calls(args.n // 5, args.rounds), 14),
    ]
    print(f"{'operation':40} {'µs/op':>8} {'ops/s':>9} {'µs/message':>11}")
    for name, us, messages in rows:
        print(f"{name:40} {us:8.1f} {1e6 / us:9.0f} {us / messages:11.1f}")


if __name__ == "__main__":
    main()
