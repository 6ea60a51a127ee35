"""Loops: a request that comes back to sipwake, or whose next hop is sipwake itself.

RFC 3261 §16.3 item 4: a proxy that finds its own Via with the branch it would compute for
the request now has a loop and answers 482 (Loop Detected); a request forwarded to one of
our own listeners would come straight back, so it is refused before it leaves.
Without this, one packet costs 70 trips through the proxy (Max-Forwards) before a 483.
"""

from __future__ import annotations

import asyncio

import pytest
from edgewire import Host, call
from sipua import Ua, udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, Response

pytestmark = pytest.mark.timeout(20)


async def test_dialog_target_naming_sipwake_is_refused_not_looped(
    edge: Server, phones: dict[str, Ua]
) -> None:
    """bob's 200 gives sipwake's own address as his contact: the BYE that follows the
    dialog must not be sent by sipwake to itself."""
    host, port = udp_address(edge)
    dialog = await call(phones["alice"], phones["bob"], bob_contact=f"<sip:bob@{host}:{port}>")
    alice = phones["alice"]
    alice.send(dialog.from_alice("BYE"))
    answer = await alice.expect(482)
    assert isinstance(answer, Response)
    assert answer.cseq.method == "BYE"


async def test_request_that_comes_back_unchanged_gets_482(
    edge: Server, phones: dict[str, Ua], victim: Host
) -> None:
    """A next hop (badly configured, or hostile) sends alice's call straight back."""
    alice = phones["alice"]
    await alice.register()
    target = f"sip:x@{victim.hostport}"
    invite = alice.request("INVITE", target, to=f"<{target}>")
    pending = asyncio.ensure_future(alice.transact(invite, 482))
    got = await victim.queue.get()
    assert isinstance(got, Request)
    assert got.method == "INVITE"
    # The reflector: its own Via on top, Max-Forwards down by one, back to sipwake.
    reflected = got.copy()
    reflected.headers.insert("Via", f"SIP/2.0/UDP {victim.hostport};branch=z9hG4bKrefl1")
    reflected.headers.set("Max-Forwards", str((got.max_forwards or 70) - 1))
    victim.send(reflected.to_bytes())
    answer = await victim.final()
    assert answer.status == 482, f"got {answer.status} {answer.reason}"
    assert answer.cseq.method == "INVITE"
    pending.cancel()


async def test_made_up_dialog_addressed_to_sipwake_is_answered_once(
    edge: Server, attacker: Host
) -> None:
    host, port = udp_address(edge)
    target = f"sip:x@{host}:{port}"
    attacker.send(
        attacker.request("INVITE", target, from_="<sip:s@127.0.0.2>;tag=a", to=f"<{target}>;tag=x")
    )
    answer = await attacker.final()
    assert answer.status == 404, f"got {answer.status} {answer.reason}"
