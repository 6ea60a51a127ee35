"""Raw SIP over UDP from hosts outside sipwake: crafted requests, and a watch on what arrives.

An attacker does not run a well-behaved user agent: it writes the bytes it wants. ``Host``
sends text as given and keeps every message that reaches it, so a test can say "sipwake
answered 403" and "nothing reached the gateway".
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from sipua import Ua

from sipwake.config import (
    AuthConfig,
    Config,
    ListenerSpec,
    StoreConfig,
    TlsConfig,
    UserConfig,
)
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message

_seq = itertools.count(1)

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def edge_config(tmp_path: Path, *, open_: bool = False) -> Config:
    """sipwake as `sipwake serve` runs it: UDP on 127.0.0.1, memory store, no admin port."""
    return Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={name: UserConfig(password=pw) for name, pw in USERS.items()},
        secret_file=tmp_path / "secret",
        auth=AuthConfig(open=open_),
        admin=None,
    )


class Host:
    """A UDP socket on one loopback address: sends raw text, records what it receives."""

    def __init__(self, address: str, server: tuple[str, int]) -> None:
        self.address = address
        self.server = server
        self.port = 0
        self.queue: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.seen: list[Request | Response] = []
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def bind(cls, address: str, server: tuple[str, int]) -> Host:
        host = cls(address, server)
        loop = asyncio.get_running_loop()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                message = parse_message(data)
                host.seen.append(message)
                host.queue.put_nowait(message)

        transport, _ = await loop.create_datagram_endpoint(_Proto, local_addr=(address, 0))
        host._transport = transport
        host.port = transport.get_extra_info("sockname")[1]
        return host

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, text: str | bytes, to: tuple[str, int] | None = None) -> None:
        assert self._transport is not None
        data = text if isinstance(text, bytes) else text.replace("\n", "\r\n").encode()
        self._transport.sendto(data, to or self.server)

    def request(
        self,
        method: str,
        uri: str,
        *,
        from_: str,
        to: str,
        routes: tuple[str, ...] = (),
        call_id: str | None = None,
        cseq: int = 1,
        extra: str = "",
        branch: str | None = None,
    ) -> str:
        """A request as a scanner writes it: Via naming this host, no Contact magic."""
        n = next(_seq)
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.hostport};branch={branch or f'z9hG4bKatk{n}'};rport",
            "Max-Forwards: 70",
            f"From: {from_}",
            f"To: {to}",
            f"Call-ID: {call_id or f'attack-{n}@{self.address}'}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:scanner@{self.hostport}>",
            *(f"Route: {r}" for r in routes),
        ]
        return "\n".join(lines) + "\n" + extra + "Content-Length: 0\n\n"

    async def final(self, within: float = 3.0) -> Response:
        """The next final response (provisionals skipped)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await asyncio.wait_for(self.queue.get(), max(remaining, 0.01))
            if isinstance(message, Response) and message.status >= 200:
                return message

    async def requests(self, within: float = 0.6) -> list[Request]:
        """Every request that arrives in the next ``within`` seconds."""
        await asyncio.sleep(within)
        got = []
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if isinstance(message, Request):
                got.append(message)
        return got


# -- a real call through sipwake, for the controls ---------------------------------------------


class Call:
    """alice called bob through sipwake and bob answered: the dialog both sides hold."""

    def __init__(self, alice: Ua, bob: Ua, invite: Request, ok: Response, source: object) -> None:
        self.alice = alice
        self.bob = bob
        self.invite = invite
        self.ok = ok
        self.bob_source = source
        self.call_id = invite.call_id
        self.alice_tag = invite.from_.tag or ""
        self.bob_tag = ok.to.tag or ""
        # RFC 3261 §12.1.2: the caller's route set is the Record-Route reversed;
        # §12.1.1: the callee's is the Record-Route in order.
        self.alice_routes = [str(r) for r in reversed(ok.record_routes)]
        self.bob_routes = [str(r) for r in ok.record_routes]
        contact = ok.contacts
        assert contact, "bob's 200 names his contact"
        self.bob_target = str(contact[0].uri)
        alice_contact = invite.contacts
        assert alice_contact
        self.alice_target = str(alice_contact[0].uri)

    def from_alice(self, method: str, *, cseq: int | None = None) -> Request:
        return self.alice.request(
            method,
            self.bob_target,
            to=f"<sip:bob@lab.test>;tag={self.bob_tag}",
            call_id=self.call_id,
            cseq=cseq,
            from_tag=self.alice_tag,
            extra="".join(f"Route: {r}\r\n" for r in self.alice_routes),
        )

    def from_bob(self, method: str) -> Request:
        request = self.bob.request(
            method,
            self.alice_target,
            to=f"<sip:alice@lab.test>;tag={self.alice_tag}",
            call_id=self.call_id,
            from_tag=self.bob_tag,
            extra="".join(f"Route: {r}\r\n" for r in self.bob_routes),
        )
        return request


async def call(alice: Ua, bob: Ua, *, bob_contact: str | None = None) -> Call:
    """Register both, alice calls bob (answering the 407), bob answers 200 with the
    Record-Route copied (RFC 3261 §12.1.1) and ``bob_contact`` as his Contact."""
    await bob.register()
    await alice.register()
    invite = alice.request(
        "INVITE",
        "sip:bob@lab.test",
        to="<sip:bob@lab.test>",
        body=b"v=0\r\n",
        extra="Content-Type: application/sdp\r\n",
    )
    answered = asyncio.ensure_future(alice.transact(invite, 200))
    incoming = await bob.expect("INVITE")
    assert isinstance(incoming, Request)
    source = bob.sent_from[incoming.call_id + "INVITE"]
    ok = make_response(incoming, 200, to_tag="bobtag")
    ok.headers.add("Contact", bob_contact or bob.contact)
    for value in incoming.headers.get_all("Record-Route"):
        ok.headers.add("Record-Route", value)
    bob.send(ok, source)
    final = await answered
    sent = alice.last_sent
    assert sent is not None
    return Call(alice, bob, sent, final, source)
