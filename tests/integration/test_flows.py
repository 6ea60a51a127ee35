"""Connection-oriented clients (TCP, TLS, WebSocket) through sipwake serve: registration over a
flow, a call from a WebSocket client to a TLS client over the flows they registered on, with
double Record-Route where the transport changes (RFC 3261 §16.6, RFC 7118)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving import running
from websockets.asyncio.client import connect as ws_connect

from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.server import Server
from sipwake.sip.framing import StreamFramer
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def flows_lab(tmp_path: Path) -> AsyncIterator[Server]:
    config = Config(
        domain="lab.test",
        listen=[
            ListenerSpec(transport="udp", host="127.0.0.1", port=0),
            ListenerSpec(transport="tcp", host="127.0.0.1", port=0),
            ListenerSpec(transport="tls", host="127.0.0.1", port=0),
            ListenerSpec(transport="ws", host="127.0.0.1", port=0),
        ],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={"alice": UserConfig(password="a"), "bob": UserConfig(password="b")},
        secret_file=tmp_path / "secret",
        auth={"open": True},  # type: ignore[arg-type]
    )
    async with running(config) as server:
        yield server


def _port(server: Server, transport: str) -> int:
    return next(b.port for b in server.bound if b.transport == transport)


def _register(user: str, transport: str, host: str) -> bytes:
    return (
        f"REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host};branch=z9hG4bKreg{user};rport\r\n"
        f"From: <sip:{user}@lab.test>;tag={user}1\r\nTo: <sip:{user}@lab.test>\r\n"
        f"Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{host};transport={transport.lower()}>\r\n"
        f"Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class StreamClient:
    """A SIP client over one TCP or TLS connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> Request | Response:
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(65536), 5)
            assert chunk, "connection closed"
            self.pending += [f for f in self.framer.feed(chunk) if isinstance(f, bytes)]
        return parse_message(self.pending.pop(0), stream=True)


async def test_tcp_registration_lists_flow_contact(flows_lab: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(flows_lab, "tcp"))
    client = StreamClient(reader, writer)
    await client.send(_register("alice", "TCP", "alice.invalid"))
    reply = await client.recv()
    assert isinstance(reply, Response)
    assert reply.status == 200
    assert reply.top_via.received == "127.0.0.1"
    writer.close()


async def test_ws_caller_reaches_tls_callee_over_their_flows(flows_lab: Server) -> None:
    context = ssl.create_default_context(cafile=str(flows_lab.config.tls.dir / "cert.pem"))
    context.check_hostname = False
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", _port(flows_lab, "tls"), ssl=context
    )
    bob = StreamClient(reader, writer)
    # bob's contact host is not reachable: only his TLS flow is.
    await bob.send(_register("bob", "TLS", "bob.invalid"))
    assert (await bob.recv()).status == 200  # type: ignore[union-attr]

    url = f"ws://127.0.0.1:{_port(flows_lab, 'ws')}"
    async with ws_connect(url, subprotocols=["sip"]) as alice:  # type: ignore[list-item]
        await alice.send(_register("alice", "WS", "alice.invalid").decode())
        reply = parse_message(str(await alice.recv()).encode())
        assert isinstance(reply, Response)
        assert reply.status == 200

        invite = (
            "INVITE sip:bob@lab.test SIP/2.0\r\n"
            "Via: SIP/2.0/WS alice.invalid;branch=z9hG4bKinv1;rport\r\n"
            "From: <sip:alice@lab.test>;tag=al\r\nTo: <sip:bob@lab.test>\r\n"
            "Call-ID: ws-tls-1\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:alice@alice.invalid;transport=ws>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        await alice.send(invite)
        incoming = await bob.recv()
        assert isinstance(incoming, Request)
        assert incoming.method == "INVITE"
        assert str(incoming.uri) == "sip:bob@bob.invalid;transport=tls"
        routes = [str(rr.uri) for rr in incoming.record_routes]
        assert len(routes) == 2, "transport changes from WS to TLS: double Record-Route"
        assert routes[0].startswith("sips:")
        assert "transport=tls" in routes[0]
        assert "transport=ws" in routes[1]
        ok = make_response(incoming, 200, to_tag="bobtag")
        ok.headers.add("Contact", "<sip:bob@bob.invalid;transport=tls>")
        for name, value in incoming.headers:
            if name.lower() == "record-route":
                ok.headers.add(name, value)
        await bob.send(ok.to_bytes())
        while True:
            answer = parse_message(str(await asyncio.wait_for(alice.recv(), 5)).encode())
            assert isinstance(answer, Response)
            if answer.status >= 200:
                break
        assert answer.status == 200
        assert answer.to.tag == "bobtag"
        assert len(answer.record_routes) == 2
    writer.close()
