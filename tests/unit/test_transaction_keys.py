"""``top_branch``: its one-regex fast path agrees with ``parse_via`` on every Via value.

The fast path may only take values on which ``parse_via`` succeeds and finds the same
branch; every other value must reach ``Message.top_via`` (same branch, same error).
"""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.errors import SipParseError
from sipwake.sip.grammar import TOKEN_CHARS
from sipwake.sip.message import Headers, Response
from sipwake.transaction.keys import _PLAIN_VIA, top_branch
from tests.unit import protos

PLAIN = [
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport",
    "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-inv-7;rport=5080;received=127.0.0.1",
    "SIP/2.0/TCP proxy.example.com;branch=z9hG4bK776asdhds",
    "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKx;received=2001:db8::1",
    "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKabc;rport;alias",
    "SIP/2.0/UDP 10.0.0.1:65535;branch=1234",  # RFC 2543: no magic cookie
]
NOT_PLAIN = [
    "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-1",  # the branch is not first
    "SIP/2.0/UDP 127.0.0.1:5060 ;branch=z9hG4bK-1",
    "SIP/2.0/UDP 127.0.0.1:5060;branch = z9hG4bK-1",
    "SIP/2.0/UDP 127.0.0.1:5060;Branch=z9hG4bK-1",
    "sip/2.0/UDP 127.0.0.1;branch=z9hG4bK-1",
    "SIP / 2.0 / UDP 127.0.0.1;branch=z9hG4bK-1",
    "  SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1 ",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1;received=[2001:db8::1]",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1;x=[2001:db8::1]y",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK:1",
    'SIP/2.0/UDP 127.0.0.1;branch="z9hG4bK-1"',
    "SIP/2.0/UDP 127.0.0.1;branch=",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1;;rport",
    "SIP/2.0/UDP 127.0.0.1:65536;branch=z9hG4bK-1",
    "SIP/2.0/UDP 127.0.0.1:123456;branch=z9hG4bK-1",
    "SIP/2.0/UDP 127.0.0.1:5060",
    "SIP/2.0/UDP 127.0.0.1;branch=a, SIP/2.0/UDP 10.0.0.1;branch=b",
    "SIP/3.0/UDP 127.0.0.1;branch=z9hG4bK-1",
    "SIP/2.0/UDP;branch=z9hG4bK-1",
    "",
]


def general(value: str) -> str | None:
    """The branch the general path finds: ``Message.top_via`` alone."""
    return response(value).top_via.branch


def response(value: str) -> Response:
    return Response(200, headers=Headers([("Via", value), ("CSeq", "1 INVITE")]))


def agree(value: str) -> None:
    """``top_branch`` gives what the general path gives, or raises what it raises."""
    try:
        expected: str | SipParseError | None = general(value)
    except SipParseError as exc:
        expected = exc
    if _PLAIN_VIA.fullmatch(value) is not None:
        assert not isinstance(expected, SipParseError), value
    if isinstance(expected, SipParseError):
        with pytest.raises(SipParseError) as raised:
            top_branch(response(value))
        assert raised.value.reason == expected.reason, value
    else:
        assert top_branch(response(value)) == expected, value


@pytest.mark.parametrize("value", PLAIN)
def test_plain_vias_take_the_fast_path(value: str) -> None:
    assert _PLAIN_VIA.fullmatch(value) is not None
    agree(value)


@pytest.mark.parametrize("value", NOT_PLAIN)
def test_other_vias_take_the_general_path(value: str) -> None:
    assert _PLAIN_VIA.fullmatch(value) is None
    agree(value)


def test_missing_via_is_the_general_error() -> None:
    with pytest.raises(SipParseError, match="missing Via header"):
        top_branch(Response(200, headers=Headers([("CSeq", "1 INVITE")])))


def test_a_cached_top_via_is_not_needed() -> None:
    """The fast path reads the raw value; the typed Via stays unparsed until asked for."""
    message = response(PLAIN[1])
    assert top_branch(message) == "z9hG4bK-inv-7"
    assert message.top_via.received == "127.0.0.1"


_PIECES = [
    "SIP/2.0/",
    "UDP",
    "tls",
    " ",
    "\t",
    "127.0.0.1",
    "[2001:db8::1]",
    "[::1",
    "host-a.example",
    ":",
    "5060",
    "65536",
    ";",
    "branch",
    "Branch",
    "=",
    "z9hG4bK",
    "-1.x",
    "rport",
    "received",
    '"q"',
    ",",
    "/",
    "[",
    "]",
    "%",
    "é",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_pieced_vias_agree(pieces: list[str]) -> None:
    agree("".join(pieces))


@settings(max_examples=500, deadline=None)
@given(
    transport=st.text(alphabet=TOKEN_CHARS.replace("\\", ""), min_size=1, max_size=4),
    host=st.sampled_from(["127.0.0.1", "[2001:db8::1]", "a.example", "_x", "-bad", "[::"]),
    port=st.one_of(st.none(), st.integers(min_value=0, max_value=999_999)),
    branch=st.text(alphabet=TOKEN_CHARS.replace("\\", "") + ':[]/"', max_size=8),
    params=st.lists(
        st.tuples(
            st.text(alphabet="abcrRpo-", min_size=0, max_size=4),
            st.one_of(st.none(), st.text(alphabet='ab1.:[]/"-', max_size=6)),
        ),
        max_size=3,
    ),
)
def test_structured_vias_agree(
    transport: str,
    host: str,
    port: int | None,
    branch: str,
    params: list[tuple[str, str | None]],
) -> None:
    rest = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
    hostport = host if port is None else f"{host}:{port}"
    agree(f"SIP/2.0/{transport} {hostport};branch={branch}{rest}")


_VIA_LINE = re.compile(rb"^(?:via|v)[ \t]*:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


def test_corpora_vias_agree(corpora: pathlib.Path) -> None:
    """Every Via line of the RFC 4475/5118 torture messages and the PROTOS cases."""
    paths = [
        *(corpora / "rfc4475").glob("*.sip"),
        *(corpora / "rfc5118").glob("*.sip"),
        *(corpora / "protos-c07-sip" / "cases").iterdir(),
    ]
    values = set()
    for path in paths:
        for line in _VIA_LINE.findall(protos.fill(path.read_bytes())):
            values.add(line.decode("utf-8", "replace"))
    assert len(values) > 1000
    fast = 0
    for value in sorted(values):
        agree(value)
        fast += _PLAIN_VIA.fullmatch(value) is not None
    assert fast > 50
