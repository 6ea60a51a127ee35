"""A scripted SIP user agent over UDP, for integration tests."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sipwake.ids import SeededIds
from sipwake.sip.auth import answer_challenge, parse_challenge
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message

_counter = itertools.count(1)


class Ua:
    """A scripted UDP user agent: builds requests, waits for what it expects."""

    def __init__(self, user: str, password: str, server: tuple[str, int], domain: str) -> None:
        self.user = user
        self.password = password
        self.server = server
        self.domain = domain
        self.ids = SeededIds(next(_counter))
        self.queue: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.raw: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.cseq = 0
        self.sent_from: dict[str, tuple[str, int]] = {}
        self.last_sent: Request | None = None

    async def start(self) -> Ua:
        loop = asyncio.get_running_loop()
        ua = self

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if data[:1] < b"\x40":  # not SIP: a STUN answer (RFC 5626 keep-alives)
                    ua.raw.put_nowait(data)
                    return
                msg = parse_message(data)
                if isinstance(msg, Request):
                    ua.sent_from[msg.call_id + msg.method] = addr
                ua.queue.put_nowait(msg)

        transport, _ = await loop.create_datagram_endpoint(_Proto, local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

    def send(self, data: bytes | Request | Response, to: tuple[str, int] | None = None) -> None:
        assert self.transport is not None
        if isinstance(data, Request):
            self.last_sent = data
        raw = data if isinstance(data, bytes) else data.to_bytes()
        self.transport.sendto(raw, to or self.server)

    def request(
        self,
        method: str,
        uri: str,
        *,
        to: str,
        call_id: str | None = None,
        extra: str = "",
        body: bytes = b"",
        cseq: int | None = None,
        from_tag: str = "ft",
        branch: str | None = None,
    ) -> Request:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        call_id = call_id or self.ids.call_id()
        branch = branch or self.ids.branch()
        text = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{self.domain}>;tag={from_tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: {self.contact}\r\n"
            f"{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        msg = parse_message(text.encode() + body)
        assert isinstance(msg, Request)
        return msg

    async def expect(self, what: str | int, within: float = 3.0) -> Request | Response:
        """Wait for a request of method ``what`` or a response with status ``what``
        (provisional 100s are skipped unless asked for)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            msg = await asyncio.wait_for(self.queue.get(), max(remaining, 0.01))
            if isinstance(what, int) and isinstance(msg, Response) and msg.status == what:
                return msg
            if isinstance(what, str) and isinstance(msg, Request) and msg.method == what:
                return msg

    async def transact(self, request: Request, expect: int) -> Response:
        """Send a request; answer one digest challenge if it comes; return the final response."""
        self.send(request)
        while True:
            msg = await asyncio.wait_for(self.queue.get(), 3.0)
            if not isinstance(msg, Response) or msg.status < 200:
                continue
            if msg.cseq.method != request.method:
                continue  # e.g. the 200 for our CANCEL
            if msg.status in (401, 407) and expect not in (401, 407):
                header = "WWW-Authenticate" if msg.status == 401 else "Proxy-Authenticate"
                challenges = [parse_challenge(v) for v in msg.headers.get_all(header)]
                creds = answer_challenge(
                    challenges,
                    username=self.user,
                    password=self.password,
                    method=request.method,
                    uri=str(request.uri),
                    ids=self.ids,
                )
                retry = request.copy()
                retry.headers.pop_first_value("Via")
                retry.headers.insert(
                    "Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={self.ids.branch()};rport"
                )
                self.cseq += 1
                retry.headers.set("CSeq", f"{self.cseq} {request.method}")
                auth = "Authorization" if msg.status == 401 else "Proxy-Authorization"
                retry.headers.add(auth, str(creds))
                self.send(retry)
                request = retry
                continue
            assert msg.status == expect, f"expected {expect}, got {msg.status} {msg.reason}"
            return msg

    async def register(self, expires: int = 600, contact_params: str = "") -> Response:
        contact = f"<sip:{self.user}@127.0.0.1:{self.port}{contact_params}>"
        req = self.request(
            "REGISTER",
            f"sip:{self.domain}",
            to=f"<sip:{self.user}@{self.domain}>",
            extra=f"Expires: {expires}\r\n",
        )
        req.headers.set("Contact", contact)
        return await self.transact(req, 200)

    def cancel_last(self) -> bytes:
        """A CANCEL for the last request sent (RFC 3261 §9.1: same Via, R-URI, tags, CSeq #)."""
        last = self.last_sent
        assert last is not None
        head = last.to_bytes().split(b"\r\n\r\n")[0].decode()
        lines = head.split("\r\n")
        _, uri, version = lines[0].split(" ")
        out = [f"CANCEL {uri} {version}"]
        for line in lines[1:]:
            name = line.split(":", 1)[0].lower()
            if name == "cseq":
                out.append(f"CSeq: {line.split(':', 1)[1].split()[0]} CANCEL")
            elif name in ("via", "from", "to", "call-id", "max-forwards", "route"):
                out.append(line)
        return ("\r\n".join(out) + "\r\nContent-Length: 0\r\n\r\n").encode()


def udp_address(server: Any) -> tuple[str, int]:
    for listener in server.bound:
        if listener.transport == "udp":
            return (listener.host, listener.port)
    raise AssertionError("no UDP listener")
