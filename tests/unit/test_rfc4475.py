"""RFC 4475 (and RFC 5118) torture messages, read from ../shared/corpora.

Each message gets a test named ``test_rfc4475_<name>``: valid messages parse,
serialise and re-parse to the same bytes, and the point the RFC makes about
each one is checked; invalid ones raise ``SipParseError`` with a reason.
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Callable

import pytest

from sipwake.errors import SipParseError
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message
from sipwake.sip.uri import AbsoluteUri, SipUri

CORPORA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpora"

#: Invalid per INDEX.tsv but where the RFC lets a parser accept: RFC 4475 §3.1.2.12
#: "it is better to ignore the Date header field if it is not needed".
TOLERATED = {"baddate"}


def _index(corpus: str) -> list[dict[str, str]]:
    path = CORPORA / corpus / "INDEX.tsv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _load(corpus: str, name: str) -> bytes:
    base = CORPORA / corpus
    if corpus == "rfc5118":
        # wire/ mends the archive's framing defects (documented in its README) so the
        # IPv6 handling is what is tested.
        return (base / "wire" / f"{name}.sip").read_bytes()
    return (base / f"{name}.sip").read_bytes()


def _req(msg: Request | Response) -> Request:
    assert isinstance(msg, Request)
    return msg


def _check_wsinv(m: Request | Response) -> None:
    r = _req(m)
    assert r.max_forwards == 68
    assert r.cseq.seq == 9
    assert r.cseq.method == "INVITE"
    assert [v.transport for v in r.via] == ["UDP", "TCP", "UDP"]
    assert r.via[1].branch == "z9hG4bK9ikj8"
    assert r.to.tag == "1918181833n"
    assert r.from_.display_name == 'J Rosenberg \\"'
    assert r.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert r.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    contacts = r.contacts
    assert contacts is not None
    assert contacts[0].param("q") == "0.33"


def _check_intmeth(m: Request | Response) -> None:
    r = _req(m)
    assert r.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(r.uri, SipUri)
    assert r.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert r.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert r.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"


def _check_esc01(m: Request | Response) -> None:
    r = _req(m)
    to_uri = r.to.uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.equivalent(SipUri(user="user", host="example.com"))
    contacts = r.contacts
    assert contacts is not None
    contact = contacts[0].uri
    assert isinstance(contact, SipUri)
    assert contact.equivalent(
        SipUri(
            user="caller", host="host5.example.net", params=(("lr", None), ("name", "value%2541"))
        )
    )
    assert not contact.equivalent(
        SipUri(user="caller", host="host5.example.net", params=(("lr", None), ("name", "valueA")))
    )


def _check_escnull(m: Request | Response) -> None:
    r = _req(m)
    contacts = r.contacts
    assert contacts is not None
    assert len(contacts) == 2
    a, b = (c.uri for c in contacts)
    assert isinstance(a, SipUri)
    assert isinstance(b, SipUri)
    assert not a.equivalent(b)
    to_uri = r.to.uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.aor() == "sip:null-\x00-null@example.com"


def _check_esc02(m: Request | Response) -> None:
    r = _req(m)
    assert r.method == "RE%47IST%45R"
    assert r.method != "REGISTER"
    contacts = r.contacts
    assert contacts is not None
    assert len(contacts) == 2
    assert r.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def _check_lwsdisp(m: Request | Response) -> None:
    assert _req(m).from_.display_name == "caller"


def _check_dblreq(m: Request | Response) -> None:
    r = _req(m)
    assert r.method == "REGISTER"
    assert r.body == b""


def _check_semiuri(m: Request | Response) -> None:
    r = _req(m)
    assert isinstance(r.uri, SipUri)
    assert r.uri.user == "user;par=u%40example.net"
    assert r.uri.host == "example.com"
    assert r.uri.params == ()


def _check_transports(m: Request | Response) -> None:
    assert [v.transport for v in _req(m).via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _check_mpart01(m: Request | Response) -> None:
    r = _req(m)
    assert len(r.body) == r.content_length
    assert b"\x00" in r.body or b"\n" in r.body


def _check_unreason(m: Request | Response) -> None:
    assert isinstance(m, Response)
    assert m.status == 200
    assert "\u2014" in m.reason or any(ord(c) > 127 for c in m.reason)


def _check_noreason(m: Request | Response) -> None:
    assert isinstance(m, Response)
    assert m.status == 100
    assert m.reason == ""


def _check_unksm2(m: Request | Response) -> None:
    r = _req(m)
    assert isinstance(r.to.uri, AbsoluteUri)
    assert r.to.uri.scheme == "isbn"


def _check_unkscm(m: Request | Response) -> None:
    assert isinstance(_req(m).uri, AbsoluteUri)


def _check_cparam01(m: Request | Response) -> None:
    contacts = _req(m).contacts
    assert contacts is not None
    c = contacts[0]
    assert c.has_param("unknownparam")
    assert isinstance(c.uri, SipUri)
    assert not c.uri.has_param("unknownparam")


def _check_cparam02(m: Request | Response) -> None:
    contacts = _req(m).contacts
    assert contacts is not None
    c = contacts[0]
    assert not c.has_param("unknownparam")
    assert isinstance(c.uri, SipUri)
    assert c.uri.has_param("unknownparam")


def _check_regescrt(m: Request | Response) -> None:
    contacts = _req(m).contacts
    assert contacts is not None
    uri = contacts[0].uri
    assert isinstance(uri, SipUri)
    assert uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def _check_inv2543(m: Request | Response) -> None:
    r = _req(m)
    assert r.max_forwards is None
    assert r.top_via.branch is None
    assert r.body.startswith(b"v=0")


def _check_zeromf(m: Request | Response) -> None:
    assert _req(m).max_forwards == 0


def _check_badbranch(m: Request | Response) -> None:
    assert _req(m).top_via.branch == "z9hG4bK"


def _check_longreq(m: Request | Response) -> None:
    r = _req(m)
    assert len(r.via) >= 30
    assert len(r.call_id) > 100


def _check_ipv6_good(m: Request | Response) -> None:
    r = _req(m)
    assert isinstance(r.uri, SipUri)
    assert r.uri.host == "[2001:db8::10]"
    assert r.top_via.host == "[2001:db8::9:1]"


def _check_port_ambiguous(m: Request | Response) -> None:
    r = _req(m)
    assert isinstance(r.uri, SipUri)
    assert r.uri.host == "[2001:db8::10:5070]"
    assert r.uri.port is None


def _check_port_unambiguous(m: Request | Response) -> None:
    r = _req(m)
    assert isinstance(r.uri, SipUri)
    assert r.uri.host == "[2001:db8::10]"
    assert r.uri.port == 5070


def _check_received_delim(m: Request | Response) -> None:
    assert _req(m).top_via.received == "[2001:db8::9:255]"


def _check_received_nodelim(m: Request | Response) -> None:
    assert _req(m).top_via.received == "2001:db8::9:255"


CHECKS: dict[str, Callable[[Request | Response], None]] = {
    "wsinv": _check_wsinv,
    "intmeth": _check_intmeth,
    "esc01": _check_esc01,
    "escnull": _check_escnull,
    "esc02": _check_esc02,
    "lwsdisp": _check_lwsdisp,
    "longreq": _check_longreq,
    "dblreq": _check_dblreq,
    "semiuri": _check_semiuri,
    "transports": _check_transports,
    "mpart01": _check_mpart01,
    "unreason": _check_unreason,
    "noreason": _check_noreason,
    "unksm2": _check_unksm2,
    "unkscm": _check_unkscm,
    "cparam01": _check_cparam01,
    "cparam02": _check_cparam02,
    "regescrt": _check_regescrt,
    "inv2543": _check_inv2543,
    "zeromf": _check_zeromf,
    "badbranch": _check_badbranch,
    "ipv6-good": _check_ipv6_good,
    "port-ambiguous": _check_port_ambiguous,
    "port-unambiguous": _check_port_unambiguous,
    "via-received-param-with-delim": _check_received_delim,
    "via-received-param-no-delim": _check_received_nodelim,
}

#: Status a server answers for these invalid requests (RFC 4475 §3.1.2.14 and others).
STATUS = {"badvers": 505}


def _make_test(corpus: str, row: dict[str, str]) -> Callable[[], None]:
    name = row["name"]

    def test() -> None:
        if not CORPORA.is_dir():
            pytest.skip(f"corpora not found at {CORPORA} (shared/ must sit beside the clone)")
        data = _load(corpus, name)
        if row["expected"] == "valid" or name in TOLERATED:
            msg = parse_message(data)
            wire = msg.to_bytes()
            again = parse_message(wire)
            assert again.to_bytes() == wire
            if name in CHECKS:
                CHECKS[name](msg)
        else:
            with pytest.raises(SipParseError) as info:
                parse_message(data)
            assert info.value.reason
            assert info.value.status_hint == STATUS.get(name, 400)

    test.__doc__ = row["action"]
    return test


for _corpus in ("rfc4475", "rfc5118"):
    for _row in _index(_corpus):
        _fn = f"test_{_corpus}_{_row['name'].replace('-', '_')}"
        globals()[_fn] = _make_test(_corpus, _row)
        globals()[_fn].__name__ = _fn


def test_corpora_present_or_skipped() -> None:
    if not CORPORA.is_dir():
        pytest.skip(f"corpora not found at {CORPORA}")
    assert len(_index("rfc4475")) == 50
    assert len(_index("rfc5118")) == 12


def test_rfc5118_archive_framing_defects_are_reported(corpora: pathlib.Path) -> None:
    """The raw §4.10 archive files lack the empty line ending the headers: a clear error."""
    data = (corpora / "rfc5118" / "ipv6-correct-abnf-2-colons.sip").read_bytes()
    with pytest.raises(SipParseError, match="not terminated"):
        parse_message(data)
