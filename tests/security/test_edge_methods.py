"""Authentication whatever the method: an out-of-dialog request from a user of our domain
must prove it (RFC 3261 §22.3), NOTIFY, INFO and UPDATE as much as INVITE. Only ACK and
CANCEL are never challenged (§22.1): they cannot be resent with credentials."""

from __future__ import annotations

import asyncio

import pytest
from edgewire import Host
from sipua import Ua

from sipwake.server import Server
from sipwake.sip.message import Request, make_response

pytestmark = pytest.mark.timeout(20)


async def _requests(ua: Ua, within: float = 0.5) -> list[Request]:
    await asyncio.sleep(within)
    got = []
    while not ua.queue.empty():
        message = ua.queue.get_nowait()
        if isinstance(message, Request):
            got.append(message)
    return got


@pytest.mark.parametrize(
    "method", ["NOTIFY", "INFO", "UPDATE", "BYE", "PRACK", "MESSAGE", "REFER", "OPTIONS"]
)
async def test_spoofed_local_sender_is_challenged_whatever_the_method(
    edge: Server, phones: dict[str, Ua], attacker: Host, method: str
) -> None:
    bob = phones["bob"]
    await bob.register()
    attacker.send(
        attacker.request(
            method,
            "sip:bob@lab.test",
            from_="<sip:alice@lab.test>;tag=spoof",
            to="<sip:bob@lab.test>",
            extra="Event: check-sync\r\n" if method == "NOTIFY" else "",
        )
    )
    assert (await attacker.final()).status == 407
    assert await _requests(bob) == [], f"an unauthenticated {method} reached bob's phone"


async def test_control_authenticated_message_reaches_the_callee(
    edge: Server, phones: dict[str, Ua]
) -> None:
    alice, bob = phones["alice"], phones["bob"]
    await bob.register()
    await alice.register()
    message = alice.request(
        "MESSAGE", "sip:bob@lab.test", to="<sip:bob@lab.test>", body=b"hi",
        extra="Content-Type: text/plain\r\n",
    )  # fmt: skip
    pending = asyncio.ensure_future(alice.transact(message, 200))
    got = await bob.expect("MESSAGE")
    assert isinstance(got, Request)
    assert got.body == b"hi"
    bob.send(make_response(got, 200), bob.sent_from[got.call_id + "MESSAGE"])
    assert (await pending).status == 200


async def test_made_up_to_tag_toward_a_device_does_not_skip_authentication(
    edge: Server, phones: dict[str, Ua], attacker: Host
) -> None:
    """A To-tag sipwake did not record is judged as out of dialog: a spoofed local sender
    is challenged even when the Request-URI is a registered phone's own address."""
    bob = phones["bob"]
    await bob.register()
    target = f"sip:bob@127.0.0.1:{bob.port}"
    attacker.send(
        attacker.request(
            "NOTIFY",
            target,
            from_="<sip:alice@lab.test>;tag=spoof",
            to=f"<{target}>;tag=made-up",
            extra="Event: check-sync\r\n",
        )
    )
    assert (await attacker.final()).status == 407
    assert await _requests(bob) == []
