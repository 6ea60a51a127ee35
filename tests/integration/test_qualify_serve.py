"""Liveness of UDP softphones through ``sipwake serve`` on loopback (short windows).

A softphone that vanished without unregistering (Wi-Fi gone, app killed) must not keep
callers waiting Timer B: quiet for ``udp_foreground_s`` it gets an OPTIONS; silent, it is
offline and a call to it is answered 480 at once. One that answers, or sends CRLF or
STUN keep-alives (RFC 5626 §4.4), stays in the foreground.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving import running
from sipua import Ua, udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, Response, make_response
from tests.integration.test_wake_serve import _lab_config

pytestmark = pytest.mark.timeout(30)

WINDOW = 0.5
TIMEOUT = 0.5


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Server]:
    calls = {"udp_foreground_s": WINDOW, "udp_qualify_timeout_s": TIMEOUT}
    async with running(_lab_config(tmp_path, calls=calls)) as server:
        yield server


@pytest.fixture
async def phones(lab: Server) -> AsyncIterator[tuple[Ua, Ua]]:
    address = udp_address(lab)
    alice = await Ua("alice", "a", address, "lab.test").start()
    bob = await Ua("bob", "b", address, "lab.test").start()
    try:
        yield alice, bob
    finally:
        alice.close()
        bob.close()


def _state(server: Server, aor: str = "sip:bob@lab.test") -> tuple[str, list[str]]:
    assert server.node is not None
    for user in server.node.snapshot(asyncio.get_running_loop().time()):
        if user["aor"] == aor:
            devices = user["devices"]
            assert isinstance(devices, list)
            return str(user["presence"]), [str(d["state"]) for d in devices]
    return "none", []


async def _until(server: Server, state: str, within: float, aor: str = "sip:bob@lab.test") -> float:
    """Wait until the user's only device reads ``state``; return how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while _state(server, aor)[1] != [state]:
        assert loop.time() - start < within, f"{aor}'s device still {_state(server, aor)}"
        await asyncio.sleep(0.02)
    return loop.time() - start


def _invite(alice: Ua) -> Request:
    return alice.request(
        "INVITE",
        "sip:bob@lab.test",
        to="<sip:bob@lab.test>",
        body=b"v=0\r\n",
        extra="Content-Type: application/sdp\r\n",
    )


async def test_a_silent_phone_is_pinged_then_offline_and_a_call_gets_480_at_once(
    lab: Server, phones: tuple[Ua, Ua]
) -> None:
    alice, bob = phones
    assert (await bob.register(expires=600)).status == 200
    ping = await bob.expect("OPTIONS", within=WINDOW + 2)
    assert isinstance(ping, Request)
    assert ping.max_forwards == 70
    assert str(ping.uri) == f"sip:bob@127.0.0.1:{bob.port}"
    assert ping.from_.tag is not None
    assert str(ping.to.uri) == "sip:bob@lab.test"
    # bob does not answer: offline once the ping's timeout passes.
    await _until(lab, "offline", within=TIMEOUT + 2)
    assert _state(lab)[0] == "offline"
    assert lab.node is not None
    assert len(lab.node.registrar.lookup("sip:bob@lab.test", asyncio.get_running_loop().time()))
    loop = asyncio.get_running_loop()
    started = loop.time()
    final = await alice.transact(_invite(alice), 480)
    assert final.status == 480
    assert loop.time() - started < 1.0  # not Timer B's 32 s
    while not bob.queue.empty():  # nothing but the ping's retransmissions reached bob
        message = bob.queue.get_nowait()
        assert isinstance(message, Request)
        assert message.method == "OPTIONS"


async def test_a_phone_that_answers_pings_stays_foreground_and_rings(
    lab: Server, phones: tuple[Ua, Ua]
) -> None:
    alice, bob = phones
    assert (await bob.register(expires=600)).status == 200
    pings = 0
    loop = asyncio.get_running_loop()
    until = loop.time() + 4 * (WINDOW + TIMEOUT)
    while loop.time() < until:
        try:
            message = await asyncio.wait_for(bob.queue.get(), until - loop.time())
        except TimeoutError:
            break
        if isinstance(message, Request) and message.method == "OPTIONS":
            pings += 1
            bob.send(make_response(message, 200, to_tag="b1"))
        assert _state(lab)[1] == ["foreground"]
    assert pings >= 2
    assert _state(lab) == ("available", ["foreground"])
    alice.send(_invite(alice))
    while True:
        message = await bob.expect("INVITE", within=3)
        assert isinstance(message, Request)
        break
    bob.send(make_response(message, 486, to_tag="b2"))
    busy = await alice.expect(486, within=3)
    assert isinstance(busy, Response)


async def test_crlf_and_stun_keepalives_bring_a_phone_back(
    lab: Server, phones: tuple[Ua, Ua]
) -> None:
    alice, bob = phones
    assert (await bob.register(expires=600)).status == 200
    assert (await alice.register(expires=600)).status == 200
    await _until(lab, "offline", within=WINDOW + TIMEOUT + 2)
    await _until(lab, "offline", within=1, aor="sip:alice@lab.test")
    bob.send(b"\r\n\r\n")  # RFC 5626 §3.5.1 CRLF keep-alive
    await _until(lab, "foreground", within=1)
    assert _state(lab, "sip:alice@lab.test")[1] == ["offline"]
    # RFC 5626 §4.4.2: a STUN Binding request to the SIP port gets its answer, with the
    # address the server saw (XOR-MAPPED-ADDRESS), and counts as a sign of life.
    transaction_id = os.urandom(12)
    alice.send(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction_id)
    answer = await asyncio.wait_for(alice.raw.get(), 2)
    kind, length, cookie = struct.unpack_from("!HHI", answer)
    assert (kind, cookie, answer[8:20]) == (0x0101, 0x2112A442, transaction_id)
    attribute, size, _, family, xport = struct.unpack_from("!HHBBH", answer, 20)
    assert (attribute, family) == (0x0020, 0x01)  # XOR-MAPPED-ADDRESS, IPv4
    assert xport ^ 0x2112 == alice.port
    assert answer[28:32] == bytes(a ^ b for a, b in zip(b"\x7f\0\0\x01", answer[4:8], strict=True))
    assert length == len(answer) - 20 == 4 + size
    await _until(lab, "foreground", within=1, aor="sip:alice@lab.test")
