"""The edge policy's pure rules (sipwake.proxy.policy): dialog tokens, loop marks, our own
listeners, the admission tables, digest uri comparison, consumed credentials."""

from __future__ import annotations

import itertools

import pytest

from sipwake.proxy.policy import (
    OPEN,
    OUT_OF_DIALOG,
    Admission,
    Destination,
    EdgePolicy,
    Sender,
    digest_uri_matches,
)
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.sip.message import Request
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import parse_uri

UDP = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
LOCALITY = Locality(domain="lab.test", listeners=(UDP,))


def policy(secret: bytes = b"s" * 32, *, open_: bool = False) -> EdgePolicy:
    return EdgePolicy(secret=secret, locality=LOCALITY, open=open_)


def request(
    method: str = "BYE",
    uri: str = "sip:bob@10.0.0.2:5062",
    *,
    from_tag: str = "a",
    to_tag: str | None = "b",
    routes: tuple[str, ...] = (),
    vias: tuple[str, ...] = ("SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bKc1",),
    extra: str = "",
) -> Request:
    to = "<sip:bob@lab.test>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        + "".join(f"Via: {v}\r\n" for v in vias)
        + f"From: <sip:alice@lab.test>;tag={from_tag}\r\nTo: {to}\r\n"
        "Call-ID: c1\r\nCSeq: 2 "
        + method
        + "\r\nMax-Forwards: 70\r\n"
        + "".join(f"Route: {r}\r\n" for r in routes)
        + extra
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def recorded_route(p: EdgePolicy) -> str:
    invite = request("INVITE", "sip:bob@lab.test", to_tag=None)
    return p.record_route(UDP, invite)


@pytest.mark.parametrize(("from_tag", "to_tag"), [("a", "b"), ("b", "a")])
def test_dialog_token_is_recognised_from_either_side(from_tag: str, to_tag: str) -> None:
    p = policy()
    bye = request(from_tag=from_tag, to_tag=to_tag, routes=(recorded_route(p),))
    check = p.strip_own_routes(bye)
    assert check.stripped
    assert check.dialog
    assert bye.routes == []


def test_route_naming_us_without_token_or_with_another_dialogs_token_is_no_dialog() -> None:
    p = policy()
    for route in ("<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.1:5060;lr;swd=0123456789ab>"):
        check = p.strip_own_routes(request(routes=(route,)))
        assert check.stripped
        assert not check.dialog
    other = request("BYE", from_tag="x", to_tag="y", routes=(recorded_route(p),))
    assert not p.strip_own_routes(other).dialog


def test_token_of_another_secret_is_no_dialog() -> None:
    route = recorded_route(policy(b"o" * 32))
    assert not policy().strip_own_routes(request(routes=(route,))).dialog


def test_only_our_routes_at_the_top_are_removed() -> None:
    p = policy()
    bye = request(routes=(recorded_route(p), "<sip:10.9.9.9;lr>"))
    assert p.strip_own_routes(bye).dialog
    assert [str(r.uri) for r in bye.routes] == ["sip:10.9.9.9;lr"]


def test_loop_mark_finds_our_own_branch_and_not_a_spiral() -> None:
    p = policy()
    first = request("INVITE", "sip:x@10.0.0.9", to_tag=None)
    branch = "z9hG4bK0123456789abcdef" + p.loop_mark(first)
    ours = f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"
    back = request(
        "INVITE", "sip:x@10.0.0.9", to_tag=None, vias=("SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKr", ours)
    )
    assert p.looped(back)
    spiral = request(
        "INVITE", "sip:y@10.0.0.9", to_tag=None, vias=("SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKr", ours)
    )
    assert not p.looped(spiral), "a changed Request-URI is a spiral (§16.3 item 4)"
    assert not policy(b"o" * 32).looped(back)


def test_is_listener_also_for_an_unspecified_address() -> None:
    p = policy()
    assert p.is_listener(Peer(transport="udp", host="127.0.0.1", port=5060))
    assert not p.is_listener(Peer(transport="udp", host="127.0.0.1", port=5070))
    any_address = Locality(
        domain="lab.test", listeners=(LocalAddress(transport="udp", host="0.0.0.0", port=5060),)
    )
    wild = EdgePolicy(secret=b"s" * 32, locality=any_address)
    assert wild.is_listener(Peer(transport="tcp", host="127.0.0.5", port=5060))
    assert not wild.is_listener(Peer(transport="udp", host="192.0.2.7", port=5060))


def test_tables_cover_every_case_and_open_relays_nothing() -> None:
    cases = set(itertools.product(Sender, Destination))
    assert set(OUT_OF_DIALOG) == cases == set(OPEN)
    assert OUT_OF_DIALOG[(Sender.OUTSIDE, Destination.ELSEWHERE)] is Admission.REFUSE
    assert all(OPEN[(s, Destination.ELSEWHERE)] is Admission.REFUSE for s in Sender)
    assert all(a is not Admission.AUTHENTICATE for a in OPEN.values())


def test_sender_and_destination() -> None:
    p = policy()
    local = request("INVITE", "sip:bob@lab.test", to_tag=None)
    assert p.sender(local) is Sender.LOCAL
    assert p.destination(local) is Destination.LOCAL
    routed = request("INVITE", "sip:bob@lab.test", to_tag=None, routes=("<sip:10.0.0.9;lr>",))
    assert p.destination(routed) is Destination.ELSEWHERE
    assert p.destination(request("INVITE", "tel:+19005551234", to_tag=None)) is (
        Destination.ELSEWHERE
    )


@pytest.mark.parametrize(
    ("digest_uri", "request_uri", "match"),
    [
        ("sip:lab.test", "sip:lab.test", True),
        ("sip:LAB.test", "sip:lab.test", True),  # §19.1.4: hosts compare case-insensitively
        ("sip:%61lice@lab.test", "sip:alice@lab.test", True),
        ("sip:other.example", "sip:lab.test", False),
        ("sip:lab.test:5070", "sip:lab.test", False),
        ("sip:carol@lab.test", "sip:bob@lab.test", False),
        ("not a uri", "sip:lab.test", False),
        ("tel:+1234", "tel:+1234", True),
    ],
)
def test_digest_uri_is_compared_with_the_request_uri(
    digest_uri: str, request_uri: str, match: bool
) -> None:
    assert digest_uri_matches(digest_uri, parse_uri(request_uri)) is match


def test_own_realm_proxy_credentials_are_consumed_others_kept() -> None:
    ours = 'Digest username="a", realm="lab.test", nonce="n", uri="sip:b@lab.test", response="r"'
    theirs = 'Digest username="a", realm="carrier", nonce="n", uri="sip:b@lab.test", response="r"'
    invite = request(
        "INVITE",
        to_tag=None,
        extra=f"Proxy-Authorization: {ours}\r\nProxy-Authorization: {theirs}\r\n",
    )
    EdgePolicy.consume_credentials(invite, "lab.test")
    assert invite.headers.get_all("Proxy-Authorization") == [theirs]


def test_repr_hides_the_secret() -> None:
    assert "sss" not in repr(policy())
