"""Parser contract and details: bytes parse or raise SipParseError, never anything else."""

from __future__ import annotations

import contextlib
import pathlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwake.errors import SipParseError
from sipwake.sip.framing import PING, PONG, StreamFramer
from sipwake.sip.headers import (
    check_name_addr,
    check_via,
    parse_name_addr,
    parse_via,
)
from sipwake.sip.message import Headers, Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.uri import SipUri, TelUri, parse_uri
from tests.unit import protos

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKreg1\r\n"
    b"f: <sip:alice@example.com>;tag=a1\r\n"
    b"t: <sip:alice@example.com>\r\n"
    b"i: reg-1\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"m: <sip:alice@[2001:db8::1]:5070;transport=tcp;pn-provider=apns;"
    b'pn-param=ABCD1234.com.example.app.voip;pn-prid=00fc13adff78>;+sip.instance="<urn:uuid:1>";'
    b"reg-id=1;expires=600\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


def test_parses_typical_invite() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert str(msg.uri) == "sip:bob@biloxi.example.com"
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.wants_rport
    assert msg.top_via.rport is None
    assert msg.top_via.sent_by == ("pc33.atlanta.example.com", 5060)
    assert msg.from_.tag == "1928301774"
    assert msg.from_.display_name == "Alice"
    assert msg.to.tag is None
    assert msg.cseq.seq == 314159
    assert msg.max_forwards == 70
    assert msg.body == b"v=0\n"
    assert msg.to_bytes() == INVITE


def test_compact_forms_and_ipv6_register() -> None:
    msg = parse_message(REGISTER)
    assert msg.call_id == "reg-1"
    assert msg.top_via.host == "[2001:db8::1]"
    assert msg.top_via.port == 5070
    contacts = msg.contacts
    assert contacts is not None
    uri = contacts[0].uri
    assert isinstance(uri, SipUri)
    assert uri.port == 5070
    assert uri.transport == "tcp"
    assert contacts[0].param("expires") == "600"
    assert msg.headers.get("Contact") == msg.headers.get("m")
    assert msg.to_bytes() == REGISTER


def test_bare_lf_line_endings_are_accepted() -> None:
    msg = parse_message(INVITE.replace(b"\r\n", b"\n"))
    assert msg.cseq.method == "INVITE"


def test_leading_crlf_is_skipped() -> None:
    assert isinstance(parse_message(b"\r\n\r\n" + INVITE), Request)


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ((b"SIP/2.0\r\nVia", b"SIP/2.1\r\nVia"), "version"),
        ((b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"), "Via #1: expected 'SIP/2.0/<transport>'"),
        ((b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "differs from request method"),
        ((b"CSeq: 314159", b"CSeq: x314159"), "CSeq"),
        ((b"Content-Length: 4", b"Content-Length: 40"), "exceeds"),
        ((b"Max-Forwards: 70", b"Max-Forwards: seventy"), "Max-Forwards"),
        ((b"Call-ID: a84b", b"Call-ID: a8 4b"), "Call-ID"),
        ((b"To: Bob <sip:bob@biloxi", b"To: Bob <sip:bob@bi>loxi"), "To"),
        ((b"Contact: <sip:alice", b"Contact: <sip:al ice"), "Contact"),
        ((b"From: Alice <", b'From: "Alice <'), "From"),
    ],
)
def test_bad_requests_say_what_is_wrong(mutation: tuple[bytes, bytes], reason: str) -> None:
    data = INVITE.replace(*mutation)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert reason in info.value.reason
    assert len(info.value.reason) < 200


def test_version_error_hints_505() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/2.1\r\nVia"))
    assert info.value.status_hint == 505


def test_parse_error_keeps_partial_message_for_a_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"))
    partial = info.value.partial
    assert isinstance(partial, Request)
    response = make_response(partial, 400, info.value.reason, to_tag="t1")
    assert response.headers.get("Via") == partial.headers.get("Via")
    assert response.to.tag == "t1"


def test_oversized_message_is_refused() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE, max_size=100)
    assert info.value.status_hint == 513


def test_make_response_copies_headers_in_order() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="xyz")
    assert resp.start_line() == "SIP/2.0 180 Ringing"
    assert [n for n, _ in resp.headers] == [
        "Via",
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "Content-Length",
    ]
    assert resp.to.tag == "xyz"
    again = parse_message(resp.to_bytes())
    assert isinstance(again, Response)
    assert again.status == 180


def test_headers_mutation_drops_cached_values() -> None:
    msg = parse_message(INVITE)
    assert msg.max_forwards == 70
    msg.headers.set("Max-Forwards", "69")
    assert msg.max_forwards == 69
    msg.headers.insert("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1")
    assert msg.top_via.host == "proxy.example.com"
    assert msg.headers.pop_first_value("Via") == "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1"
    assert msg.top_via.host == "pc33.atlanta.example.com"


def test_headers_values_split_top_level_commas_only() -> None:
    h = Headers([("Contact", '"A, B" <sip:a@x;p=1>, <sip:b@y>'), ("Allow", "INVITE, ACK")])
    assert h.values("m") == ['"A, B" <sip:a@x;p=1>', "<sip:b@y>"]
    assert h.values("allow") == ["INVITE", "ACK"]
    h2 = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"')])
    assert h2.values("www-authenticate") == ['Digest realm="a", nonce="b"']


# -- URIs -----------------------------------------------------------------------


def test_sip_uri_fields_and_serialisation() -> None:
    uri = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&X=1")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5061,
    )
    assert uri.transport == "tcp"
    assert uri.has_param("lr")
    assert uri.headers == (("Subject", "hi"), ("X", "1"))
    rebuilt = uri.replace(port=5062)
    assert str(rebuilt) == "sips:alice:secret@[2001:db8::1]:5062;transport=tcp;lr?Subject=hi&X=1"


def test_uri_comparison_rfc3261_19_1_4() -> None:
    def eq(a: str, b: str) -> bool:
        ua, ub = parse_uri(a), parse_uri(b)
        assert isinstance(ua, SipUri)
        return ua.equivalent(ub)

    assert eq("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp")
    assert eq("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5")
    assert eq(
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    )
    assert not eq("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP")
    assert not eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060")
    assert not eq("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp")
    assert eq("sip:carol@chicago.com", "sip:carol@chicago.com;security=on")


def test_tel_and_other_schemes() -> None:
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, TelUri)
    assert tel.number == "+1-201-555-0123"
    assert str(parse_uri("urn:service:sos")) == "urn:service:sos"
    with pytest.raises(SipParseError):
        parse_uri("no-scheme-here")
    with pytest.raises(SipParseError):
        parse_uri("sip:2001:db8::10")


def test_name_addr_forms() -> None:
    a = parse_name_addr('"Alice \\"A\\"" <sip:alice@x.com>;tag=1', "From")
    assert a.display_name == 'Alice "A"'
    assert a.tag == "1"
    b = parse_name_addr("sip:bob@y.com;tag=2", "To")
    assert b.display_name is None
    assert b.tag == "2"
    assert isinstance(b.uri, SipUri)
    assert b.uri.params == ()
    c = parse_name_addr("Bob Smith <sip:bob@y.com;transport=tcp>", "To")
    assert c.display_name == "Bob Smith"
    assert str(c) == '"Bob Smith" <sip:bob@y.com;transport=tcp>'


# -- the parser's contract --------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([INVITE, REGISTER]),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=800), st.binary(min_size=0, max_size=4)),
        min_size=1,
        max_size=6,
    ),
)
def test_mutations_raise_only_sip_parse_error(base: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(base)
    for pos, chunk in edits:
        pos %= len(data) + 1
        data[pos : pos + len(chunk)] = chunk
    try:
        msg = parse_message(bytes(data))
    except SipParseError as exc:
        reason = exc.reason
        assert reason
        return
    # What parses must serialise stably, and every typed view must agree with validation.
    wire = msg.to_bytes()
    assert parse_message(wire).to_bytes() == wire
    _ = (msg.via, msg.from_, msg.to, msg.cseq, msg.contacts, msg.max_forwards)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


_VALUE_ALPHABET = st.sampled_from(list('abcSIP/2.0 UDP;:=<>"@,?[]\\%41\t-_.!~*sip:tel:+1'))


@settings(max_examples=600, deadline=None)
@given(st.lists(_VALUE_ALPHABET, max_size=40).map("".join))
def test_name_addr_shape_check_agrees_with_parser(value: str) -> None:
    try:
        check_name_addr(value, "To")
    except SipParseError:
        return
    parse_name_addr(value, "To")  # must not raise once the shape check passed


@settings(max_examples=600, deadline=None)
@given(st.lists(_VALUE_ALPHABET, max_size=40).map(lambda s: "SIP/2.0/UDP " + "".join(s)))
def test_via_shape_check_agrees_with_parser(value: str) -> None:
    try:
        check_via(value, "Via")
    except SipParseError:
        return
    parse_via(value, "Via")


# -- PROTOS c07-sip ----------------------------------------------------------


def _protos_messages(raw: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(raw):
        space = raw.index(b" ", pos)
        length = int(raw[pos:space])
        out.append(raw[space + 1 : space + 1 + length])
        pos = space + 1 + length
    return out


def _fill(template: bytes) -> bytes:
    template = protos.fill(template)
    head, sep, body = template.partition(b"\n\n")
    if not sep:
        head, sep, body = template.partition(b"\r\n\r\n")
    return (head + sep + body).replace(b"<Content-Length>", str(len(body)).encode())


def test_protos_c07_sip_never_crashes_the_parser(corpora: pathlib.Path) -> None:
    cases = sorted((corpora / "protos-c07-sip" / "cases").iterdir())
    assert len(cases) == 4527
    parsed = rejected = 0
    for path in cases:
        for message in _protos_messages(path.read_bytes()):
            data = _fill(message)
            try:
                parse_message(data)
                parsed += 1
            except SipParseError:
                rejected += 1
    assert parsed + rejected == 2 * len(cases)
    assert rejected > 500  # the malformed groups are refused …
    assert parsed > 4000  # … and the valid case and its tolerable variants are not


def test_protos_valid_reference_case_parses(corpora: pathlib.Path) -> None:
    invite, teardown = _protos_messages(
        (corpora / "protos-c07-sip" / "cases" / "0000000").read_bytes()
    )
    msg = parse_message(_fill(invite))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(parse_message(_fill(teardown)), Request)


# -- stream framing ------------------------------------------------------------


def test_framer_splits_stream_and_keepalives() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + REGISTER + b"\r\n"
    out: list[object] = []
    for i in range(0, len(stream), 7):
        out += framer.feed(stream[i : i + 7])
    assert out[0] is PING
    assert out[1] == INVITE
    assert out[2] == REGISTER
    assert out[3] is PONG
    assert framer.pending == 0


def test_framer_rejects_bad_content_length_and_oversize() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: -4"))
    with pytest.raises(SipParseError, match="exceeds"):
        StreamFramer(max_header=64).feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 40)
    with pytest.raises(SipParseError, match="exceeds"):
        StreamFramer(max_body=10).feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 400"))


def test_stream_message_without_content_length_has_no_body() -> None:
    data = re.sub(rb"Content-Length: 4\r\n", b"", INVITE)
    msg = parse_message(data, stream=True)
    assert msg.body == b""
