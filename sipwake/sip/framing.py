"""Cutting a byte stream (TCP, TLS) into SIP messages (RFC 3261 §18.3, RFC 5626 §4.4.1).

``StreamFramer.feed(data)`` returns what became complete: ``bytes`` for each
whole message (headers and exactly Content-Length body octets), ``PING`` for
a CRLFCRLF keep-alive (answer with one CRLF) and ``PONG`` for a lone CRLF.
Bad framing — a header section larger than the limit, a missing or negative
Content-Length, conflicting Content-Lengths, a body over the limit — raises
``SipParseError``; the connection cannot be resynchronised and must close.
"""

from __future__ import annotations

import re
from enum import Enum

from sipwake.errors import SipParseError

__all__ = ["PING", "PONG", "KeepAlive", "StreamFramer"]


class KeepAlive(Enum):
    PING = "ping"
    PONG = "pong"


PING = KeepAlive.PING
PONG = KeepAlive.PONG

_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)


class StreamFramer:
    """Frames one connection's bytes; keeps the unfinished tail between calls."""

    __slots__ = ("_buffer", "max_body", "max_header")

    def __init__(self, *, max_header: int = 16384, max_body: int = 65535) -> None:
        self._buffer = bytearray()
        self.max_header = max_header
        self.max_body = max_body

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        buf = self._buffer
        buf += data
        out: list[bytes | KeepAlive] = []
        while buf:
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    out.append(PING)
                    del buf[:4]
                    continue
                if buf.startswith(b"\r\n") and ((len(buf) > 2 and buf[2] != 13) or len(buf) == 2):
                    out.append(PONG)
                    del buf[:2]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # the rest of a keep-alive may follow
                del buf[:1]  # a stray CR or LF between messages
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_header:
                    raise SipParseError(
                        f"header section exceeds {self.max_header} bytes without an empty line", 513
                    )
                break
            if end > self.max_header:
                raise SipParseError(f"header section of {end} bytes exceeds {self.max_header}", 513)
            length = self._content_length(bytes(buf[:end]))
            total = end + 4 + length
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    def _content_length(self, head: bytes) -> int:
        values = {v.strip() for v in _CONTENT_LENGTH_RE.findall(head)}
        if not values:
            return 0
        if len(values) > 1:
            raise SipParseError("Content-Length: conflicting values on a stream")
        raw = values.pop()
        if not raw.isdigit() or len(raw) > 9:
            raise SipParseError(f"Content-Length: expected a non-negative number, got {raw[:80]!r}")
        length = int(raw)
        if length > self.max_body:
            raise SipParseError(
                f"body of {length} bytes exceeds the {self.max_body}-byte limit", 513
            )
        return length
