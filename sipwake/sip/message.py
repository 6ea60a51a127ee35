"""The SIP message model: Request, Response and their ordered headers.

Header fields keep the name and value as written (a parsed then serialised
message keeps its header order and values). Lookups are case-insensitive and
treat compact forms as their long names (``v`` is ``Via``). Typed values
(``msg.via``, ``msg.cseq``, ``msg.contacts`` …) are parsed once and cached;
any change to a header drops its cached value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from sipwake.errors import SipParseError
from sipwake.sip.grammar import split_commas
from sipwake.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    name_addr_from_match,
    parse_cseq,
    parse_name_addr,
    parse_uint,
    parse_via,
)
from sipwake.sip.status import reason_phrase
from sipwake.sip.uri import Uri

__all__ = [
    "COMPACT_FORMS",
    "Headers",
    "Message",
    "Request",
    "Response",
    "canonical_name",
    "parse_error_response",
]

T = TypeVar("T")

#: RFC 3261 §7.3.3 and later RFCs: compact form → long name.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
_COMPACT_KEYS = {k: v.lower() for k, v in COMPACT_FORMS.items()}

#: Headers whose values may be comma lists (split on top-level commas).
#: WWW-Authenticate, Authorization, Date and friends are not: their values hold commas.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "history-info",
        "diversion",
        "in-reply-to",
        "p-asserted-identity",
        "reason",
        "security-client",
        "security-server",
        "security-verify",
        "warning",
        "error-info",
        "alert-info",
        "call-info",
        "feature-caps",
    }
)


#: Cache entries the parser derives from a header besides its typed value: the top Via
#: alone, and the ``SIP_NAME_ADDR`` match of a From, To or lone Contact.
_DERIVED_KEYS = {"via": "via#0", "from": "from#m", "to": "to#m", "contact": "contact#m"}

#: What a cache lookup returns for a value not built yet (None is a value: no Max-Forwards).
_MISSING = object()


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name (``V`` → ``via``)."""
    key = name.lower()
    return _COMPACT_KEYS.get(key, key) if len(key) == 1 else key


class Headers:
    """Ordered, case-insensitive header fields ``(name, value)`` with a typed-value cache.

    The list of fields is the source of order; ``get`` and ``in`` look the first value of
    a name up in an index built on the first lookup and kept in step by each change.
    """

    __slots__ = ("_cache", "_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        self._fields: list[tuple[str, str, str]] = [
            (n, v, canonical_name(n)) for n, v in (fields or [])
        ]
        self._cache: dict[str, object] = {}
        self._first: dict[str, str] | None = None

    @classmethod
    def _from_keyed(cls, fields: list[tuple[str, str, str]]) -> Headers:
        obj = Headers.__new__(Headers)  # object.__new__ refuses the compiled class
        obj._fields = fields
        obj._cache = {}
        obj._first = None
        return obj

    def _first_values(self) -> dict[str, str]:
        """Canonical name → the value of its first field."""
        first = self._first
        if first is None:
            first = self._first = {k: v for _, v, k in reversed(self._fields)}
        return first

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for n, v, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return canonical_name(name) in self._first_values()

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        clone = Headers._from_keyed(list(self._fields))
        clone._cache = dict(self._cache)
        return clone

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's value, or ``default``."""
        return self._first_values().get(canonical_name(name), default)

    def get_all(self, name: str) -> list[str]:
        """Every field's value, one per header line (not split on commas)."""
        key = canonical_name(name)
        return [v for _, v, k in self._fields if k == key]

    def values(self, name: str) -> list[str]:
        """Every value: lines in order, each split on top-level commas for list headers."""
        key = canonical_name(name)
        if key not in self._first_values():
            return []
        lines = [v for _, v, k in self._fields if k == key]
        if key not in LIST_HEADERS:
            return lines
        out: list[str] = []
        for line in lines:
            out.extend(split_commas(line))
        return out

    def _touch(self, key: str) -> None:
        cache = self._cache
        cache.pop(key, None)
        derived = _DERIVED_KEYS.get(key)
        if derived is not None:
            cache.pop(derived, None)

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        key = canonical_name(name)
        self._fields.append((name, value, key))
        if self._first is not None:
            self._first.setdefault(key, value)
        self._touch(key)

    def insert(self, name: str, value: str) -> None:
        """Put a field before every field of the same name (or first if there is none)."""
        key = canonical_name(name)
        index = next((i for i, f in enumerate(self._fields) if f[2] == key), 0)
        self._fields.insert(index, (name, value, key))
        if self._first is not None:
            self._first[key] = value
        self._touch(key)

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name with one (at the first one's place)."""
        key = canonical_name(name)
        index = next((i for i, f in enumerate(self._fields) if f[2] == key), None)
        self._fields = [f for f in self._fields if f[2] != key]
        entry = (name, value, key)
        if index is None:
            self._fields.append(entry)
        else:
            self._fields.insert(index, entry)
        if self._first is not None:
            self._first[key] = value
        self._touch(key)

    def remove(self, name: str) -> int:
        """Remove every field of this name; returns how many were removed."""
        key = canonical_name(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[2] != key]
        if self._first is not None:
            self._first.pop(key, None)
        self._touch(key)
        return before - len(self._fields)

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first comma-element of the first field of ``name`` (Via, Route)."""
        key = canonical_name(name)
        for i, (n, v, k) in enumerate(self._fields):
            if k != key:
                continue
            parts = split_commas(v)
            first = parts[0]
            if len(parts) == 1:
                del self._fields[i]
            else:
                self._fields[i] = (n, ", ".join(parts[1:]), k)
            self._first = None  # the next field of the name, if any, is now the first
            self._touch(key)
            return first
        return None

    def replace_first_value(self, name: str, value: str) -> None:
        """Replace the first comma-element of the first field of ``name`` (a Via, a Route)."""
        key = canonical_name(name)
        for i, (n, v, k) in enumerate(self._fields):
            if k != key:
                continue
            if "," in v:
                parts = split_commas(v)
                parts[0] = value
                value = ", ".join(parts)
            self._fields[i] = (n, value, k)
            if self._first is not None:
                self._first[key] = value
            self._touch(key)
            return
        raise KeyError(name)


class Message:
    """What requests and responses share: headers, body and typed accessors."""

    __slots__ = ("body", "headers")

    version = "SIP/2.0"

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    # -- typed accessors (cached) -----------------------------------------
    def _typed(self, key: str, build: Callable[[Message], T]) -> T:
        """The cached typed value of header ``key`` (a canonical name), built once."""
        cache = self.headers._cache
        value = cache.get(key, _MISSING)
        if value is _MISSING:
            value = build(self)
            cache[key] = value
        return value  # type: ignore[return-value]

    @property
    def via(self) -> list[Via]:
        """Every Via value, topmost first."""
        return self._typed("via", _build_vias)

    @property
    def top_via(self) -> Via:
        """The topmost Via, parsed alone (the others only when ``via`` is asked for)."""
        cache = self.headers._cache
        vias = cache.get("via")
        if vias is not None:
            return vias[0]  # type: ignore[index,no-any-return]
        top = cache.get("via#0")
        if top is None:
            raw = self.headers.get("via")
            if raw is None:
                raise SipParseError("missing Via header")
            top = parse_via(split_commas(raw)[0] if "," in raw else raw, "Via #1")
            cache["via#0"] = top
        return top  # type: ignore[return-value]

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the topmost Via (RFC 3261 §18.2.1 received/rport)."""
        cached = self.headers._cache.get("via")
        self.headers.replace_first_value("via", str(via))
        if cached is not None:
            self.headers._cache["via"] = [via, *cached[1:]]  # type: ignore[index]
        else:
            self.headers._cache["via#0"] = via

    @property
    def cseq(self) -> CSeq:
        return self._typed("cseq", _build_cseq)

    @property
    def call_id(self) -> str:
        return self._typed("call-id", _build_call_id)

    @property
    def from_(self) -> NameAddr:
        return self._typed("from", _build_from)

    @property
    def to(self) -> NameAddr:
        return self._typed("to", _build_to)

    @property
    def contacts(self) -> list[NameAddr] | None:
        """Contact values; ``None`` means the ``Contact: *`` wildcard."""
        return self._typed("contact", _build_contacts)

    @property
    def max_forwards(self) -> int | None:
        return self._typed("max-forwards", _build_max_forwards)

    @property
    def expires(self) -> int | None:
        """The Expires header (out-of-range values read as 3600, RFC 4475 §3.1.2.4)."""
        return self._typed("expires", _build_expires)

    @property
    def content_length(self) -> int | None:
        return self._typed("content-length", _build_content_length)

    @property
    def routes(self) -> list[NameAddr]:
        return self._typed("route", _build_routes)

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._typed("record-route", _build_record_routes)

    def tokens(self, name: str) -> list[str]:
        """A token-list header (Supported, Require, Allow…) as lower-case tokens."""
        return [v.lower() for v in self.headers.values(name) if v]

    def _single(self, name: str) -> str:
        values = self.headers.get_all(name)
        if not values:
            raise SipParseError(f"missing {name} header")
        if len(values) > 1:
            raise SipParseError(f"{name}: header appears {len(values)} times")
        return values[0]

    def _optional_single(self, name: str) -> str | None:
        values = self.headers.get_all(name)
        if len(values) > 1:
            raise SipParseError(f"{name}: header appears {len(values)} times")
        return values[0] if values else None

    # -- serialisation ----------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message on the wire, headers in order; the body is appended as is."""
        parts = [self.start_line(), "\r\n"]
        for name, value, _ in self.headers._fields:
            parts += [name, ": ", value, "\r\n"]
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Set the body and its Content-Length (and Content-Type if given)."""
        self.body = body
        if content_type is not None:
            self.headers.set("Content-Type", content_type)
        self.headers.set("Content-Length", str(len(body)))


# -- builders of the typed values (module functions: a property makes no closure) ------
def _build_vias(m: Message) -> list[Via]:
    return [parse_via(v, f"Via #{i + 1}") for i, v in enumerate(m.headers.values("via"))]


def _build_cseq(m: Message) -> CSeq:
    return parse_cseq(m._single("CSeq"))


def _build_call_id(m: Message) -> str:
    return m._single("Call-ID")


def _name_addr(m: Message, name: str, match_key: str) -> NameAddr:
    """From or To: from the parser's match when it kept one, else parsed."""
    match = m.headers._cache.get(match_key)
    if match is not None:
        return name_addr_from_match(match)  # type: ignore[arg-type]
    return parse_name_addr(m._single(name), name)


def _build_from(m: Message) -> NameAddr:
    return _name_addr(m, "From", "from#m")


def _build_to(m: Message) -> NameAddr:
    return _name_addr(m, "To", "to#m")


def _build_contacts(m: Message) -> list[NameAddr] | None:
    match = m.headers._cache.get("contact#m")
    if match is not None:
        return [name_addr_from_match(match)]  # type: ignore[arg-type]
    values = m.headers.values("contact")
    if values == ["*"]:
        return None
    if "*" in values:
        raise SipParseError("Contact: '*' must be the only value")
    return [parse_name_addr(v, f"Contact #{i + 1}") for i, v in enumerate(values)]


def _build_max_forwards(m: Message) -> int | None:
    raw = m._optional_single("Max-Forwards")
    return None if raw is None else parse_uint(raw, "Max-Forwards")


def _build_expires(m: Message) -> int | None:
    raw = m._optional_single("Expires")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit():
        raise SipParseError(f"Expires: expected a number, got {text[:80]!r}")
    return int(text) if len(text) <= 10 and int(text) <= 2**32 - 1 else 3600


def _build_content_length(m: Message) -> int | None:
    raw = m.headers.get_all("content-length")
    if not raw:
        return None
    values = {parse_uint(v, "Content-Length") for v in raw}
    if len(values) > 1:
        raise SipParseError("Content-Length: conflicting values")
    return values.pop()


def _build_routes(m: Message) -> list[NameAddr]:
    values = m.headers.values("route")
    return [parse_name_addr(v, f"Route #{i + 1}") for i, v in enumerate(values)]


def _build_record_routes(m: Message) -> list[NameAddr]:
    values = m.headers.values("record-route")
    return [parse_name_addr(v, f"Record-Route #{i + 1}") for i, v in enumerate(values)]


class Request(Message):
    """A SIP request (RFC 3261 §7.1)."""

    __slots__ = ("method", "uri")

    def __init__(
        self, method: str, uri: Uri, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body)

    @property
    def provisional(self) -> bool:
        return self.status < 200

    @property
    def final(self) -> bool:
        return self.status >= 200

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6.1: Via, From, To, Call-ID and CSeq
    copied in order; ``to_tag`` added to To when given and To has none."""
    fields: list[tuple[str, str, str]] = []
    for name, value, key in request.headers._fields:
        if key in _RESPONSE_COPY:
            if key == "to" and to_tag is not None and status > 100 and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            fields.append((name, value, key))
    headers = Headers._from_keyed(fields)
    headers.add("Content-Length", "0")
    return Response(status, reason, headers)


_RESPONSE_COPY = frozenset({"via", "from", "to", "call-id", "cseq"})


def parse_error_response(exc: SipParseError) -> Response | None:
    """The error response (400 with the reason, or the parser's status) to a request that
    failed to parse far enough to be answered; None when it cannot be (a response, an
    ACK, or no Via to send it back by)."""
    partial = exc.partial
    if not isinstance(partial, Request) or partial.method == "ACK":
        return None
    if not partial.headers.get("via"):
        return None
    reason = exc.reason.replace("\r", " ").replace("\n", " ")[:200]
    return make_response(partial, exc.status_hint, reason)
