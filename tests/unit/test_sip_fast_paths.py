"""The parser's fast paths agree with the general ones, on the same inputs.

Fast paths: ``parse_via`` building from a ``VIA_SHAPE`` match (and the parser caching
that top Via), ``parse_name_addr`` building from a ``SIP_NAME_ADDR`` match (and the
parser keeping the match of From, To and a lone Contact), ``parse_checked_params``
splitting shape-checked parameters, the parse caches (SIP URIs, CSeq). The written
constructors of the frozen values are held to their fields in test_frozen.py.
Inputs: the header values of the torture corpora (RFC 4475, RFC 5118, a sample
of PROTOS c07-sip) and generated ones.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.errors import SipParseError
from sipwake.sip.grammar import parse_checked_params, parse_params, split_commas
from sipwake.sip.headers import (
    SIP_NAME_ADDR,
    VIA_SHAPE,
    CSeq,
    _parse_name_addr,
    _parse_via,
    parse_name_addr,
    parse_via,
)
from sipwake.sip.message import Headers, Request
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer, mark_received, response_peer
from sipwake.sip.uri import _SIP_URI_RE, SipUri, _split_params, parse_uri
from tests.unit import protos

_HEADER_LINE = re.compile(rb"^([A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.M)
_VIA_NAMES = {b"via", b"v"}
_ADDR_NAMES = {b"from", b"f", b"to", b"t", b"contact", b"m", b"route", b"record-route"}


def _corpus_messages(corpora: pathlib.Path) -> list[bytes]:
    paths = sorted((corpora / "rfc4475").glob("*.sip"))
    paths += sorted((corpora / "rfc5118" / "wire").glob("*.sip"))
    out = [p.read_bytes() for p in paths]
    for path in sorted((corpora / "protos-c07-sip" / "cases").iterdir())[::4]:
        raw = path.read_bytes()
        length = int(raw[: raw.index(b" ")])  # the case's INVITE (the teardown follows)
        data = raw[raw.index(b" ") + 1 :][:length]
        data = protos.fill(data).replace(b"<Content-Length>", b"0")
        out.append(data.replace(b"Content-Length: 0", b""))
    return out


def _values(corpora: pathlib.Path, names: set[bytes]) -> list[str]:
    """Every comma element of the named header lines, parsed message or not."""
    out: list[str] = []
    for data in _corpus_messages(corpora):
        for name, value in _HEADER_LINE.findall(data):
            if name.lower() in names:
                out += split_commas(value.decode("utf-8", "surrogateescape"))
    return out


def _same(a: object, b: object) -> None:
    assert a == b
    assert repr(a) == repr(b)
    assert str(a) == str(b)
    assert hash(a) == hash(b)


def _check_via(value: str) -> None:
    """parse_via (fast when VIA_SHAPE matches) and the general path give the same Via
    or the same error."""
    try:
        general = _parse_via(value, "Via #1")
    except SipParseError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert VIA_SHAPE.fullmatch(value) is None
        with pytest.raises(SipParseError) as fast_exc:
            parse_via(value, "Via #1")
        assert fast_exc.value.reason == reason
        return
    _same(parse_via(value, "Via #1"), general)
    m = VIA_SHAPE.fullmatch(value)
    if m is not None:
        assert parse_checked_params(m.group(4)) == parse_params(value, m.start(4), "Via")


def test_via_fast_path_agrees_on_corpora(corpora: pathlib.Path) -> None:
    values = _values(corpora, _VIA_NAMES)
    assert len(values) > 1000
    shaped = 0
    for value in values:
        _check_via(value)
        shaped += VIA_SHAPE.fullmatch(value) is not None
    assert shaped > 500


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport",
        "sip / 2.0 / tcp host.example ; branch = z9hG4bK2 ; received=[::1]",
        'SIP/2.0/UDP h;x="a;b=c";branch=z9hG4bK3',
        "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bK4;maddr=[2001:db8::9:255]",
        "SIP/2.0/UDP h:65535",
        "SIP/2.0/UDP h:65536",
        "SIP/2.0/UDP h;a=[::1]x",
        "SIP/2.0/UDP h;;branch=x",
        "SIP/2.0/UDP h ",
        "SIP/2.0/UDP h;branch=x\t",
    ],
)
def test_via_fast_path_agrees_on_odd_values(value: str) -> None:
    _check_via(value)


_VIA_ALPHABET = st.sampled_from(list('abSIP/2.0 UDP;:=[]"\t-_.!~1'))


@settings(max_examples=800, deadline=None)
@given(st.lists(_VIA_ALPHABET, max_size=30).map(lambda s: "SIP/2.0/UDP h" + "".join(s)))
def test_via_fast_path_agrees_on_generated_values(value: str) -> None:
    _check_via(value)


def test_parser_caches_the_top_via_it_checked(corpora: pathlib.Path) -> None:
    """The top Via built while parsing equals the one parsed from the header text."""
    checked = 0
    for data in _corpus_messages(corpora):
        try:
            msg = parse_message(data)
        except SipParseError:
            continue
        raw = msg.headers.get("via")
        assert raw is not None
        _same(msg.top_via, _parse_via(split_commas(raw)[0], "Via #1"))
        assert msg.top_via == msg.via[0]
        checked += 1
    assert checked > 500


def _check_name_addr(value: str) -> None:
    """parse_name_addr (fast when SIP_NAME_ADDR matches) and the general path give the
    same NameAddr, URI included, or the same error."""
    try:
        general = _parse_name_addr(value, "To")
    except SipParseError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert SIP_NAME_ADDR.fullmatch(value) is None
        with pytest.raises(SipParseError) as fast_exc:
            parse_name_addr(value, "To")
        assert fast_exc.value.reason == reason
        return
    fast = parse_name_addr(value, "To")
    _same(fast, general)
    _same(fast.uri, general.uri)
    if isinstance(fast.uri, SipUri):
        assert isinstance(general.uri, SipUri)
        assert fast.uri._text == general.uri._text


def test_name_addr_fast_path_agrees_on_corpora(corpora: pathlib.Path) -> None:
    values = _values(corpora, _ADDR_NAMES)
    assert len(values) > 1000
    shaped = 0
    for value in values:
        _check_name_addr(value)
        shaped += SIP_NAME_ADDR.fullmatch(value) is not None
    assert shaped > 500


@pytest.mark.parametrize(
    "value",
    [
        "<sip:u1@127.0.0.1:5070;pn-provider=apns;pn-prid=00ab>;expires=600",
        '"Alice \\"A\\"" <sips:alice:pw@Example.COM;Transport=TCP?Subject=x&y=>;tag=1',
        "Bob  Smith\t<sip:bob@[2001:db8::1]:5061>",
        '<sip:a@h> ; tag = x ; q="0.5"',
        "<SIP:a@h;lr>",
        "< sip:a@h>",
        "<sip:a@h>;;tag=x",
        "<sip:a@h",
        "<sip:a@h:65536>",
        "sip:a@h;tag=x",
        "<tel:+1-555>;tag=t",
        '"unterminated <sip:a@h>',
    ],
)
def test_name_addr_fast_path_agrees_on_odd_values(value: str) -> None:
    _check_name_addr(value)


_NAME_ADDR_ALPHABET = st.sampled_from(list('ab <sip:@>;=?&"\\\t-.%41[]:'))


@settings(max_examples=800, deadline=None)
@given(st.lists(_NAME_ADDR_ALPHABET, max_size=30).map("".join))
def test_name_addr_fast_path_agrees_on_generated_values(value: str) -> None:
    _check_name_addr(value)


def test_parser_keeps_the_name_addr_matches_it_checked(corpora: pathlib.Path) -> None:
    """From, To and a lone Contact built from the parser's match equal those parsed from
    the header text; several Contacts are all parsed from the text."""
    kept = 0
    for data in _corpus_messages(corpora):
        try:
            msg = parse_message(data)
        except SipParseError:
            continue
        cache = msg.headers._cache
        kept += "to#m" in cache
        for name, value in (("From", msg.from_), ("To", msg.to)):
            text = msg.headers.get_all(name)[0]
            assert (f"{name.lower()}#m" in cache) == (SIP_NAME_ADDR.fullmatch(text) is not None)
            _same(value, _parse_name_addr(text, name))
        try:
            general = [
                _parse_name_addr(v, "Contact") for v in msg.headers.values("contact") if v != "*"
            ]
        except SipParseError:
            continue
        contacts = msg.contacts
        if contacts is not None:
            assert len(contacts) == len(general)
            for a, b in zip(contacts, general, strict=True):
                _same(a, b)
    assert kept > 500


def test_changing_a_header_drops_its_kept_match() -> None:
    msg = parse_message(
        b"REGISTER sip:lab.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@lab.test>;tag=1\r\nTo: <sip:a@lab.test>\r\nCall-ID: c\r\n"
        b"CSeq: 1 REGISTER\r\nContact: <sip:a@127.0.0.1:5070>\r\n\r\n"
    )
    msg.headers.set("To", "<sip:b@lab.test>")
    msg.headers.set("From", "<sip:c@lab.test>;tag=2")
    msg.headers.add("Contact", "<sip:a@127.0.0.2>")
    assert str(msg.to.uri) == "sip:b@lab.test"
    assert msg.from_.tag == "2"
    assert [str(c.uri) for c in msg.contacts or []] == ["sip:a@127.0.0.1:5070", "sip:a@127.0.0.2"]


def test_two_contact_lines_are_not_read_from_one_match() -> None:
    msg = parse_message(
        b"REGISTER sip:lab.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@lab.test>;tag=1\r\nTo: <sip:a@lab.test>\r\nCall-ID: c\r\n"
        b"CSeq: 1 REGISTER\r\nContact: <sip:a@127.0.0.1:5070>\r\n"
        b"Contact: <sip:a@127.0.0.2>;expires=0\r\n\r\n"
    )
    assert "contact#m" not in msg.headers._cache
    assert [c.param("expires") for c in msg.contacts or []] == [None, "0"]


def _old_sip_uri(text: str) -> SipUri:
    """A SipUri built field by field from the URI regex, as the parser first did."""
    m = _SIP_URI_RE.fullmatch(text)
    assert m is not None
    headers = m.group("headers")
    return SipUri(
        scheme=m.group("scheme"),
        user=m.group("user"),
        password=m.group("password"),
        host=m.group("host"),
        port=int(m.group("port")) if m.group("port") else None,
        params=_split_params(m.group("params")),
        headers=tuple((n, v) for n, _, v in (h.partition("=") for h in headers.split("&")))
        if headers
        else (),
        _text=text,
    )


def test_sip_uri_cache_and_constructor_agree_on_corpora(corpora: pathlib.Path) -> None:
    seen = 0
    for value in _values(corpora, _ADDR_NAMES):
        try:
            addr = parse_name_addr(value, "To")
        except SipParseError:
            continue
        if isinstance(addr.uri, SipUri):
            text = str(addr.uri)
            _same(parse_uri(text), _old_sip_uri(text))
            assert parse_uri(text) is parse_uri(text)  # cached
            seen += 1
    assert seen > 500


def test_sip_uri_errors_name_where_whether_cached_or_not() -> None:
    for _ in range(2):
        with pytest.raises(SipParseError, match=r"^Contact #2: malformed SIP URI 'sip:a@'$"):
            parse_uri("sip:a@", "Contact #2")
    with pytest.raises(SipParseError, match=r"^To: malformed SIP URI 'sip:a@'$"):
        parse_uri("sip:a@", "To")


def test_sip_uri_copies_agree_with_replace() -> None:
    uri = parse_uri("sip:Alice:pw@Example.COM:5070;Transport=TCP;lr;pn-prid=ab?Subject=x&y=")
    assert isinstance(uri, SipUri)
    _same(uri.compact(), uri.replace())
    assert uri.compact()._text == ""
    _same(
        uri.with_param("transport", "udp"),
        uri.replace(params=((("lr", None)), ("pn-prid", "ab"), ("transport", "udp"))),
    )
    _same(uri.without_params("LR", "pn-prid"), uri.replace(params=(("Transport", "TCP"),)))


def test_via_with_params_replaces_case_insensitively_and_appends_in_order() -> None:
    via = parse_via("SIP/2.0/UDP h;RPORT;branch=z9hG4bK1;Received=x")
    marked = via.with_params(received="1.2.3.4", rport="5070")
    assert marked.params == (("branch", "z9hG4bK1"), ("received", "1.2.3.4"), ("rport", "5070"))
    assert str(marked) == "SIP/2.0/UDP h;branch=z9hG4bK1;received=1.2.3.4;rport=5070"


def _marked_by_with_params(via: str, source: Peer) -> str:
    top = parse_via(via)
    if top.wants_rport:
        return str(top.with_params(received=source.host, rport=str(source.port)))
    return str(top.with_params(received=source.host))


def _check_mark_received(via: str) -> None:
    """``mark_received`` writes the Via that ``with_params`` builds (RFC 3581 §4)."""
    source = Peer(transport="udp", host="192.0.2.9", port=40000)
    request = parse_message(
        (
            f"OPTIONS sip:h SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@h>;tag=1\r\n"
            "To: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    mark_received(request, source)
    expected = _marked_by_with_params(via, source)
    assert request.headers.get("Via") == expected
    assert str(request.top_via) == expected


def test_mark_received_agrees_with_with_params_on_corpora(corpora: pathlib.Path) -> None:
    checked = 0
    for value in _values(corpora, _VIA_NAMES):
        try:
            parse_via(value)
        except SipParseError:
            continue
        if "," in value:
            continue  # one via-parm per test message
        _check_mark_received(value)
        checked += 1
    assert checked > 500


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport",
        "SIP/2.0/UDP h;RPORT;branch=z9hG4bK1;Received=x",
        "SIP/2.0/UDP h;rport=9;branch=z9hG4bK1;received=x;rport",
        "SIP/2.0/UDP h;branch=z9hG4bK1",
        "SIP/2.0/UDP h",
    ],
)
def test_mark_received_agrees_with_with_params(via: str) -> None:
    _check_mark_received(via)


def test_cseq_cache_keeps_values_and_errors() -> None:
    data = (
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 7 OPTIONS\r\n\r\n"
    )
    for _ in range(2):
        assert parse_message(data).cseq == CSeq(seq=7, method="OPTIONS")
        with pytest.raises(SipParseError, match="CSeq: expected '<number> <method>'"):
            parse_message(data.replace(b"7 OPTIONS", b"x OPTIONS"))


@pytest.mark.parametrize(
    ("source", "via"),
    [
        (Peer(transport="udp", host="10.0.0.1", port=5070), "SIP/2.0/UDP h:5060;rport"),
        (Peer(transport="udp", host="10.0.0.1", port=5070, flow=3), "SIP/2.0/UDP h;rport"),
        (Peer(transport="udp", host="10.0.0.1", port=5070), "SIP/2.0/UDP h:5080"),
        (Peer(transport="udp", host="10.0.0.1", port=5070), "SIP/2.0/UDP h;maddr=[::1]"),
        (Peer(transport="tcp", host="10.0.0.1", port=5070, flow=1), "SIP/2.0/TCP h;rport"),
    ],
)
def test_response_peer_values(source: Peer, via: str) -> None:
    expected = {
        "SIP/2.0/UDP h:5060;rport": Peer(transport="udp", host="10.0.0.1", port=5070),
        "SIP/2.0/UDP h;rport": Peer(transport="udp", host="10.0.0.1", port=5070),
        "SIP/2.0/UDP h:5080": Peer(transport="udp", host="10.0.0.1", port=5080),
        "SIP/2.0/UDP h;maddr=[::1]": Peer(transport="udp", host="::1", port=5060),
        "SIP/2.0/TCP h;rport": source,
    }[via]
    _same(response_peer(parse_via(via), source), expected)


# -- the Headers index -----------------------------------------------------------

_NAMES = ["Via", "v", "VIA", "Route", "route", "Contact", "m", "X-Thing", "x-thing", "To"]
_HEADER_VALUES = ["a", "b, c", "<sip:r@h;lr>, <sip:s@h>", "d", '"x, y" <sip:q@h>']
_OPS = st.tuples(
    st.sampled_from(["add", "insert", "set", "remove", "pop", "replace", "copy", "read"]),
    st.sampled_from(_NAMES),
    st.sampled_from(_HEADER_VALUES),
)


def _lookups(headers: Headers) -> list[object]:
    return [
        (name in headers, headers.get(name), headers.get_all(name), headers.values(name))
        for name in _NAMES
    ]


@settings(max_examples=400, deadline=None)
@given(st.lists(_OPS, max_size=25))
def test_headers_index_follows_every_change(ops: list[tuple[str, str, str]]) -> None:
    """After any sequence of changes, lookups agree with a Headers built afresh from the
    same fields (whose index is built from the list)."""
    headers = Headers([("Via", "SIP/2.0/UDP h"), ("To", "<sip:t@h>"), ("Route", "<sip:r@h>")])
    for op, name, value in ops:
        if op == "add":
            headers.add(name, value)
        elif op == "insert":
            headers.insert(name, value)
        elif op == "set":
            headers.set(name, value)
        elif op == "remove":
            headers.remove(name)
        elif op == "pop":
            headers.pop_first_value(name)
        elif op == "replace":
            if name in headers:
                headers.replace_first_value(name, value)
        elif op == "copy":
            headers = headers.copy()
        else:
            _lookups(headers)  # builds the index, which the next changes must keep
        assert _lookups(headers) == _lookups(Headers(list(headers)))
    assert 3 not in headers  # type: ignore[operator]
