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

import re

from sipwake.errors import SipParseError, cut
from sipwake.sip.grammar import split_commas
from sipwake.sip.headers import check_name_addr, check_via
from sipwake.sip.message import Headers, Message, Request, Response, canonical_name
from sipwake.sip.uri import SipUri, parse_uri

__all__ = ["DEFAULT_MAX_SIZE", "parse_message", "validate"]

#: Largest message accepted by default (UDP datagram limit; RFC 3261 §18.1.1).
DEFAULT_MAX_SIZE = 65535

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) ([^ \t]+) SIP/(\d+\.\d+)")
_REQUEST_LINE_LOOSE_RE = re.compile(rf"({_TOKEN})[ \t]+(.*?)[ \t]+([A-Za-z0-9]+/[^ \t]*)[ \t]*")
_STATUS_LINE_RE = re.compile(r"SIP/(\d+\.\d+) (\d{3}) ([^\r\n]*)")
_HEADER_NAME_RE = re.compile(_TOKEN)

#: Headers every request must carry once (RFC 3261 §8.1.1); Max-Forwards is
#: optional for RFC 2543 peers (RFC 4475 §3.4.1).
_REQUIRED = ("via", "from", "to", "call-id", "cseq")


def parse_message(
    data: bytes, *, stream: bool = False, max_size: int = DEFAULT_MAX_SIZE
) -> Request | Response:
    """Parse one message; ``stream`` frames it as read from TCP/TLS (no body without
    Content-Length) rather than as a datagram."""
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit", 513)
    start = 0
    while data.startswith(b"\r\n", start) or data.startswith(b"\n", start):
        start += 2 if data[start] == 13 else 1
    end = data.find(b"\r\n\r\n", start)
    lf_end = data.find(b"\n\n", start)
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
    if "\n" in head and any("\n" in line for line in lines):
        lines = [line.rstrip("\r") for line in head.split("\n")]
    message = _start_line(lines[0])
    message.headers = _header_fields(lines)
    try:
        length = message.content_length
    except SipParseError as exc:
        raise SipParseError(exc.reason, partial=message) from exc
    if length is None:
        message.body = b"" if stream else rest
    elif length > len(rest):
        raise SipParseError(
            f"Content-Length {length} exceeds the {len(rest)} body bytes received", partial=message
        )
    else:
        message.body = rest[:length] if length < len(rest) else rest
    validate(message)
    return message


def _start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        m = _STATUS_LINE_RE.fullmatch(line)
        if m is None:
            raise SipParseError(f"status line: expected 'SIP/2.0 <code> <reason>', got {cut(line)!r}")
        if m.group(1) != "2.0":
            raise SipParseError(f"status line: version SIP/{m.group(1)} not supported", 505)
        status = int(m.group(2))
        if status < 100 or status > 699:
            raise SipParseError(f"status line: code {status} outside 100-699")
        return Response(status, m.group(3))
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
    if m.group(3) != "2.0":
        raise SipParseError(f"request line: version SIP/{m.group(3)} not supported", 505)
    uri = parse_uri(m.group(2), "Request-URI")
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError("Request-URI: a SIP Request-URI must not carry headers ('?')")
    return Request(m.group(1), uri)


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
    return key


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
        append((name, value.strip(" \t"), _key(name)))
    return Headers._from_keyed(fields)


def validate(message: Message) -> None:
    """Check the headers SIP processing depends on; raise ``SipParseError`` if one is bad.

    Every typed value checked here stays cached on the message.
    """
    try:
        _check(message)
    except SipParseError as exc:
        if exc.partial is None:
            raise SipParseError(exc.reason, exc.status_hint, partial=message) from exc
        raise


_NAME_ADDR_KEYS = {"from": "From", "to": "To", "contact": "Contact", "route": "Route",
                   "record-route": "Record-Route"}
_SINGLE_KEYS = frozenset({"from", "to", "call-id", "cseq", "max-forwards"})


def _check(message: Message) -> None:
    seen: dict[str, int] = {}
    for _, value, key in message.headers._fields:
        count = seen.get(key, 0) + 1
        seen[key] = count
        if key in _SINGLE_KEYS and count > 1:
            raise SipParseError(f"{_NAMES.get(key, key)}: header appears more than once")
        if key == "via":
            parts = split_commas(value)
            for i, part in enumerate(parts):
                check_via(part, f"Via #{count + i}")
        elif key in _NAME_ADDR_KEYS:
            if key == "contact" and value == "*":
                continue
            where = _NAME_ADDR_KEYS[key]
            parts = split_commas(value) if key != "from" and key != "to" else [value]
            for part in parts:
                check_name_addr(part, where)
    for key in _REQUIRED:
        if key not in seen:
            raise SipParseError(f"missing {_NAMES[key]} header")
    call_id = message.call_id
    if not call_id or any(c in call_id for c in " \t"):
        raise SipParseError(f"Call-ID: expected one word, got {cut(call_id)!r}")
    cseq = message.cseq
    if "max-forwards" in seen:
        message.max_forwards  # noqa: B018 - parse and cache
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipParseError(
            f"CSeq method {cut(cseq.method)!r} differs from request method {cut(message.method)!r}"
        )


_NAMES = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
}
