"""``--open`` (labs, benchmarks): nobody authenticates, so users of the domain are taken at
their word for calls to users of the domain, and nothing is relayed: a lab server left
reachable is not a free route to premium numbers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from edgewire import Host, edge_config
from serving import running
from sipua import Ua, udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, make_response

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def open_edge(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(edge_config(tmp_path, open_=True)) as server:
        yield server


async def test_open_registers_and_calls_without_credentials(open_edge: Server) -> None:
    addr = udp_address(open_edge)
    alice = await Ua("alice", "", addr, "lab.test").start()
    bob = await Ua("bob", "", addr, "lab.test").start()
    try:
        for ua in (alice, bob):
            register = ua.request("REGISTER", "sip:lab.test", to=f"<sip:{ua.user}@lab.test>")
            register.headers.set("Contact", ua.contact)
            ua.send(register)
            await ua.expect(200)
        alice.send(alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>"))
        got = await bob.expect("INVITE")
        assert isinstance(got, Request)
        bob.send(make_response(got, 486, to_tag="b"), bob.sent_from[got.call_id + "INVITE"])
        assert (await alice.expect(486)).cseq.method == "INVITE"
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize("routed", [True, False])
async def test_open_relays_nothing(open_edge: Server, routed: bool) -> None:
    addr = udp_address(open_edge)
    attacker = await Host.bind("127.0.0.2", addr)
    gateway = await Host.bind("127.0.0.3", addr)
    try:
        premium = "sip:+19005551234@example.com"
        routes = (f"<sip:{addr[0]}:{addr[1]};lr>", f"<sip:{gateway.hostport};lr>")
        attacker.send(
            attacker.request(
                "INVITE",
                premium if routed else f"sip:+19005551234@{gateway.hostport}",
                from_="<sip:alice@lab.test>;tag=atk",
                to=f"<{premium}>",
                routes=routes if routed else (),
            )
        )
        assert (await attacker.final()).status == 403
        assert await gateway.requests() == []
    finally:
        attacker.close()
        gateway.close()


async def test_open_made_up_dialog_is_not_forwarded(open_edge: Server) -> None:
    addr = udp_address(open_edge)
    attacker = await Host.bind("127.0.0.2", addr)
    gateway = await Host.bind("127.0.0.3", addr)
    try:
        target = f"sip:x@{gateway.hostport}"
        attacker.send(
            attacker.request(
                "INVITE", target, from_="<sip:a@lab.test>;tag=a", to=f"<{target}>;tag=x"
            )
        )
        assert (await attacker.final()).status == 404
        await asyncio.sleep(0)
        assert await gateway.requests() == []
    finally:
        attacker.close()
        gateway.close()
