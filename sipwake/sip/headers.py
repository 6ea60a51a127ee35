"""Typed header values: Via, name-addr (From/To/Contact/Route…), CSeq and friends.

Each ``parse_*`` takes one header value (already unfolded, one element of a
comma list) and returns a frozen value or raises ``SipParseError`` saying
what was expected where. ``str(value)`` serialises it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipwake.errors import SipParseError, cut
from sipwake.frozen import interpreted_init
from sipwake.sip.grammar import (
    HOST,
    LWS,
    PARAMS,
    PORT,
    QUOTED_STRING,
    TOKEN,
    Params,
    find_param,
    format_params,
    parse_checked_params,
    parse_params,
    quote,
    unquote,
)
from sipwake.sip.uri import (
    OTHER_ADDR_SPEC,
    OTHER_URI,
    SIP_ADDR_SPEC,
    SIP_URI,
    SIP_URI_PARTS,
    SipUri,
    Uri,
    parse_uri,
    sip_uri_from_parts,
)

__all__ = [
    "CSeq",
    "NameAddr",
    "Via",
    "name_addr_from_match",
    "parse_cseq",
    "parse_name_addr",
    "parse_uint",
    "parse_via",
]

MAX_CSEQ = 2**32 - 1

_VIA_RE = re.compile(
    rf"({TOKEN}){LWS}/{LWS}({TOKEN}){LWS}/{LWS}({TOKEN})[ \t]+({HOST})(?:{LWS}:{LWS}(\d{{1,5}}))?"
)
#: Whole-value shapes, checked with one C-level match when a message is parsed;
#: the typed values are built only when asked for (and must agree: a property
#: test holds ``parse_*`` to never fail on a value these accept). VIA_SHAPE's
#: groups (transport, host, port, parameters) let ``parse_via`` build from its match.
VIA_SHAPE = re.compile(
    rf"[ \t]*[Ss][Ii][Pp]{LWS}/{LWS}2\.0{LWS}/{LWS}({TOKEN})[ \t]+({HOST})"
    rf"(?:{LWS}:{LWS}({PORT}))?({PARAMS})"
)
NAME_ADDR_SHAPE = re.compile(
    rf"[ \t]*(?:(?:{QUOTED_STRING}{LWS}|{TOKEN}(?:[ \t]+{TOKEN})*+{LWS})?"
    rf"<(?:{SIP_URI}|{OTHER_URI})>"
    rf"|(?:{SIP_ADDR_SPEC}|{OTHER_ADDR_SPEC})){PARAMS}"
)
#: The usual name-addr, ``[display-name] <sip:…> *(;param)``, in groups that build it from
#: the one match that also checks it (``name_addr_from_match``): quoted display name, token
#: display name, the URI's text, its seven parts (``SIP_URI_PARTS``), the parameters.
SIP_NAME_ADDR = re.compile(
    rf"[ \t]*(?:({QUOTED_STRING}){LWS}|({TOKEN}(?:[ \t]+{TOKEN})*+){LWS})?"
    rf"<({SIP_URI_PARTS})>({PARAMS})"
)
_CSEQ_RE = re.compile(rf"(\d{{1,20}})[ \t]+({TOKEN})")
_DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN}(?:[ \t]+{TOKEN})*")
_QUOTED_RE = re.compile(QUOTED_STRING)
_ADDR_SPEC_END_RE = re.compile(r"[ \t]*;")


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    def __init__(
        self, *, transport: str, host: str, port: int | None = None, params: Params = ()
    ) -> None:
        self.transport = transport  # type: ignore[misc]
        self.host = host  # type: ignore[misc]
        self.port = port  # type: ignore[misc]
        self.params = params  # type: ignore[misc]

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value filled in by a server, if any."""
        value = self.param("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return self.has_param("rport")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    def with_params(self, **values: str | None) -> Via:
        """A copy with parameters set; ``rport=None`` keeps a valueless flag."""
        names = {k.lower() for k in values}
        params = [p for p in self.params if p[0].lower() not in names]
        params += values.items()
        return Via(transport=self.transport, host=self.host, port=self.port, params=tuple(params))

    def received_from(self, host: str, port: int) -> Via:
        """RFC 3261 §18.2.1 and RFC 3581 §4: a copy with ``received=host``, and
        ``rport=port`` when the client asked for it. What ``with_params(received=…[,
        rport=…])`` builds, in one pass over the parameters: every request received
        goes through it."""
        params: list[tuple[str, str | None]] = []
        wants_rport = False
        for param in self.params:
            name = param[0].lower()
            if name == "rport":
                wants_rport = True
            elif name != "received":
                params.append(param)
        params.append(("received", host))
        if wants_rport:
            params.append(("rport", str(port)))
        return Via(transport=self.transport, host=self.host, port=self.port, params=tuple(params))


interpreted_init(Via)


def check_via(value: str, where: str) -> None:
    """Raise ``SipParseError`` unless ``value`` is a well-formed via-parm (fast)."""
    if VIA_SHAPE.fullmatch(value) is None:
        parse_via(value, where)  # raises, naming what is wrong
        raise SipParseError(f"{where}: malformed value {cut(value)!r}")


def check_name_addr(value: str, where: str) -> None:
    """Raise ``SipParseError`` unless ``value`` is a well-formed name-addr/addr-spec (fast)."""
    if NAME_ADDR_SHAPE.fullmatch(value) is None:
        parse_name_addr(value, where)  # raises, naming what is wrong
        raise SipParseError(f"{where}: malformed value {cut(value)!r}")


def parse_via(value: str, where: str = "Via") -> Via:
    """Parse one via-parm."""
    m = VIA_SHAPE.fullmatch(value)
    if m is not None:
        return via_from_shape(m)
    return _parse_via(value, where)


def via_from_shape(m: re.Match[str]) -> Via:
    """The Via a ``VIA_SHAPE`` match spells (what ``_parse_via`` returns for that value)."""
    transport, host, port, params = m.groups()
    return Via(
        transport=transport.upper(),
        host=host,
        port=int(port) if port else None,
        params=parse_checked_params(params),
    )


def _parse_via(value: str, where: str) -> Via:
    """The general path: any value, and the error that says what is wrong with it."""
    m = _VIA_RE.match(value.lstrip(" \t"))
    if m is None:
        raise SipParseError(f"{where}: expected 'SIP/2.0/<transport> host', got {cut(value)!r}")
    name, version, transport = m.group(1), m.group(2), m.group(3)
    if name.upper() != "SIP" or version != "2.0":
        raise SipParseError(
            f"{where}: expected 'SIP/2.0/<transport>', got {cut(f'{name}/{version}/{transport}')!r}"
        )
    port = int(m.group(5)) if m.group(5) else None
    if port is not None and port > 65535:
        raise SipParseError(f"{where}: port {port} out of range")
    params = parse_params(value.lstrip(" \t"), m.end(), where)
    return Via(transport=transport.upper(), host=m.group(4), port=port, params=params)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class NameAddr:
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 §20.10)."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    def __init__(self, *, uri: Uri, display_name: str | None = None, params: Params = ()) -> None:
        self.uri = uri  # type: ignore[misc]
        self.display_name = display_name  # type: ignore[misc]
        self.params = params  # type: ignore[misc]

    def __str__(self) -> str:
        name = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    @property
    def sip_uri(self) -> SipUri | None:
        return self.uri if isinstance(self.uri, SipUri) else None

    def with_param(self, name: str, value: str | None) -> NameAddr:
        kept = tuple(p for p in self.params if p[0].lower() != name.lower())
        return NameAddr(uri=self.uri, display_name=self.display_name, params=(*kept, (name, value)))


interpreted_init(NameAddr)


def parse_name_addr(value: str, where: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters."""
    m = SIP_NAME_ADDR.fullmatch(value)
    if m is not None:
        return name_addr_from_match(m)
    return _parse_name_addr(value, where)


def name_addr_from_match(m: re.Match[str]) -> NameAddr:
    """The NameAddr a ``SIP_NAME_ADDR`` match spells (what ``_parse_name_addr`` returns
    for that value)."""
    quoted, tokens, text, scheme, user, password, host, port, uparams, uheaders, params = m.groups()
    uri = sip_uri_from_parts(scheme, user, password, host, port, uparams, uheaders, text)
    display = unquote(quoted) if quoted is not None else tokens
    return NameAddr(uri=uri, display_name=display, params=parse_checked_params(params))


def _parse_name_addr(value: str, where: str) -> NameAddr:
    """The general path: any value, and the error that says what is wrong with it."""
    text = value.strip(" \t")
    if not text:
        raise SipParseError(f"{where}: empty value")
    display: str | None = None
    if text[0] == '"':
        m = _QUOTED_RE.match(text)
        if m is None:
            raise SipParseError(f"{where}: unterminated quoted display name in {cut(text)!r}")
        display = unquote(m.group(0))
        rest = text[m.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError(f"{where}: expected '<' after display name in {cut(text)!r}")
        return _bracketed(text, len(text) - len(rest), display, where)
    lt = text.find("<")
    if lt >= 0:
        prefix = text[:lt].strip(" \t")
        if prefix:
            if _DISPLAY_TOKENS_RE.fullmatch(prefix) is None:
                raise SipParseError(
                    f"{where}: display name must be tokens or quoted, got {cut(prefix)!r}"
                )
            display = prefix
        return _bracketed(text, lt, display, where)
    # addr-spec: URI up to the first ';' (what follows are header parameters).
    m = _ADDR_SPEC_END_RE.search(text)
    uri_text = text if m is None else text[: m.start()]
    if any(c in uri_text for c in " \t,?"):
        raise SipParseError(f"{where}: URI with ',', '?' or spaces must be in <>: {cut(text)!r}")
    uri = parse_uri(uri_text, where)
    params = parse_params(text, m.start(), where) if m is not None else ()
    return NameAddr(uri=uri, params=params)


def _bracketed(text: str, lt: int, display: str | None, where: str) -> NameAddr:
    gt = text.find(">", lt)
    if gt < 0:
        raise SipParseError(f"{where}: missing '>' in {cut(text)!r}")
    uri_text = text[lt + 1 : gt]
    if uri_text != uri_text.strip(" \t"):
        raise SipParseError(f"{where}: spaces inside <> in {cut(text)!r}")
    uri = parse_uri(uri_text, where)
    params = parse_params(text, gt + 1, where)
    return NameAddr(uri=uri, display_name=display, params=params)


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str, where: str = "CSeq") -> CSeq:
    m = _CSEQ_RE.fullmatch(value.strip())
    if m is None:
        raise SipParseError(f"{where}: expected '<number> <method>', got {cut(value)!r}")
    seq = int(m.group(1))
    if seq > MAX_CSEQ:
        raise SipParseError(f"{where}: sequence number {cut(m.group(1))} exceeds 2**32-1")
    return CSeq(seq=seq, method=m.group(2))


def parse_uint(value: str, where: str, *, limit: int = MAX_CSEQ) -> int:
    """A non-negative decimal header value (Max-Forwards, Content-Length, Expires…)."""
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"{where}: expected a non-negative number, got {cut(text)!r}")
    number = int(text) if len(text) < 20 else limit + 1
    if number > limit:
        raise SipParseError(f"{where}: value {cut(text)} exceeds {limit}")
    return number


def contact_expires(contact: NameAddr, default: int) -> int:
    """A Contact's ``expires`` parameter; absent or out-of-range gives ``default``."""
    raw = contact.param("expires")
    if raw is None or not raw.isdigit():
        return default
    return int(raw) if len(raw) < 11 and int(raw) <= MAX_CSEQ else default


def contact_q(contact: NameAddr) -> float:
    """A Contact's ``q`` (0..1, default 1.0)."""
    raw = contact.param("q")
    try:
        q = float(raw) if raw is not None else 1.0
    except ValueError:
        return 1.0
    return min(max(q, 0.0), 1.0)


def contact_instance(contact: NameAddr) -> str | None:
    """The ``+sip.instance`` value without quotes and angle brackets (RFC 5626)."""
    raw = contact.param("+sip.instance")
    if raw is None:
        return None
    text = unquote(raw)
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text
