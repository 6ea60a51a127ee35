"""Feature codes over the network (``sipwake.proxy.dnd``): ``*78``/``*79`` set the DND of
the user who proves to be that user, and of nobody else. A scanner dialling ``*78`` from
outside, or with a local user's name in From and no password, changes nothing."""

from __future__ import annotations

import pytest
from edgewire import Host
from sipua import Ua

from sipwake.server import Server

pytestmark = pytest.mark.timeout(20)


def _dnd(edge: Server, user: str) -> bool:
    assert edge.node is not None
    return edge.node.plan_of(user).dnd


async def test_local_phone_sets_and_clears_its_dnd_with_feature_codes(
    edge: Server, phones: dict[str, Ua]
) -> None:
    bob = phones["bob"]
    await bob.register()
    on = bob.request("INVITE", "sip:*78@lab.test", to="<sip:*78@lab.test>")
    answer = await bob.transact(on, 603)  # answering the 407 on the way
    assert answer.reason == "DND On"
    assert "do not disturb is now on" in (answer.headers.get("Warning") or "")
    assert _dnd(edge, "bob") is True
    assert _dnd(edge, "alice") is False
    again = bob.request("INVITE", "sip:*78@lab.test", to="<sip:*78@lab.test>")
    assert (await bob.transact(again, 603)).reason == "DND On"  # on stays on
    assert _dnd(edge, "bob") is True
    off = bob.request("INVITE", "sip:*79@lab.test", to="<sip:*79@lab.test>")
    assert (await bob.transact(off, 603)).reason == "DND Off"
    assert _dnd(edge, "bob") is False


async def test_feature_code_from_outside_toggles_nobody(edge: Server, attacker: Host) -> None:
    attacker.send(
        attacker.request(
            "INVITE",
            "sip:*78@lab.test",
            from_="<sip:mallory@evil.example>;tag=m1",
            to="<sip:*78@lab.test>",
        )
    )
    assert (await attacker.final()).status == 403
    assert not any(_dnd(edge, user) for user in ("alice", "bob", "carol"))


async def test_feature_code_with_a_spoofed_local_sender_is_challenged(
    edge: Server, attacker: Host
) -> None:
    attacker.send(
        attacker.request(
            "INVITE",
            "sip:*78@lab.test",
            from_="<sip:bob@lab.test>;tag=spoof",
            to="<sip:*78@lab.test>",
        )
    )
    assert (await attacker.final()).status == 407
    assert _dnd(edge, "bob") is False


async def test_feature_code_sets_only_the_authenticated_users_dnd(
    edge: Server, phones: dict[str, Ua]
) -> None:
    """alice's credentials with bob in From: refused (the digest user is the From user)."""
    alice = phones["alice"]
    request = alice.request("INVITE", "sip:*78@lab.test", to="<sip:*78@lab.test>")
    request.headers.set("From", "<sip:bob@lab.test>;tag=x")
    await alice.transact(request, 403)
    assert _dnd(edge, "bob") is False
    assert _dnd(edge, "alice") is False
