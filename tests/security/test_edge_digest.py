"""Digest checks a registrar and proxy owe their users (RFC 3261 §22, RFC 2617 §3.2.2).

- The credentials' ``uri`` must be the Request-URI (RFC 2617 §3.2.2.5, RFC 3261 §22.4):
  otherwise credentials captured for one request are good for another.
- A replayed nonce-count gets a fresh challenge with ``stale=true``, not a final 403:
  SIP.js 0.21 resends its last Authorization on refresh and must stay registered.
- Proxy-Authorization for sipwake's own realm is consumed, not forwarded to the callee
  (RFC 3261 §22.3); credentials for another realm pass untouched.
"""

from __future__ import annotations

import asyncio

import pytest
from sipua import Ua

from sipwake.server import Server
from sipwake.sip.auth import Challenge, answer_challenge, parse_challenge, parse_credentials
from sipwake.sip.message import Request, Response, make_response

pytestmark = pytest.mark.timeout(20)


async def _challenged(ua: Ua, request: Request, status: int = 401) -> list[Challenge]:
    ua.send(request)
    answer = await ua.expect(status)
    assert isinstance(answer, Response)
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return [parse_challenge(v) for v in answer.headers.get_all(header)]


async def _answer(ua: Ua, cseq: int) -> Response:
    while True:
        message = await asyncio.wait_for(ua.queue.get(), 3.0)
        if isinstance(message, Response) and message.status >= 200 and message.cseq.seq == cseq:
            return message


def _register(ua: Ua, call_id: str | None = None, extra: str = "") -> Request:
    request = ua.request(
        "REGISTER", "sip:lab.test", to=f"<sip:{ua.user}@lab.test>", call_id=call_id, extra=extra
    )
    return request


@pytest.mark.parametrize(
    ("digest_uri", "status"), [("sip:other.example", 403), ("sip:lab.test", 200)]
)
async def test_register_credentials_must_name_the_request_uri(
    edge: Server, phones: dict[str, Ua], digest_uri: str, status: int
) -> None:
    alice = phones["alice"]
    first = _register(alice)
    challenges = await _challenged(alice, first)
    creds = answer_challenge(
        challenges, username="alice", password="alice-pw", method="REGISTER", uri=digest_uri,
        ids=alice.ids,
    )  # fmt: skip
    retry = _register(alice, first.call_id, f"Authorization: {creds}\r\n")
    alice.send(retry)
    assert (await _answer(alice, retry.cseq.seq)).status == status


async def test_invite_credentials_must_name_the_request_uri(
    edge: Server, phones: dict[str, Ua]
) -> None:
    alice, bob = phones["alice"], phones["bob"]
    await bob.register()
    invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
    challenges = await _challenged(alice, invite, 407)
    creds = answer_challenge(
        challenges, username="alice", password="alice-pw", method="INVITE",
        uri="sip:carol@lab.test", ids=alice.ids,
    )  # fmt: skip
    retry = alice.request(
        "INVITE",
        "sip:bob@lab.test",
        to="<sip:bob@lab.test>",
        call_id=invite.call_id,
        extra=f"Proxy-Authorization: {creds}\r\n",
    )
    alice.send(retry)
    assert (await _answer(alice, retry.cseq.seq)).status == 403
    await asyncio.sleep(0.3)
    reached = []
    while not bob.queue.empty():
        message = bob.queue.get_nowait()
        if isinstance(message, Request):
            reached.append(message)
    assert reached == [], "credentials for another Request-URI let the call through"


async def test_replayed_nonce_count_gets_a_stale_challenge(
    edge: Server, phones: dict[str, Ua]
) -> None:
    alice = phones["alice"]
    first = _register(alice)
    challenges = await _challenged(alice, first)
    creds = answer_challenge(
        challenges, username="alice", password="alice-pw", method="REGISTER", uri="sip:lab.test",
        ids=alice.ids,
    )  # fmt: skip
    accepted = _register(alice, first.call_id, f"Authorization: {creds}\r\n")
    alice.send(accepted)
    assert (await _answer(alice, accepted.cseq.seq)).status == 200
    # The refresh, as SIP.js 0.21 sends it: the same Authorization again (nc not counted up).
    replay = _register(alice, first.call_id, f"Authorization: {creds}\r\n")
    alice.send(replay)
    answer = await _answer(alice, replay.cseq.seq)
    assert answer.status == 401, f"got {answer.status} {answer.reason}"
    fresh = [parse_challenge(v) for v in answer.headers.get_all("WWW-Authenticate")]
    assert fresh
    assert all(c.stale for c in fresh)
    # The client answers the fresh challenge and stays registered.
    renewed = answer_challenge(
        fresh, username="alice", password="alice-pw", method="REGISTER", uri="sip:lab.test",
        ids=alice.ids,
    )  # fmt: skip
    refresh = _register(alice, first.call_id, f"Authorization: {renewed}\r\n")
    alice.send(refresh)
    assert (await _answer(alice, refresh.cseq.seq)).status == 200


async def test_own_realm_proxy_credentials_are_not_forwarded(
    edge: Server, phones: dict[str, Ua]
) -> None:
    alice, bob = phones["alice"], phones["bob"]
    await bob.register()
    await alice.register()
    other_realm = (
        'Digest username="alice", realm="carrier.example", nonce="abc", '
        'uri="sip:bob@lab.test", response="0123456789abcdef0123456789abcdef"'
    )
    invite = alice.request(
        "INVITE",
        "sip:bob@lab.test",
        to="<sip:bob@lab.test>",
        extra=f"Proxy-Authorization: {other_realm}\r\n",
    )
    pending = asyncio.ensure_future(alice.transact(invite, 486))
    got = await bob.expect("INVITE")
    assert isinstance(got, Request)
    realms = [_realm(v) for v in got.headers.get_all("Proxy-Authorization")]
    assert realms == ["carrier.example"], "lab.test's credentials went on to the callee"
    bob.send(make_response(got, 486, to_tag="b"), bob.sent_from[got.call_id + "INVITE"])
    assert (await pending).status == 486


def _realm(value: str) -> str:
    return parse_credentials(value).realm
