"""Message heads: what a call record keeps of a SIP message, and how it is read back.

The recorder runs on the event loop, beside every SIP message the server handles,
so it keeps a message raw: its head (the first line and the header fields, never
the body) as bytes, cut at ``MAX_HEAD`` bytes (``clip_head``). The few secrets a
head may carry are hidden before it is kept, at the byte level and without
parsing: the values of ``Authorization``, ``Proxy-Authorization`` and
``Sipwake-Push-Key`` lines (folded lines too) become ``***``, and the push tokens
and keys of RFC 8599 and Linphone parameters (``pn-prid``, ``pn-tok``, ``pn-purr``,
``pn-p256dh``, ``pn-auth``) are masked to their first and last four characters, as
``sipwake.sip.pushtarget.redact`` prints them. The check that a head needs it costs
about a microsecond; the rewrite is paid only by heads that do.

Reading (``readable``, by the stores when a call is read for ``sipwake calls show``,
in the reader's process) parses a kept head into the message's first line and its
``KEPT_HEADERS`` fields, where they can say something (``read_headers``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace

from sipwake.calls.records import (
    KEPT_HEADERS,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    CallMessageRecord,
    Direction,
)
from sipwake.sip.pushtarget import mask_token, redact

__all__ = [
    "MAX_HEAD",
    "clip_head",
    "from_tag",
    "kept_headers",
    "read_headers",
    "readable",
    "scrub",
]

MAX_HEAD = 2048
"""Bytes kept of a message head (the first ones; a longer head is cut)."""

Headers = tuple[tuple[str, str], ...]


def clip_head(data: bytes, end: int) -> bytes:
    """The head of message ``data`` as a call record keeps it: up to ``end`` (where its
    blank line is, -1 if none), at most ``MAX_HEAD`` bytes, secrets hidden."""
    head = data[: end if 0 <= end < MAX_HEAD else MAX_HEAD]
    return _scrub(head, head.lower())


def scrub(head: bytes) -> bytes:
    """``head`` with credentials and push keys hidden and push tokens masked."""
    return _scrub(head, head.lower())


def _scrub(head: bytes, low: bytes) -> bytes:
    # Names are found in the lower-cased copy (``bytes.lower`` keeps every offset), which
    # spares the patterns IGNORECASE (half their time); values are taken from ``head``.
    if b"authorization" in low or b"push-key" in low:
        head = _splice(head, _SECRET_LINE_RE.finditer(low), _hide_line)
        low = head.lower()
    if b"pn-" in low:
        head = _splice(head, _SECRET_PARAM_RE.finditer(low), _mask_param)
    return head


def _splice(
    head: bytes, matches: Iterator[re.Match[bytes]], hide: Callable[[bytes, re.Match[bytes]], bytes]
) -> bytes:
    parts = []
    pos = 0
    for match in matches:
        parts.append(head[pos : match.start()])
        parts.append(hide(head, match))
        pos = match.end()
    if not parts:
        return head
    parts.append(head[pos:])
    return b"".join(parts)


def _hide_line(head: bytes, match: re.Match[bytes]) -> bytes:
    return head[match.start() : match.end(1)] + b" ***"


def _mask_param(head: bytes, match: re.Match[bytes]) -> bytes:
    token = head[match.start(2) : match.end(2)].decode("utf-8", "replace")
    return head[match.start(1) : match.end(1)] + b"=" + mask_token(token).encode()


#: Both match the lower-cased head: a header line (folded lines too) and a parameter.
_SECRET_LINE_RE = re.compile(
    rb"\n((?:proxy-)?authorization[ \t]*:|sipwake-push-key[ \t]*:)[^\r\n]*"
    rb"(?:\r?\n[ \t][^\r\n]*)*"
)
_SECRET_PARAM_RE = re.compile(
    rb"(pn-prid|pn-tok|pn-purr|pn-p256dh|pn-auth)="
    rb"([^;>,\s?&]+(?:&[^;>,\s?&=]+(?=[;>,\s?&]|$))*)"
)


def first_line(head: bytes) -> str:
    """The first line of a kept head (push tokens masked)."""
    stop = head.find(b"\r\n")
    line = (head if stop < 0 else head[:stop]).strip().decode("utf-8", "replace")
    return redact(line) if "pn-" in line.lower() else line


def readable(message: CallMessageRecord) -> CallMessageRecord:
    """A message as ``sipwake calls show`` reads it: its first line and header fields
    parsed from its kept head (the head itself left out)."""
    head = message.head
    if not head:
        return message
    line = message.first_line or first_line(head)
    headers = message.headers or read_headers(head, message.direction, line)
    return replace(message, first_line=line, headers=headers, head=b"")


def from_tag(head: bytes) -> str:
    """The ``tag`` parameter of a head's From field ("" if none)."""
    match = _FROM_RE.search(head)
    if match is None:
        return ""
    value = match.group(1)
    params = value.rpartition(b">")[2] if b">" in value else value
    for param in params.split(b";")[1:]:
        key, _, tag = param.partition(b"=")
        if key.strip().lower() == b"tag":
            return tag.strip().decode("utf-8", "replace")
    return ""


_FROM_RE = re.compile(rb"\r\n(?:from|f)[ \t]*:([^\r\n]*)", re.IGNORECASE)


def kept_headers(data: bytes) -> Headers:
    """The ``KEPT_HEADERS`` fields of a SIP message or head, in order (folded lines
    joined, at most ``MAX_HEADERS``, values cut at ``MAX_HEADER_VALUE`` characters,
    push tokens masked)."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    if _FOLD_RE.search(head) is not None:  # RFC 3261 §7.3.1 folding: one line again
        head = _FOLD_RE.sub(b" ", head)
    found = _KEPT_RE.findall(head)[:MAX_HEADERS]  # names in any case (RFC 3261 §7.3.1)
    secret = b"pn-" in head.lower()  # a push parameter, e.g. in a Contact
    out = []
    for name, raw in found:
        value = raw.strip().decode("utf-8", "replace")
        if secret:
            value = redact(value)
        if len(value) > MAX_HEADER_VALUE:
            value = value[: MAX_HEADER_VALUE - 1] + "…"
        out.append((_KEPT_BYTES[name.lower()], value))
    return tuple(out)


def _cseq_only(data: bytes) -> Headers:
    """The CSeq of a message (a forwarded copy needs no more)."""
    match = _CSEQ_RE.search(data)
    value = match.group(1).strip() if match is not None else b""
    return (("CSeq", value.decode("utf-8", "replace")),) if value else ()


def read_headers(data: bytes, direction: Direction, first_line: str) -> Headers:
    """The header fields worth showing of a call's message: all ``kept_headers`` where
    they can say something; else a response's CSeq only (its arrow names the method
    it answers) and nothing of a request (its first line names it). Nothing more is
    read of an ACK, a 100, a 180 or 183 (a ringing phone's Contact and agent come
    with its 200 or its registration), a 2xx to anything but an INVITE, nor of what
    sipwake sends but a diverted INVITE (Diversion, History-Info), a CANCEL (Reason)
    and its own failures: the rest it forwards as received, and the received copy
    has them."""
    if first_line.startswith("SIP/"):
        status = first_line[8:11]
        if status in _QUIET_STATUSES or (direction == "out" and status[:1] in ("1", "2")):
            return _cseq_only(data)
        if status[:1] == "2":
            cseq = _cseq_only(data)
            if cseq and not cseq[0][1].endswith("INVITE"):
                return cseq
        return kept_headers(data)
    method = first_line.partition(" ")[0]
    if method == "ACK" or (direction == "out" and method not in ("INVITE", "CANCEL")):
        return ()
    if direction == "out" and method == "INVITE" and _DIVERTED_RE.search(data) is None:
        return ()  # the caller's INVITE, forwarded
    return kept_headers(data)


_QUIET_STATUSES = frozenset({"100", "180", "183"})
_FOLD_RE = re.compile(rb"\r\n[ \t]+")
_CSEQ_RE = re.compile(rb"\r\ncseq[ \t]*:([^\r\n]*)", re.IGNORECASE)
_DIVERTED_RE = re.compile(rb"\r\n(?:diversion|history-info)[ \t]*:", re.IGNORECASE)
_KEPT_RE = re.compile(
    rb"\r\n("
    + b"|".join(re.escape(n.encode()) for n in sorted(KEPT_HEADERS, key=len, reverse=True))
    + rb")[ \t]*:([^\r\n]*)",
    re.IGNORECASE,
)
_KEPT_BYTES = {name.encode(): label for name, label in KEPT_HEADERS.items()}
