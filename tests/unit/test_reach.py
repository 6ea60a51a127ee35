"""Where a UDP binding is reached: its Contact, or the REGISTER's source (NAT, outbound).

Rules from RFC 3261 §10.2/§16.5 (the Contact; third-party registration), RFC 5626 §5
(outbound: the flow), and the NAT tests of Kamailio's ``nat_uac_test`` (Via sent-by
against the packet's source; private Contact address from a public source).
"""

from __future__ import annotations

import pytest

from sipwake.registrar.bindings import Binding
from sipwake.registrar.reach import behind_nat, is_private
from sipwake.sip.headers import Via
from sipwake.sip.parser import parse_uri
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri
from sipwake.store.codec import decode, encode
from tests.unit.wakelab import UDP, open_node

SOURCE = Peer(transport="udp", host="203.0.113.7", port=6300)


def _via(sent_by: str) -> Via:
    host, _, port = sent_by.rpartition(":") if sent_by.count(":") == 1 else (sent_by, "", "")
    return Via(transport="UDP", host=host, port=int(port) if port else None)


def _contact(text: str) -> SipUri:
    uri = parse_uri(text, "contact")
    assert isinstance(uri, SipUri)
    return uri


@pytest.mark.parametrize(
    ("via", "contact", "nat", "why"),
    [
        ("203.0.113.7:6300", "sip:bob@203.0.113.7:6300", False, "contact is the source"),
        ("203.0.113.7:6300", "sip:bob@203.0.113.7:6200", False, "third party: other port"),
        ("203.0.113.7:6300", "sip:bob@198.51.100.9:5060", False, "third party: other host"),
        ("192.168.1.23:5060", "sip:bob@192.168.1.23:5060", True, "Via names a private address"),
        ("203.0.113.7:5060", "sip:bob@203.0.113.7:5060", True, "port rewritten by the NAT"),
        ("203.0.113.7", "sip:bob@203.0.113.7", True, "no port: 5060, not the source's 6300"),
        ("203.0.113.7:6300", "sip:bob@10.0.0.5:5060", True, "private contact, public source"),
        ("203.0.113.7:6300", "sip:bob@100.64.3.3:5060", True, "RFC 6598 shared space"),
        ("phone.example.test:6300", "sip:bob@203.0.113.7:6300", True, "name is not the source"),
    ],
)
def test_behind_nat(via: str, contact: str, nat: bool, why: str) -> None:
    assert behind_nat(_via(via), SOURCE, _contact(contact)) is nat, why


def test_private_source_and_private_contact_is_a_lan_not_a_nat() -> None:
    lan = Peer(transport="udp", host="192.168.1.50", port=5060)
    assert not behind_nat(_via("192.168.1.50:5060"), lan, _contact("sip:bob@192.168.1.60:5062"))


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.0.1", True),
        ("100.64.0.1", True),
        ("169.254.1.1", True),
        ("127.0.0.1", False),
        ("8.8.8.8", False),
        ("[fd00::1]", True),
        ("fe80::1", True),
        ("2001:db8::1", False),
        ("lab.test", False),
    ],
)
def test_is_private(host: str, private: bool) -> None:
    assert is_private(host) is private


def _register(node: object, data: str, source: Peer) -> None:
    from sipwake.node import Node, PersistChanges

    assert isinstance(node, Node)
    out = node.receive(data.encode(), source, UDP, 1.0)
    for item in out:
        if isinstance(item, PersistChanges) and item.token is not None:
            node.changes_stored(item.token, True, 1.0)


def _register_text(via: str, contact: str, extra: str = "") -> str:
    return (
        "REGISTER sip:lab.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bKreach{abs(hash((via, contact)))};rport\r\n"
        "From: <sip:bob@lab.test>;tag=r1\r\nTo: <sip:bob@lab.test>\r\n"
        f"Call-ID: reach-{abs(hash(contact))}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <{contact}>{extra}\r\n"
        + ("Supported: outbound\r\n" if extra else "")
        + "Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("via", "contact", "extra", "expected"),
    [
        ("127.0.0.1:6300", "sip:bob@127.0.0.1:6200", "", ("127.0.0.1", 6200)),
        ("192.168.1.23:5060", "sip:bob@192.168.1.23:5060", "", ("127.0.0.1", 6300)),
        (
            "127.0.0.1:6300",
            "sip:bob@127.0.0.1:6200",
            ';reg-id=1;+sip.instance="<urn:uuid:00000000-0000-4000-8000-000000000001>"',
            ("127.0.0.1", 6300),
        ),
        ("127.0.0.1:6300", "sip:bob@phone.example.test:6200", "", ("127.0.0.1", 6300)),
    ],
    ids=["third-party", "nat", "outbound", "unresolvable-contact"],
)
def test_node_forks_to_the_contact_or_the_source(
    via: str, contact: str, extra: str, expected: tuple[str, int]
) -> None:
    node = open_node(UDP)
    source = Peer(transport="udp", host="127.0.0.1", port=6300)
    _register(node, _register_text(via, contact, extra), source)
    (target,) = node._targets("sip:bob@lab.test", 2.0)
    assert (target.peer.host, target.peer.port) == expected


def test_nat_flag_survives_the_store() -> None:
    binding = Binding(
        binding_id="b1",
        aor="sip:bob@lab.test",
        contact=_contact("sip:bob@192.168.1.23:5060"),
        expires_at=600.0,
        registered_at=0.0,
        call_id="c",
        cseq=1,
        source=SOURCE,
        nat=True,
    )
    assert decode(encode(binding, 0.0, 1_000.0), 0.0, 1_000.0).nat is True
    plain = decode(encode(Binding(**{**_fields(binding), "nat": False}), 0.0, 1e3), 0.0, 1e3)
    assert plain.nat is False


def _fields(binding: Binding) -> dict[str, object]:
    return {name: getattr(binding, name) for name in Binding.__slots__}  # type: ignore[attr-defined]
