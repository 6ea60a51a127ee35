"""sipwake serve over real UDP sockets on loopback: register, call, cancel, refuse."""

from __future__ import annotations

import asyncio

import pytest
from sipua import Ua, udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, Response, make_response

pytestmark = pytest.mark.timeout(20)


async def test_register_needs_digest_and_lists_binding(lab: Server, uas: dict[str, Ua]) -> None:
    alice = uas["alice"]
    req = alice.request("REGISTER", "sip:lab.test", to="<sip:alice@lab.test>")
    alice.send(req)
    challenge = await alice.expect(401)
    assert isinstance(challenge, Response)
    algorithms = [
        v.split("algorithm=")[1].split(",")[0]
        for v in challenge.headers.get_all("WWW-Authenticate")
    ]
    assert algorithms == ["MD5"]
    ok = await alice.register(expires=600)
    contacts = ok.contacts
    assert contacts is not None
    assert str(contacts[0].uri) == f"sip:alice@127.0.0.1:{alice.port}"
    # Exactly what was asked (RFC 3261 §10.3 step 7: shortened maybe, never lengthened;
    # a float clock once made it 601 now and then).
    assert contacts[0].param("expires") == "600"
    assert lab.node is not None
    now = asyncio.get_running_loop().time()
    assert len(lab.node.registrar.lookup("sip:alice@lab.test", now)) == 1


async def test_wrong_password_is_refused(lab: Server, uas: dict[str, Ua]) -> None:
    mallory = uas["alice"]
    mallory.password = "guess"
    req = mallory.request("REGISTER", "sip:lab.test", to="<sip:alice@lab.test>")
    response = await mallory.transact(req, 403)
    assert response.status == 403


async def test_call_is_proxied_answered_and_hung_up(lab: Server, uas: dict[str, Ua]) -> None:
    alice, bob = uas["alice"], uas["bob"]
    await bob.register()
    await alice.register()
    invite = alice.request(
        "INVITE",
        "sip:bob@lab.test",
        to="<sip:bob@lab.test>",
        body=b"v=0\r\n",
        extra="Content-Type: application/sdp\r\n",
    )
    response_task = asyncio.ensure_future(alice.transact(invite, 200))
    incoming = await bob.expect("INVITE")
    assert isinstance(incoming, Request)
    assert str(incoming.uri) == f"sip:bob@127.0.0.1:{bob.port}"
    assert len(incoming.via) == 2
    assert incoming.max_forwards == 69
    assert incoming.record_routes, "the proxy stays on the dialog's path"
    assert incoming.body == b"v=0\r\n"
    source = bob.sent_from[incoming.call_id + "INVITE"]
    ringing = make_response(incoming, 180, to_tag="bobtag")
    bob.send(ringing, source)
    ok = make_response(incoming, 200, to_tag="bobtag")
    ok.headers.add("Contact", bob.contact)
    for name, value in incoming.headers:
        if name.lower() == "record-route":
            ok.headers.add(name, value)
    bob.send(ok, source)
    final = await response_task
    assert final.to.tag == "bobtag"
    route_set = [str(rr) for rr in final.record_routes]
    assert route_set
    # ACK and BYE follow the route set through the proxy to bob's contact.
    ack = alice.request(
        "ACK",
        f"sip:bob@127.0.0.1:{bob.port}",
        to="<sip:bob@lab.test>;tag=bobtag",
        call_id=invite.call_id,
        cseq=invite.cseq.seq,
        extra="".join(f"Route: {r}\r\n" for r in route_set),
    )
    alice.send(ack)
    got_ack = await bob.expect("ACK")
    assert got_ack.call_id == invite.call_id
    bye = alice.request(
        "BYE",
        f"sip:bob@127.0.0.1:{bob.port}",
        to="<sip:bob@lab.test>;tag=bobtag",
        call_id=invite.call_id,
        extra="".join(f"Route: {r}\r\n" for r in route_set),
    )
    alice.send(bye)
    got_bye = await bob.expect("BYE")
    assert isinstance(got_bye, Request)
    bob.send(make_response(got_bye, 200), bob.sent_from[got_bye.call_id + "BYE"])
    assert (await alice.expect(200)).cseq.method == "BYE"


async def test_caller_cancel_gives_487_and_cancels_branch(lab: Server, uas: dict[str, Ua]) -> None:
    alice, bob = uas["alice"], uas["bob"]
    await bob.register()
    await alice.register()
    invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
    pending = asyncio.ensure_future(alice.transact(invite, 487))
    incoming = await bob.expect("INVITE")
    assert isinstance(incoming, Request)
    source = bob.sent_from[incoming.call_id + "INVITE"]
    bob.send(make_response(incoming, 180, to_tag="b1"), source)
    await asyncio.sleep(0.2)  # the 180 reaches alice (transact() skips provisionals)
    alice.send(alice.cancel_last())
    got_cancel = await bob.expect("CANCEL")
    assert isinstance(got_cancel, Request)
    bob.send(make_response(got_cancel, 200), bob.sent_from[got_cancel.call_id + "CANCEL"])
    bob.send(make_response(incoming, 487, to_tag="b1"), source)
    final = await pending
    assert final.status == 487


async def test_unknown_user_looks_unreachable_and_foreign_domain_403(
    lab: Server, uas: dict[str, Ua]
) -> None:
    """An unknown user is answered as a known one with no device (480, no enumeration)."""
    alice = uas["alice"]
    await alice.register()
    nobody = alice.request("INVITE", "sip:nobody@lab.test", to="<sip:nobody@lab.test>")
    assert (await alice.transact(nobody, 480)).status == 480
    relay = alice.request("MESSAGE", "sip:victim@example.com", to="<sip:victim@example.com>")
    relay.headers.set("From", "<sip:spammer@example.org>;tag=x")
    assert (await alice.transact(relay, 403)).status == 403


async def test_offline_user_gets_480(lab: Server, uas: dict[str, Ua]) -> None:
    alice = uas["alice"]
    req = alice.request("INVITE", "sip:carol@lab.test", to="<sip:carol@lab.test>")
    assert (await alice.transact(req, 480)).status == 480


async def test_malformed_request_gets_400_with_reason(lab: Server, uas: dict[str, Ua]) -> None:
    alice = uas["alice"]
    bad = (
        "OPTIONS sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{alice.port};branch=z9hG4bKbad1;rport\r\n"
        "From: <sip:alice@lab.test>;tag=1\r\nTo: <sip:lab.test>\r\nCall-ID: bad1\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    alice.send(bad)
    response = await alice.expect(400)
    assert isinstance(response, Response)
    assert "CSeq method" in response.reason
    # the server is still fine afterwards
    options = alice.request("OPTIONS", "sip:lab.test", to="<sip:lab.test>")
    assert (await alice.transact(options, 200)).status == 200


async def test_max_forwards_zero_gets_483(lab: Server, uas: dict[str, Ua]) -> None:
    alice, bob = uas["alice"], uas["bob"]
    await bob.register()
    req = alice.request("MESSAGE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
    req.headers.set("Max-Forwards", "0")
    assert (await alice.transact(req, 483)).status == 483


def test_udp_address_helper(lab: Server) -> None:
    assert udp_address(lab)[1] > 0
