"""Bytes to messages (RFC 3261 §7, §18.3): the parser's contract is h11's.

``parse_message(data)`` either returns a ``Request``/``Response`` or raises
``SipParseError`` with a reason fit for a 400 reason phrase — never anything
else, whatever the bytes (a hypothesis test holds it to that).

Tolerances, each from RFC 4475/5118: leading CRLFs are skipped (§7.5), header
lines may end in bare LF, folded lines are joined with one space, any
whitespace may surround the ``:``. Strictness: exactly one SP between the
request-line elements (RFC 4475 §3.1.2.9/10), version ``SIP/2.0`` (505
otherwise), header names must be tokens, and the headers every request needs
(Via, From, To, Call-ID, CSeq) must be present once and well-formed, with the
CSeq method equal to the request method. A datagram whose Content-Length
exceeds the bytes that follow is rejected (§3.1.2.2); extra octets after the
body are ignored (§3.1.1.8). Without Content-Length a datagram's body runs to
its end (RFC 2543 style, §3.4.1) and a stream message has no body.
"""

from __future__ import annotations

import functools
import re

from sipwake.errors import SipParseError, cut
from sipwake.sip.grammar import TOKEN, split_commas
from sipwake.sip.headers import (
    NAME_ADDR_SHAPE,
    SIP_NAME_ADDR,
    VIA_SHAPE,
    check_name_addr,
    check_via,
    parse_cseq,
    parse_uint,
    via_from_shape,
)
from sipwake.sip.message import Headers, Message, Request, Response, canonical_name
from sipwake.sip.uri import AbsoluteUri, SipUri, Uri, parse_uri

__all__ = ["DEFAULT_MAX_SIZE", "parse_message", "validate"]

#: Largest message accepted by default (UDP datagram limit; RFC 3261 §18.1.1).
DEFAULT_MAX_SIZE = 65535

_REQUEST_LINE_RE = re.compile(rf"({TOKEN}) ([^ \t]+) SIP/(\d+\.\d+)")
_REQUEST_LINE_LOOSE_RE = re.compile(rf"({TOKEN})[ \t]+(.*?)[ \t]+([A-Za-z0-9]+/[^ \t]*)[ \t]*")
_STATUS_LINE_RE = re.compile(r"SIP/(\d+\.\d+) (\d{3}) ([^\r\n]*)")
_HEADER_NAME_RE = re.compile(TOKEN)

#: Headers every request must carry once besides Via (RFC 3261 §8.1.1); Max-Forwards
#: is optional for RFC 2543 peers (RFC 4475 §3.4.1).
_REQUIRED = ("from", "to", "call-id", "cseq")


def parse_message(
    data: bytes, *, stream: bool = False, max_size: int = DEFAULT_MAX_SIZE
) -> Request | Response:
    """Parse one message; ``stream`` frames it as read from TCP/TLS (no body without
    Content-Length) rather than as a datagram."""
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit", 513)
    start = 0
    while data.startswith((b"\r\n", b"\n"), start):
        start += 2 if data[start] == 13 else 1
    end = data.find(b"\r\n\r\n", start)
    lf_end = data.find(b"\n\n", start, end) if end >= 0 else data.find(b"\n\n", start)
    if end < 0 or 0 <= lf_end < end:
        if lf_end < 0:
            if start >= len(data):
                raise SipParseError("empty message")
            raise SipParseError("header section not terminated by an empty line")
        end, sep = lf_end, 2
    else:
        sep = 4
    head = data[start:end].decode("utf-8", "surrogateescape")
    rest = data[end + sep :]
    lines = head.split("\r\n")
    if head.count("\n") != len(lines) - 1:
        lines = [line.rstrip("\r") for line in head.split("\n")]
    headers = _fast_fields(lines) if "\n " not in head and "\n\t" not in head else None
    if headers is None:
        headers = _header_fields(lines)
    try:
        message = _start_line(lines[0], headers)
    except SipParseError as exc:
        raise SipParseError(exc.reason, exc.status_hint, partial=_loose(lines[0], headers)) from exc
    length = _check(message)
    if length is None:
        message.body = b"" if stream else rest
    elif length > len(rest):
        raise SipParseError(
            f"Content-Length {length} exceeds the {len(rest)} body bytes received", partial=message
        )
    else:
        message.body = rest[:length] if length < len(rest) else rest
    return message


#: CSeq values repeat ("1 REGISTER", "2 BYE"…) and CSeq is a frozen value; errors are not cached.
_cseq = functools.lru_cache(maxsize=1024)(parse_cseq)


@functools.lru_cache(maxsize=4096)
def _request_uri(text: str) -> Uri:
    """Request-URIs repeat (every REGISTER names the domain, every call to a user the same
    AOR) and URIs are frozen values: parse each spelling once. Errors are not cached."""
    return parse_uri(text, "Request-URI")


def _loose(line: str, headers: Headers) -> Request | None:
    """A stand-in request for answering one whose start line is refused (e.g. 505)."""
    m = _REQUEST_LINE_LOOSE_RE.fullmatch(line)
    if m is None or line.startswith("SIP/"):
        return None
    return Request(m.group(1), AbsoluteUri(scheme="invalid", rest="uri"), headers)


def _start_line(line: str, headers: Headers) -> Request | Response:
    if line.startswith("SIP/"):
        m = _STATUS_LINE_RE.fullmatch(line)
        if m is None:
            raise SipParseError(
                f"status line: expected 'SIP/2.0 <code> <reason>', got {cut(line)!r}"
            )
        version, code, reason = m.groups()
        if version != "2.0":
            raise SipParseError(f"status line: version SIP/{version} not supported", 505)
        status = int(code)
        if status < 100 or status > 699:
            raise SipParseError(f"status line: code {status} outside 100-699")
        return Response(status, reason, headers)
    m = _REQUEST_LINE_RE.fullmatch(line)
    if m is None:
        loose = _REQUEST_LINE_LOOSE_RE.fullmatch(line)
        if loose is not None and loose.group(3).upper().startswith("SIP/"):
            version = loose.group(3)
            if version.upper() != "SIP/2.0":
                raise SipParseError(f"request line: version {cut(version)} not supported", 505)
        raise SipParseError(
            f"request line: expected '<method> <uri> SIP/2.0' with single spaces, got {cut(line)!r}"
        )
    method, uri_text, version = m.groups()
    if version != "2.0":
        raise SipParseError(f"request line: version SIP/{version} not supported", 505)
    uri = _request_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError("Request-URI: a SIP Request-URI must not carry headers ('?')")
    return Request(method, uri, headers)


#: Raw header name → canonical key, for names already checked to be tokens.
_KEYS: dict[str, str] = {}
_KEYS_LIMIT = 4096


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        if _HEADER_NAME_RE.fullmatch(name) is None:
            raise SipParseError(f"header name {cut(name)!r} is not a token")
        key = canonical_name(name)
        if len(_KEYS) < _KEYS_LIMIT:
            _KEYS[name] = key
            _COLON_KEYS[name + ":"] = key
    return key


#: The same, keyed by ``name:`` so that one lookup also proves the colon was there.
_COLON_KEYS: dict[str, str] = {}


def _fast_fields(lines: list[str]) -> Headers | None:
    """Header fields when no line is folded and every name was seen before (the usual
    case); None sends the message through ``_header_fields``, which explains errors."""
    keys = _COLON_KEYS
    try:
        fields = [
            (name, value.strip(" \t"), keys[name + colon])
            for line in lines[1:]
            for name, colon, value in (line.partition(":"),)
        ]
    except KeyError:
        return None
    return Headers._from_keyed(fields)


def _header_fields(lines: list[str]) -> Headers:
    fields: list[tuple[str, str, str]] = []
    append = fields.append
    for line in lines[1:]:
        if line and line[0] in " \t":
            if not fields:
                raise SipParseError("header section starts with a continuation line")
            name, value, key = fields[-1]
            more = line.strip(" \t")
            fields[-1] = (name, f"{value} {more}" if value and more else value or more, key)
            continue
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise SipParseError(f"header line without ':' or name: {cut(line)!r}")
        if name[-1] in " \t":
            name = name.rstrip(" \t")
        append((name, value.strip(" \t"), _KEYS.get(name) or _key(name)))
    return Headers._from_keyed(fields)


def validate(message: Message) -> None:
    """Check the headers SIP processing depends on; raise ``SipParseError`` if one is bad.

    ``parse_message`` does this already; call it on a message built by hand.
    """
    _check(message)


_NAME_ADDR_KEYS = {
    "from": "From",
    "to": "To",
    "contact": "Contact",
    "route": "Route",
    "record-route": "Record-Route",
}


def _check(message: Message) -> int | None:
    """Validate in one pass over the fields; cache the typed values it had to read.

    Returns the Content-Length (None if absent).
    """
    try:
        return _check_fields(message)
    except SipParseError as exc:
        if exc.partial is None:
            raise SipParseError(exc.reason, exc.status_hint, partial=message) from exc
        raise


#: Where ``_check_fields`` keeps the ``SIP_NAME_ADDR`` match of a From, To or lone Contact
#: (``Message.from_``, ``.to`` and ``.contacts`` build from it).
_MATCH_KEYS = {"from": "from#m", "to": "to#m"}

_VIA, _FROM_TO, _ADDR_LIST, _CSEQ, _CALL_ID, _MAX_FORWARDS, _CONTENT_LENGTH = range(7)
_ROLES = {
    "via": _VIA,
    "from": _FROM_TO,
    "to": _FROM_TO,
    "contact": _ADDR_LIST,
    "route": _ADDR_LIST,
    "record-route": _ADDR_LIST,
    "cseq": _CSEQ,
    "call-id": _CALL_ID,
    "max-forwards": _MAX_FORWARDS,
    "content-length": _CONTENT_LENGTH,
}


def _check_fields(message: Message) -> int | None:
    headers = message.headers
    cache = headers._cache
    via_shape = VIA_SHAPE.fullmatch
    sip_name_addr = SIP_NAME_ADDR.fullmatch
    name_addr_shape = NAME_ADDR_SHAPE.fullmatch
    seen: set[str] = set()  # the fields that must appear at most once
    length: int | None = None
    conflict = False
    vias = 0
    contacts = 0
    for _, value, key in headers._fields:
        role = _ROLES.get(key)
        if role is None:
            continue
        if role == _VIA:
            for part in split_commas(value) if "," in value else (value,):
                vias += 1
                m = via_shape(part)
                if m is None:
                    check_via(part, f"Via #{vias}")
                elif vias == 1:  # every message's top Via is read: build it from the match
                    cache["via#0"] = via_from_shape(m)
        elif role == _ADDR_LIST:
            if "," in value:
                for part in split_commas(value):
                    check_name_addr(part, _NAME_ADDR_KEYS[key])
                if key == "contact":
                    contacts += 2
                continue
            m = sip_name_addr(value)
            if (
                m is None
                and name_addr_shape(value) is None
                and not (key == "contact" and value == "*")
            ):
                check_name_addr(value, _NAME_ADDR_KEYS[key])
            if key == "contact":  # a REGISTER's or a dialog's one Contact: kept to build
                contacts += 1
                if m is not None:
                    cache["contact#m"] = m
        elif role == _CONTENT_LENGTH:
            number = parse_uint(value, "Content-Length")
            conflict = conflict or (length is not None and number != length)
            length = number
        else:
            if key in seen:
                raise SipParseError(f"{_NAMES.get(key, key)}: header appears more than once")
            seen.add(key)
            if role == _FROM_TO:
                m = sip_name_addr(value)
                if m is not None:  # the usual shape: kept, so reading it does not match again
                    cache[_MATCH_KEYS[key]] = m
                elif name_addr_shape(value) is None:
                    check_name_addr(value, _NAME_ADDR_KEYS[key])
            elif role == _CSEQ:
                cache["cseq"] = _cseq(value)
            elif role == _CALL_ID:
                if not value or " " in value or "\t" in value:
                    raise SipParseError(f"Call-ID: expected one word, got {cut(value)!r}")
                cache["call-id"] = value
            else:
                cache["max-forwards"] = parse_uint(value, "Max-Forwards")
    if contacts > 1:  # only a lone Contact is built from its match
        cache.pop("contact#m", None)
    if vias == 0:
        raise SipParseError("missing Via header")
    for key in _REQUIRED:
        if key not in seen:
            raise SipParseError(f"missing {_NAMES[key]} header")
    if "max-forwards" not in seen:
        cache["max-forwards"] = None
    if conflict:
        raise SipParseError("Content-Length: conflicting values")
    cache["content-length"] = length
    if isinstance(message, Request):
        cseq_method = cache["cseq"].method  # type: ignore[attr-defined]
        if cseq_method != message.method:
            raise SipParseError(
                f"CSeq method {cut(cseq_method)!r} differs from request method "
                f"{cut(message.method)!r}"
            )
    return length


_NAMES = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
}
