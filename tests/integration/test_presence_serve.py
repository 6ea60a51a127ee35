"""Presence through ``sipwake serve`` on loopback: a watcher subscribes to a user whose
phone sleeps (away), sees it become available when the phone registers over an open
flow, and unsubscribes; subscriptions need digest authentication unless the lab is open."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sipua import Ua, udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, Response, make_response
from tests.integration.test_wake_serve import TcpPhone, _lab_config, _tcp_port

pytestmark = pytest.mark.timeout(30)


async def _notify(watcher: Ua) -> Request:
    """The next NOTIFY (answered 200, as a subscriber must)."""
    notify = await watcher.expect("NOTIFY", within=3)
    assert isinstance(notify, Request)
    watcher.send(make_response(notify, 200))
    return notify


def _presence(notify: Request) -> str:
    body = notify.body.decode()
    if "<basic>closed</basic>" in body:
        return "offline"
    return "away" if "<rpid:away/>" in body else "available"


def _subscribe(watcher: Ua, *, expires: int, to: str = "<sip:bob@lab.test>", **kw: str) -> Request:
    return watcher.request(
        "SUBSCRIBE",
        kw.get("uri", "sip:bob@lab.test"),
        to=to,
        call_id=kw.get("call_id"),
        extra=f"Event: presence\r\nAccept: application/pidf+xml\r\nExpires: {expires}\r\n",
    )


async def test_watcher_sees_a_sleeping_phone_as_away_then_available(tmp_path: Path) -> None:
    server = Server(_lab_config(tmp_path))
    await server.start()
    watcher = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = TcpPhone(_tcp_port(server))
    try:
        assert (await phone.register()).status == 200
        await phone.suspend()
        subscribe = _subscribe(watcher, expires=600)
        watcher.send(subscribe)
        ok = await watcher.expect(200)
        assert isinstance(ok, Response)
        assert ok.headers.get("Expires") == "600"
        first = await _notify(watcher)
        assert first.headers.get("Subscription-State", "").startswith("active")
        assert first.headers.get("Content-Type") == "application/pidf+xml"
        assert _presence(first) == "away"  # asleep, reachable by push
        # The app comes to the foreground: it registers over an open connection.
        assert (await phone.register()).status == 200
        assert _presence(await _notify(watcher)) == "available"
        await phone.suspend()
        assert _presence(await _notify(watcher)) == "away"
        # Unsubscribe in the dialog: a final NOTIFY ends it.
        contact = ok.headers.get("Contact", "").strip("<>")
        to = f"<sip:bob@lab.test>;tag={ok.to.tag}"
        bye = _subscribe(watcher, expires=0, to=to, uri=contact, call_id=subscribe.call_id)
        watcher.send(bye)
        assert isinstance(await watcher.expect(200), Response)
        final = await _notify(watcher)
        assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
        assert server.node is not None
        assert len(server.node.presence) == 0
    finally:
        watcher.close()
        await server.close()


async def test_a_udp_push_phone_that_goes_quiet_is_notified_away(tmp_path: Path) -> None:
    # A UDP binding with push parameters is foreground only for udp_foreground_s after
    # its REGISTER: with no other traffic the watcher is told "away" when that runs out.
    server = Server(_lab_config(tmp_path, calls={"udp_foreground_s": 0.5}))
    await server.start()
    watcher = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = await Ua("bob", "b", udp_address(server), "lab.test").start()
    try:
        push = f";pn-provider=apns;pn-param=TEAM123456.org.lab.phone.voip;pn-prid={'ab' * 32}"
        before = asyncio.get_running_loop().time()  # the server's clock reads ≥ this
        await phone.register(contact_params=push)
        watcher.send(_subscribe(watcher, expires=600))
        assert isinstance(await watcher.expect(200), Response)
        assert _presence(await _notify(watcher)) == "available"
        away = await _notify(watcher)  # nothing happened but time
        waited = asyncio.get_running_loop().time() - before
        assert _presence(away) == "away"
        assert away.headers.get("Subscription-State", "").startswith("active")
        assert 0.5 <= waited < 2.0
    finally:
        phone.close()
        watcher.close()
        await server.close()


async def test_subscriptions_need_digest_authentication(tmp_path: Path) -> None:
    server = Server(_lab_config(tmp_path, auth={"open": False}))
    await server.start()
    watcher = await Ua("alice", "a", udp_address(server), "lab.test").start()
    try:
        subscribe = _subscribe(watcher, expires=600)
        watcher.send(subscribe)
        challenge = await watcher.expect(407)  # like a call: Proxy-Authenticate
        assert isinstance(challenge, Response)
        ok = await watcher.transact(_subscribe(watcher, expires=600), 200)
        assert ok.headers.get("Expires") == "600"
        assert _presence(await _notify(watcher)) == "offline"
        stranger = _subscribe(watcher, expires=600)
        stranger.headers.set("From", "<sip:eve@elsewhere.test>;tag=e1")
        refused = await watcher.transact(stranger, 403)
        assert refused.status == 403
        dialog = _subscribe(watcher, expires=600)
        dialog.headers.set("Event", "dialog")
        assert (await watcher.transact(dialog, 489)).headers.get("Allow-Events") == "presence"
    finally:
        watcher.close()
        await server.close()
