"""URIs: ``sip:``/``sips:`` (RFC 3261 §19.1), ``tel:`` (RFC 3966) and any other scheme.

Values are frozen and keep what was written (``%``-escapes included), so a
proxy forwards a URI unchanged; comparisons follow RFC 3261 §19.1.4 and
unescape first (``sip:%75ser@h`` equals ``sip:user@h``).
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import unquote as _pct_unquote

from sipwake.errors import SipParseError, cut
from sipwake.frozen import interpreted_init
from sipwake.sip.grammar import (
    HOSTNAME,
    IPV6_REF,
    PORT,
    Params,
    find_param,
    format_params,
)

__all__ = ["AbsoluteUri", "SipUri", "TelUri", "Uri", "parse_uri"]

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]++|{_ESC})++"
#: The user part of an addr-spec (outside <>): no ';', '?' or ',' (RFC 3261 §20.10).
_PLAIN_USER = rf"(?:[{_UNRESERVED}&=+$/]++|{_ESC})++"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]++|{_ESC})*+"
_PARAMCHARS = rf"(?:[{_UNRESERVED}\[\]/:&+$]++|{_ESC})++"
_HEADERCHARS = rf"(?:[{_UNRESERVED}\[\]/?:+$]++|{_ESC})*+"
_HOSTPORT = rf"(?P<host>{IPV6_REF}|{HOSTNAME})(?::(?P<port>{PORT}))?"

#: A whole sip:/sips: URI (regex fragment, no named groups).
SIP_URI = (
    rf"[sS][iI][pP][sS]?:(?:{_USER}(?::{_PASSWORD})?@)?(?:{IPV6_REF}|{HOSTNAME})(?::{PORT})?"
    rf"(?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*+"
    rf"(?:\?{_HEADERCHARS}=?{_HEADERCHARS}(?:&{_HEADERCHARS}={_HEADERCHARS})*+)?"
)
#: A sip:/sips: URI written without <> (no params, headers, ';', '?' or ',').
SIP_ADDR_SPEC = (
    rf"[sS][iI][pP][sS]?:(?:{_PLAIN_USER}(?::{_PASSWORD})?@)?(?:{IPV6_REF}|{HOSTNAME})"
    rf"(?::{PORT})?"
)
#: Any other scheme, inside <> / outside <>.
OTHER_URI = r"(?![sS][iI][pP][sS]?:)[A-Za-z][A-Za-z0-9+\-.]*+:[^\s<>\"]++"
OTHER_ADDR_SPEC = r"(?![sS][iI][pP][sS]?:)[A-Za-z][A-Za-z0-9+\-.]*+:[^\s<>\";,?]++"

_SIP_URI_RE = re.compile(
    rf"(?P<scheme>[sS][iI][pP][sS]?):"
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    rf"{_HOSTPORT}"
    rf"(?P<params>(?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*+)"
    rf"(?:\?(?P<headers>{_HEADERCHARS}=?{_HEADERCHARS}(?:&{_HEADERCHARS}={_HEADERCHARS})*+))?"
)
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_ABS_REST_RE = re.compile(r"[^\s<>\"]+")
_TEL_RE = re.compile(r"(?P<number>[0-9A-Fa-f*#+\-.()pPwW]+)(?P<params>(?:;[^;\s]+)*)")


#: Parameter values this long or shorter are interned: ``transport=udp``, ``lr``, an app's
#: ``pn-param`` repeat across every binding, while tokens and tags do not.
_INTERN_MAX = 40


def _split_params(text: str) -> Params:
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        if eq:
            short = len(value) <= _INTERN_MAX
            out.append((sys.intern(name), sys.intern(value) if short else value))
        else:
            out.append((sys.intern(name), None))
    return tuple(out)


def _unesc(text: str) -> str:
    return _pct_unquote(text, errors="surrogateescape") if "%" in text else text


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SipUri:
    """A ``sip:`` or ``sips:`` URI, as written (RFC 3261 §19.1.1)."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    _text: str = field(default="", compare=False, repr=False)

    def __init__(
        self,
        *,
        host: str,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: Params = (),
        headers: tuple[tuple[str, str], ...] = (),
        _text: str = "",
    ) -> None:
        self.scheme = scheme  # type: ignore[misc]
        self.user = user  # type: ignore[misc]
        self.password = password  # type: ignore[misc]
        self.host = host  # type: ignore[misc]
        self.port = port  # type: ignore[misc]
        self.params = params  # type: ignore[misc]
        self.headers = headers  # type: ignore[misc]
        self._text = _text  # type: ignore[misc]

    def __str__(self) -> str:
        if self._text:
            return self._text
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(format_params(self.params))
        if self.headers:
            out += ["?", "&".join(f"{k}={v}" for k, v in self.headers)]
        return "".join(out)

    # -- parameters -------------------------------------------------------
    def param(self, name: str) -> str | None:
        """A URI parameter's value (None if absent or valueless)."""
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """A copy with ``name`` set (replacing any existing value)."""
        lname = name.lower()
        rest = [p for p in self.params if p[0].lower() != lname]
        rest.append((name, value))
        return self._with_params(tuple(rest))

    def without_params(self, *names: str) -> SipUri:
        drop = {n.lower() for n in names}
        return self._with_params(tuple([p for p in self.params if p[0].lower() not in drop]))

    def compact(self) -> SipUri:
        """The same URI without the text it was parsed from (serialised again on demand):
        for values kept for hours, such as a binding's contact."""
        return self._with_params(self.params) if self._text else self

    def _with_params(self, params: Params) -> SipUri:
        """``self.replace(params=params)``."""
        return SipUri(
            scheme=self.scheme,
            user=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            params=params,
            headers=self.headers,
        )

    def replace(self, **changes: object) -> SipUri:
        """A copy with fields changed (the cached text is recomputed)."""
        values: dict[str, object] = {
            "scheme": self.scheme,
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "params": self.params,
            "headers": self.headers,
        }
        values.update(changes)
        return SipUri(**values)  # type: ignore[arg-type]

    # -- derived values ---------------------------------------------------
    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    @property
    def secure(self) -> bool:
        return self.scheme.lower() == "sips"

    def aor(self) -> str:
        """The address-of-record key: ``sip:user@host``, user unescaped, host lowercase.

        RFC 3261 §10.3 step 5: the To URI canonicalised (no port, params or headers).
        A ``sips:`` AOR maps to the same key as ``sip:``.
        """
        user = _unesc(self.user) if self.user is not None else None
        host = self.host.lower()
        return f"sip:{user}@{host}" if user is not None else f"sip:{host}"

    def equivalent(self, other: object) -> bool:
        """RFC 3261 §19.1.4 URI comparison."""
        if not isinstance(other, SipUri):
            return False
        if self.scheme.lower() != other.scheme.lower():
            return False
        if (self.user is None) != (other.user is None):
            return False
        if self.user is not None and _unesc(self.user) != _unesc(other.user or ""):
            return False
        if _unesc(self.password or "") != _unesc(other.password or ""):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {_unesc(k).lower(): v for k, v in self.params}
        theirs = {_unesc(k).lower(): v for k, v in other.params}
        for special in ("user", "ttl", "method", "maddr"):
            if (special in mine) != (special in theirs):
                return False
        if "transport" in mine and "transport" in theirs:
            pass
        elif ("transport" in mine) != ("transport" in theirs):
            return False
        for key in mine.keys() & theirs.keys():
            a, b = mine[key], theirs[key]
            if (a is None) != (b is None):
                return False
            if a is not None and b is not None and _unesc(a).lower() != _unesc(b).lower():
                return False
        mine_h = {_unesc(k).lower(): _unesc(v) for k, v in self.headers}
        theirs_h = {_unesc(k).lower(): _unesc(v) for k, v in other.headers}
        return mine_h == theirs_h


@dataclass(frozen=True, slots=True, kw_only=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966), kept as number plus parameters."""

    number: str
    params: Params = ()

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    @property
    def scheme(self) -> str:
        return "tel"

    def aor(self) -> str:
        return "tel:" + self.number.replace("-", "").replace(".", "").replace("(", "").replace(
            ")", ""
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AbsoluteUri:
    """Any other scheme (``http:``, ``isbn:``, ``urn:``…): parsed only as scheme + rest."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def aor(self) -> str:
        return f"{self.scheme.lower()}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri

interpreted_init(SipUri)


def parse_uri(text: str, where: str = "URI") -> Uri:
    """Parse a URI of any scheme; ``SipParseError`` naming ``where`` if it is malformed."""
    if text.startswith(("sip:", "sips:")):  # the usual spelling: no need for the scheme regex
        return _sip_uri(text, where)
    m = _SCHEME_RE.match(text)
    if m is None:
        raise SipParseError(f"{where}: expected '<scheme>:…', got {cut(text)!r}")
    scheme = m.group(1).lower()
    if scheme in ("sip", "sips"):
        return _sip_uri(text, where)
    rest = text[m.end() :]
    if scheme == "tel":
        t = _TEL_RE.fullmatch(rest)
        if t is not None:
            return TelUri(number=t.group("number"), params=_split_params(t.group("params")))
    if not rest or _ABS_REST_RE.fullmatch(rest) is None:
        raise SipParseError(f"{where}: bad {scheme}: URI {cut(text)!r}")
    return AbsoluteUri(scheme=m.group(1), rest=rest)


def _sip_uri(text: str, where: str) -> SipUri:
    uri = _parse_sip_uri(text)
    if uri is None:
        raise SipParseError(f"{where}: malformed SIP URI {cut(text)!r}")
    return uri


@functools.lru_cache(maxsize=4096)
def _parse_sip_uri(text: str) -> SipUri | None:
    """The SipUri ``text`` spells, None if it is malformed. URIs repeat (a dialog's From and
    To in each of its messages, a device's Contact at each refresh, Record-Route and
    Request-URIs) and are frozen values: each spelling is parsed once."""
    m = _SIP_URI_RE.fullmatch(text)
    if m is None:
        return None
    scheme, user, password, host, port_text, param_text, header_text = m.groups()
    return sip_uri_from_parts(
        scheme, user, password, host, port_text, param_text, header_text, text
    )


#: ``_SIP_URI_RE``'s pattern, for a regex that matches a SIP URI among other things and
#: builds it from its seven named groups with ``sip_uri_from_parts``.
SIP_URI_PARTS = _SIP_URI_RE.pattern


def sip_uri_from_parts(
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port_text: str | None,
    param_text: str,
    header_text: str | None,
    text: str,
) -> SipUri:
    """The SipUri whose ``SIP_URI_PARTS`` groups matched ``text``."""
    headers: tuple[tuple[str, str], ...] = ()
    if header_text:
        pairs = []
        for item in header_text.split("&"):
            name, _, value = item.partition("=")
            pairs.append((name, value))
        headers = tuple(pairs)
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=int(port_text) if port_text else None,
        params=_split_params(param_text),
        headers=headers,
        _text=text,
    )
