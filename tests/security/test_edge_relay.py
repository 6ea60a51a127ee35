"""No open relay: what an outsider sends through sipwake never leaves it for a third host.

Attacks from the toll-fraud playbook (SIPVicious-style scanners, then INVITEs to premium
numbers through whatever forwards them): a pre-loaded Route set whose first entry names
sipwake and whose second names the gateway; a made-up To-tag that passes for a dialog.
RFC 3261 §16.4 (a proxy removes only its own Route), §12.2 (in-dialog requests follow a
route set the proxies recorded). The controls show the legitimate requests still go.
"""

from __future__ import annotations

import asyncio

import pytest
from edgewire import Host, call
from sipua import Ua, udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, make_response

pytestmark = pytest.mark.timeout(20)

OUTSIDER = "<sip:scanner@127.0.0.2>;tag=atk"


def sipwake_route(edge: Server) -> str:
    host, port = udp_address(edge)
    return f"<sip:{host}:{port};lr>"


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE"])
async def test_route_beyond_sipwake_from_outside_is_refused(
    edge: Server, attacker: Host, victim: Host, method: str
) -> None:
    premium = "sip:+19005551234@example.com"
    attacker.send(
        attacker.request(
            method,
            premium,
            from_=OUTSIDER,
            to=f"<{premium}>",
            routes=(sipwake_route(edge), f"<sip:{victim.hostport};lr>"),
        )
    )
    answer = await attacker.final()
    assert answer.status == 403
    assert await victim.requests() == [], "sipwake relayed the outsider's request"


async def test_route_beyond_sipwake_to_a_local_user_is_refused(
    edge: Server, phones: dict[str, Ua], attacker: Host, victim: Host
) -> None:
    """A local Request-URI does not make the rest of the route set ours to follow."""
    await phones["bob"].register()
    attacker.send(
        attacker.request(
            "INVITE",
            "sip:bob@lab.test",
            from_=OUTSIDER,
            to="<sip:bob@lab.test>",
            routes=(sipwake_route(edge), f"<sip:{victim.hostport};lr>"),
        )
    )
    assert (await attacker.final()).status == 403
    assert await victim.requests() == []


async def test_spoofed_local_caller_with_route_set_is_challenged(
    edge: Server, attacker: Host, victim: Host
) -> None:
    premium = "sip:+19005551234@example.com"
    attacker.send(
        attacker.request(
            "INVITE",
            premium,
            from_="<sip:alice@lab.test>;tag=atk",
            to=f"<{premium}>",
            routes=(sipwake_route(edge), f"<sip:{victim.hostport};lr>"),
        )
    )
    assert (await attacker.final()).status == 407
    assert await victim.requests() == []


async def test_control_authenticated_user_may_use_a_route_set(
    edge: Server, phones: dict[str, Ua], victim: Host
) -> None:
    """A local user who proves who they are may call out through a gateway they name."""
    alice = phones["alice"]
    await alice.register()
    premium = "sip:+19005551234@example.com"
    invite = alice.request(
        "INVITE",
        premium,
        to=f"<{premium}>",
        extra=f"Route: {sipwake_route(edge)}\r\nRoute: <sip:{victim.hostport};lr>\r\n",
    )
    pending = asyncio.ensure_future(alice.transact(invite, 486))
    got = await victim.requests(0.8)
    assert got, "the authenticated call went out through the named gateway"
    assert {r.method for r in got} == {"INVITE"}  # with retransmissions: no 100 from it
    victim.send(make_response(got[0], 486).to_bytes(), (got[0].top_via.host, got[0].top_via.port))
    assert (await pending).status == 486


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "BYE", "NOTIFY", "OPTIONS"])
async def test_made_up_to_tag_is_not_a_dialog(
    edge: Server, attacker: Host, victim: Host, method: str
) -> None:
    target = f"sip:x@{victim.hostport}"
    attacker.send(attacker.request(method, target, from_=OUTSIDER, to=f"<{target}>;tag=x"))
    assert (await attacker.final()).status == 404
    assert await victim.requests() == [], f"a made-up To-tag carried the {method} out"


async def test_made_up_to_tag_with_sipwake_route_is_not_a_dialog(
    edge: Server, attacker: Host, victim: Host
) -> None:
    """A Route naming sipwake is not one sipwake recorded: it carries no dialog token."""
    target = f"sip:x@{victim.hostport}"
    attacker.send(
        attacker.request(
            "INVITE",
            target,
            from_=OUTSIDER,
            to=f"<{target}>;tag=x",
            routes=(sipwake_route(edge),),
        )
    )
    assert (await attacker.final()).status == 404
    assert await victim.requests() == []


async def test_made_up_ack_is_not_forwarded(edge: Server, attacker: Host, victim: Host) -> None:
    target = f"sip:x@{victim.hostport}"
    for routes in ((), (sipwake_route(edge),)):
        attacker.send(
            attacker.request("ACK", target, from_=OUTSIDER, to=f"<{target}>;tag=x", routes=routes)
        )
    assert await victim.requests() == []


async def test_control_dialog_requests_follow_the_recorded_route_both_ways(
    edge: Server, phones: dict[str, Ua]
) -> None:
    alice, bob = phones["alice"], phones["bob"]
    dialog = await call(alice, bob)
    # The ACK for the 2xx, a re-INVITE and its ACK from the caller; a BYE from the callee.
    alice.send(dialog.from_alice("ACK", cseq=dialog.invite.cseq.seq))
    assert (await bob.expect("ACK")).call_id == dialog.call_id
    reinvite = dialog.from_alice("INVITE")
    alice.send(reinvite)
    got = await bob.expect("INVITE")
    assert isinstance(got, Request)
    assert got.to.tag == dialog.bob_tag
    bob.send(make_response(got, 200), bob.sent_from[got.call_id + "INVITE"])
    assert (await alice.expect(200)).cseq.method == "INVITE"
    alice.send(dialog.from_alice("ACK", cseq=reinvite.cseq.seq))
    await bob.expect("ACK")
    bye = dialog.from_bob("BYE")
    bob.send(bye)
    got_bye = await alice.expect("BYE")
    assert isinstance(got_bye, Request)
    alice.send(make_response(got_bye, 200), alice.sent_from[got_bye.call_id + "BYE"])
    answer = await bob.expect(200)
    assert answer.cseq.method == "BYE"


async def test_control_caller_bye_and_cancel_go_through(
    edge: Server, phones: dict[str, Ua]
) -> None:
    alice, bob, carol = phones["alice"], phones["bob"], phones["carol"]
    dialog = await call(alice, bob)
    alice.send(dialog.from_alice("ACK", cseq=dialog.invite.cseq.seq))
    await bob.expect("ACK")
    alice.send(dialog.from_alice("BYE"))
    got_bye = await bob.expect("BYE")
    assert isinstance(got_bye, Request)
    bob.send(make_response(got_bye, 200), bob.sent_from[got_bye.call_id + "BYE"])
    assert (await alice.expect(200)).cseq.method == "BYE"
    # A call that is cancelled while it rings: the CANCEL reaches the callee.
    await carol.register()
    invite = alice.request("INVITE", "sip:carol@lab.test", to="<sip:carol@lab.test>")
    pending = asyncio.ensure_future(alice.transact(invite, 487))
    incoming = await carol.expect("INVITE")
    assert isinstance(incoming, Request)
    source = carol.sent_from[incoming.call_id + "INVITE"]
    carol.send(make_response(incoming, 180, to_tag="c1"), source)
    await asyncio.sleep(0.2)
    alice.send(alice.cancel_last())
    got_cancel = await carol.expect("CANCEL")
    assert isinstance(got_cancel, Request)
    carol.send(make_response(got_cancel, 200), carol.sent_from[got_cancel.call_id + "CANCEL"])
    carol.send(make_response(incoming, 487, to_tag="c1"), source)
    assert (await pending).status == 487
