"""Which URIs name the proxy itself (RFC 3261 §16.4): pre-loaded Routes from softphones."""

from __future__ import annotations

import pytest

from sipwake.node import Node, PersistChanges, SendBytes
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri, parse_uri
from tests.unit.wakelab import open_node

UDP = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
TCP = LocalAddress(transport="tcp", host="127.0.0.1", port=5060)
TLS = LocalAddress(transport="tls", host="127.0.0.1", port=5061)
#: As ``sipwake serve`` builds it: the domain, ``localhost`` and every listener.
LAB = Locality(domain="lab.test", aliases=frozenset({"localhost"}), listeners=(UDP, TCP, TLS))


def _uri(text: str) -> SipUri:
    uri = parse_uri(text, "test")
    assert isinstance(uri, SipUri)
    return uri


@pytest.mark.parametrize(
    "route",
    [
        "sip:127.0.0.1:5060;lr",  # a listener, as a Record-Route or an outbound proxy
        "sip:127.0.0.1;lr",  # the default port
        "sip:127.0.0.1:5060;transport=udp;lr",  # Linphone writes the transport
        "sips:127.0.0.1:5061;lr",
        "sip:localhost:5060;transport=udp;lr",  # an outbound proxy typed "localhost:5060"
        "sip:LOCALHOST;lr",
        "sip:lab.test:5060;lr",  # the domain on a listener's port
        "sip:lab.test;lr",
    ],
)
def test_a_route_naming_one_of_our_names_and_ports_is_us(route: str) -> None:
    assert LAB.is_us(_uri(route))


@pytest.mark.parametrize(
    "uri",
    [
        "sip:127.0.0.1:5070;lr",  # another server on this host (a phone, another proxy)
        "sip:localhost:5070;lr",
        "sip:lab.test:5080;lr",
        "sip:10.0.0.1:5060;lr",  # another host on our port
        "sip:example.com;lr",
        "sip:alice@lab.test",  # an AOR of ours is not the proxy itself
        "sip:alice@localhost:5060",
    ],
)
def test_other_ports_hosts_and_users_are_not_us(uri: str) -> None:
    assert not LAB.is_us(_uri(uri))


PHONE_ALICE = Peer(transport="udp", host="127.0.0.1", port=5070)
PHONE_BOB = Peer(transport="udp", host="127.0.0.1", port=5090)


def _responses(outputs: list[object]) -> list[Response]:
    messages = [parse_message(o.data) for o in outputs if isinstance(o, SendBytes)]
    return [m for m in messages if isinstance(m, Response)]


def _register_bob(node: Node) -> None:
    register = (
        b"REGISTER sip:lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKreg1;rport\r\n"
        b"From: <sip:bob@lab.test>;tag=b\r\nTo: <sip:bob@lab.test>\r\n"
        b"Call-ID: routing-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:5090>\r\n"
        b"Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = node.receive(register, PHONE_BOB, UDP, 0.0)
    token = next(o.token for o in out if isinstance(o, PersistChanges))
    assert token is not None
    assert [r.status for r in _responses(node.changes_stored(token, True, 0.0))] == [200]


@pytest.mark.parametrize(
    "route", ["<sip:localhost:5060;transport=udp;lr>", "<sip:127.0.0.1:5060;transport=udp;lr>"]
)
def test_an_invite_pre_routed_through_us_by_name_reaches_the_callee(route: str) -> None:
    """A softphone whose outbound proxy is ``localhost:5060`` calls ``sip:bob@lab.test``:
    the Route names us, so it is removed and the call goes to bob's contact, not 403
    (Relaying denied) as for a Route to somebody else."""
    node = open_node(UDP, aliases=frozenset({"localhost"}))
    _register_bob(node)
    invite = (
        b"INVITE sip:bob@lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1;rport\r\n"
        b"Route: " + route.encode() + b"\r\n"
        b"From: <sip:alice@lab.test>;tag=a1\r\nTo: <sip:bob@lab.test>\r\n"
        b"Call-ID: routing-call\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = node.receive(invite, PHONE_ALICE, UDP, 1.0)
    assert [r.status for r in _responses(out)] == [100]
    (forwarded,) = [o.data for o in out if isinstance(o, SendBytes) and o.peer == PHONE_BOB]
    request = parse_message(forwarded)
    assert isinstance(request, Request)
    assert str(request.uri) == "sip:bob@127.0.0.1:5090"
    assert request.routes == []  # our own Route is gone
    record_route = request.headers.get("Record-Route") or ""
    assert record_route.startswith("<sip:127.0.0.1:5060;lr")  # and the edge policy's token


def test_a_route_to_another_port_on_localhost_is_still_relaying() -> None:
    """The other side of the rule: a Route to a server we are not is not followed for an
    outsider's request (no open relay through a name of ours on another port)."""
    node = open_node(UDP, aliases=frozenset({"localhost"}))
    _register_bob(node)
    invite = (
        b"INVITE sip:bob@lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv2;rport\r\n"
        b"Route: <sip:localhost:5999;lr>\r\n"
        b"From: <sip:alice@lab.test>;tag=a2\r\nTo: <sip:bob@lab.test>\r\n"
        b"Call-ID: routing-relay\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = node.receive(invite, PHONE_ALICE, UDP, 1.0)
    assert [r.status for r in _responses(out)] == [403]
    assert not [o for o in out if isinstance(o, SendBytes) and o.peer == PHONE_BOB]
