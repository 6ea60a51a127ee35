"""SIP digest authentication: challenges, credentials, a stateless server and a client.

RFC 3261 §22 carries HTTP digest into SIP (401/407, ``WWW-Authenticate`` /
``Proxy-Authenticate`` challenges, ``Authorization`` / ``Proxy-Authorization``
credentials, §22.4 the digest scheme). The grammar and the response computation
are RFC 2617 §3.2 (with the RFC 2069 no-qop form kept for verifying old
clients), the ``-sess`` and SHA-2 variants RFC 7616 §3.4, their use in SIP
RFC 8760: §2.4 lists challenges most preferred first, §2.5 a client skips
algorithms it does not know.

Everything here works on header *values* (the text after the colon), never on
whole messages, and is sans-IO: time is the caller's ``now`` (monotonic
seconds, from a clock every process sharing the secret agrees on) and the
client's cnonce comes from an injected ``Ids``.

Theory of operation (server)
----------------------------
Nonces are stateless::

    nonce = base64url(ms:int64 || seq:uint32 || HMAC-SHA256(secret, ms || seq || realm)[:18])

``ms`` is the issue time in milliseconds and ``seq`` a per-server counter that
keeps nonces issued in the same millisecond distinct. Any process holding the
secret can check a nonce and read its age. ``verify`` checks, in order: scheme
and params (MALFORMED), realm (REALM_MISMATCH), algorithm (UNSUPPORTED_ALGORITHM),
the nonce's MAC (BAD_NONCE), the response (WRONG_RESPONSE), the nonce's age
(STALE, only once the response proved the password, RFC 2617 §3.2.1 ``stale``)
and the nonce-count (REPLAY). The only state is the replay table: per nonce,
the highest nc accepted and a bitmap of the ``nc_window`` counts below it.
Entries go when their nonce expires (``handle_timeout``, also run lazily by
``verify``); past ``max_nonces`` the earliest-expiring entry is evicted and every
nonce issued no later than it is thereafter treated as STALE, so eviction never
reopens a replay. A nonce used without qop (RFC 2069) is good for one request.

Not implemented: ``userhash`` and ``username*`` (RFC 7616 §3.4.4, §3.4.5), the
``Authentication-Info`` header, checking ``uri`` against the Request-URI (the
caller's job, RFC 2617 §3.2.2.5: ``sipwake.proxy.policy.digest_uri_matches``) and
checking ``opaque`` (echoed, not verified).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import heapq
import hmac
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from sipwake.errors import AuthError, LocalProtocolError, cut
from sipwake.ids import Ids

__all__ = [
    "ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "answer_challenge",
    "compute_response",
    "ha1_for",
    "parse_challenge",
    "parse_credentials",
]

#: RFC 7616 §3.4 / RFC 8760 §2 algorithm names, canonical spelling.
ALGORITHMS = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess")
_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_CANONICAL = {name.lower(): name for name in ALGORITHMS}


def _available(algorithm: str) -> bool:
    try:
        hashlib.new(_HASHLIB_NAMES[algorithm.removesuffix("-sess")])
    except ValueError:
        return False
    return True


#: The algorithms this Python's hashlib can compute, in RFC 8760 preference order.
SUPPORTED_ALGORITHMS = tuple(
    a
    for a in ("SHA-512-256", "SHA-512-256-sess", "SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
    if _available(a)
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
#: Unquoted auth-param values: tokens, tolerantly widened to any visible ASCII
#: but '"', ',' and '\' (nonces with '/' or '=' sent bare by sloppy peers).
_BARE_VALUE_RE = re.compile(r"[!#-+\--\[\]-~]+")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
#: Characters no header value may carry: controls but HTAB, and lone surrogates.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{40}")
_MAC_LEN = 18
_NO_QOP_NC = 1 << 32  # replay-table mark: nonce spent by an RFC 2069 (no qop) request


# --- grammar ------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _param(name: str, value: str) -> str:
    return f"{name}={value}" if _TOKEN_RE.fullmatch(value) else f"{name}={_quote(value)}"


def _check(obj: Challenge | Credentials, what: str) -> None:
    """Reject values that would not serialise to one header line (RFC 3261 §25.1)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            for text in item if isinstance(item, tuple) else (item,):
                if isinstance(text, str) and _CONTROL_RE.search(text):
                    raise AuthError(f"{what}: param {f.name!r}: control character in {cut(text)!r}")


def _need_token(what: str, name: str, value: str) -> None:
    if not _TOKEN_RE.fullmatch(value):
        raise AuthError(f"{what}: param {name!r}: expected a token, got {cut(value)!r}")


def _skip_lws(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in " \t":
        pos += 1
    return pos


def _quoted_string(s: str, pos: int, what: str, name: str) -> tuple[str, int]:
    """Read the quoted-string opening at ``s[pos]``; returns (unescaped text, end)."""
    out: list[str] = []
    i = pos + 1
    while i < len(s):
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            i += 1
            if i == len(s):
                break
            c = s[i]
        if _CONTROL_RE.match(c):
            raise AuthError(f"{what}: param {name!r}: control character in quoted-string")
        out.append(c)
        i += 1
    raise AuthError(f"{what}: param {name!r}: unterminated quoted-string")


def _auth_params(s: str, what: str) -> list[tuple[str, str]]:
    """RFC 2617 §1.2 ``#auth-param``: names lowercased, values unquoted, no duplicates."""
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    pos = 0
    while True:
        pos = _skip_lws(s, pos)
        while pos < len(s) and s[pos] == ",":  # empty list elements are legal
            pos = _skip_lws(s, pos + 1)
        if pos >= len(s):
            return params
        m = _TOKEN_RE.match(s, pos)
        if m is None:
            raise AuthError(f"{what}: expected a param name, got {cut(s[pos:])!r}")
        name = m.group().lower()
        pos = _skip_lws(s, m.end())
        if pos >= len(s) or s[pos] != "=":
            raise AuthError(f"{what}: param {name!r}: expected '=' after the name")
        pos = _skip_lws(s, pos + 1)
        if pos < len(s) and s[pos] == '"':
            value, pos = _quoted_string(s, pos, what, name)
        else:
            v = _BARE_VALUE_RE.match(s, pos)
            if v is None:
                got = cut(s[pos:]) or "end of header"
                raise AuthError(
                    f"{what}: param {name!r}: expected a token or quoted-string, got {got!r}"
                )
            value, pos = v.group(), v.end()
        if name in seen:
            raise AuthError(f"{what}: param {name!r} appears twice")
        seen.add(name)
        params.append((name, value))
        pos = _skip_lws(s, pos)
        if pos < len(s) and s[pos] != ",":
            got = cut(s[pos:])
            raise AuthError(f"{what}: param {name!r}: expected ',' after the value, got {got!r}")


def _split_scheme(value: str, what: str) -> tuple[str, str]:
    text = value.strip(" \t")
    m = _TOKEN_RE.match(text)
    if m is None:
        raise AuthError(f"{what}: expected an auth scheme, got {cut(value)!r}")
    rest = text[m.end() :]
    if rest and rest[0] not in " \t":
        raise AuthError(f"{what}: expected a space after the scheme, got {cut(value)!r}")
    scheme = "Digest" if m.group().lower() == "digest" else m.group()
    return scheme, rest.lstrip(" \t")


def _parse_other(
    scheme: str, rest: str, what: str
) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """A scheme other than Digest: a token68 blob (RFC 7235 §2.1) or auth-params."""
    if _TOKEN68_RE.fullmatch(rest):
        return (), rest
    return tuple(_auth_params(rest, what)), None


def _canonical_algorithm(value: str) -> str:
    return _CANONICAL.get(value.lower(), value)


# --- value objects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 2617 §3.2.1).

    For a scheme other than Digest only ``scheme``, ``params`` and ``token68`` are set.
    ``params`` holds auth-params with no field of their own (names lowercased).
    """

    scheme: str = "Digest"
    realm: str = ""
    nonce: str = ""
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    domain: str | None = None
    stale: bool = False
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    def __post_init__(self) -> None:
        _check(self, "challenge")
        _need_token("challenge", "scheme", self.scheme)
        _need_token("challenge", "algorithm", self.algorithm)
        for q in self.qop:
            _need_token("challenge", "qop", q)
        for name, _ in self.params:
            _need_token("challenge", "param name", name)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    def __str__(self) -> str:
        return _serialise(self, _CHALLENGE_LAYOUT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """One ``Authorization`` / ``Proxy-Authorization`` value (RFC 2617 §3.2.2).

    ``qop`` and ``nc`` are kept exactly as sent: both enter the response hash.
    """

    scheme: str = "Digest"
    username: str = ""
    realm: str = ""
    nonce: str = ""
    uri: str = ""
    response: str = ""
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    def __post_init__(self) -> None:
        _check(self, "credentials")
        _need_token("credentials", "scheme", self.scheme)
        _need_token("credentials", "algorithm", self.algorithm)
        if self.qop is not None:
            _need_token("credentials", "qop", self.qop)
        if self.nc is not None and not _NC_RE.fullmatch(self.nc):
            raise AuthError(f"credentials: param 'nc': expected 8 hex digits, got {cut(self.nc)!r}")
        for name, _ in self.params:
            _need_token("credentials", "param name", name)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    def __str__(self) -> str:
        return _serialise(self, _CREDENTIALS_LAYOUT)


#: Serialisation order and form: "q" quoted-string, "t" token, "flag" ``name=true`` when set,
#: "list" a quoted comma list (RFC 2617 §3.2.1, §3.2.2; qop is quoted only in challenges).
_CHALLENGE_LAYOUT = (
    ("realm", "q"), ("domain", "q"), ("nonce", "q"), ("opaque", "q"),
    ("stale", "flag"), ("algorithm", "t"), ("qop", "list"),
)  # fmt: skip
_CREDENTIALS_LAYOUT = (
    ("username", "q"), ("realm", "q"), ("nonce", "q"), ("uri", "q"), ("response", "q"),
    ("algorithm", "t"), ("cnonce", "q"), ("opaque", "q"), ("qop", "t"), ("nc", "t"),
)  # fmt: skip


def _serialise(obj: Challenge | Credentials, layout: tuple[tuple[str, str], ...]) -> str:
    if not obj.is_digest:
        if obj.token68 is not None:
            return f"{obj.scheme} {obj.token68}"
        return " ".join([obj.scheme, ", ".join(_param(n, v) for n, v in obj.params)]).rstrip()
    parts = []
    for name, form in layout:
        value = getattr(obj, name)
        if value is None or value is False or value == ():
            continue
        if form == "q":
            parts.append(f"{name}={_quote(value)}")
        elif form == "t":
            parts.append(f"{name}={value}")
        elif form == "flag":
            parts.append(f"{name}=true")
        else:
            parts.append(f"{name}={_quote(','.join(value))}")
    parts.extend(_param(n, v) for n, v in obj.params)
    return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value; raises only ``AuthError``."""
    what = "challenge"
    scheme, rest = _split_scheme(value, what)
    if scheme != "Digest":
        params, token68 = _parse_other(scheme, rest, what)
        return Challenge(scheme=scheme, params=params, token68=token68)
    p = dict(_auth_params(rest, what))
    for name in ("realm", "nonce"):
        if name not in p:
            raise AuthError(f"{what}: missing param {name!r}")
    stale = p.pop("stale", "false").lower()
    if stale not in ("true", "false"):
        raise AuthError(f"{what}: param 'stale': expected true or false, got {cut(stale)!r}")
    qop = tuple(q.strip(" \t") for q in p.pop("qop", "").split(","))
    return Challenge(
        realm=p.pop("realm"),
        nonce=p.pop("nonce"),
        algorithm=_canonical_algorithm(p.pop("algorithm", "MD5")),
        qop=tuple(q for q in qop if q),
        opaque=p.pop("opaque", None),
        domain=p.pop("domain", None),
        stale=stale == "true",
        params=tuple(p.items()),
    )


def parse_credentials(value: str) -> Credentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` value; raises only ``AuthError``."""
    what = "credentials"
    scheme, rest = _split_scheme(value, what)
    if scheme != "Digest":
        params, token68 = _parse_other(scheme, rest, what)
        return Credentials(scheme=scheme, params=params, token68=token68)
    p = dict(_auth_params(rest, what))
    required = ["username", "realm", "nonce", "uri", "response"]
    if "qop" in p:  # RFC 2617 §3.2.2: cnonce and nc MUST accompany qop
        required += ["cnonce", "nc"]
    for name in required:
        if name not in p:
            raise AuthError(f"{what}: missing param {name!r}")
    return Credentials(
        username=p.pop("username"),
        realm=p.pop("realm"),
        nonce=p.pop("nonce"),
        uri=p.pop("uri"),
        response=p.pop("response"),
        algorithm=_canonical_algorithm(p.pop("algorithm", "MD5")),
        cnonce=p.pop("cnonce", None),
        opaque=p.pop("opaque", None),
        qop=p.pop("qop", None),
        nc=p.pop("nc", None),
        params=tuple(p.items()),
    )


# --- the computation ----------------------------------------------------------------------------


def _hash(algorithm: str, data: bytes) -> str:
    base = _canonical_algorithm(algorithm).removesuffix("-sess")
    if base not in _HASHLIB_NAMES:
        raise AuthError(f"param 'algorithm': unsupported {cut(algorithm)!r}")
    try:
        return hashlib.new(_HASHLIB_NAMES[base], data).hexdigest()
    except ValueError as exc:
        raise AuthError(f"param 'algorithm': {algorithm} is not available in hashlib") from exc


def _h(algorithm: str, *parts: str) -> str:
    return _hash(algorithm, ":".join(parts).encode("utf-8"))


def ha1_for(username: str, realm: str, password: str, algorithm: str) -> str:
    """``H(username:realm:password)`` (RFC 2617 §3.2.2.2), what a user store may keep.

    The same value serves ``X`` and ``X-sess``; one is needed per hash function.
    """
    return _h(algorithm, username, realm, password)


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str | None = None,
    ha1: str | None = None,
    method: str,
    uri: str,
    nonce: str,
    nc: str | int | None,
    cnonce: str | None,
    qop: str | None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1, as lowercase hex.

    Give ``password`` or a stored ``ha1`` (from ``ha1_for``), not both. ``qop=None`` is the
    RFC 2069 form ``H(HA1:nonce:HA2)``.
    """
    if (password is None) == (ha1 is None):
        raise LocalProtocolError("compute_response: give exactly one of password and ha1")
    a1 = ha1 if ha1 is not None else ha1_for(username, realm, password or "", algorithm)
    if _canonical_algorithm(algorithm).endswith("-sess"):
        if cnonce is None:
            raise AuthError(f"param 'cnonce': required by algorithm {algorithm}")
        a1 = _h(algorithm, a1, nonce, cnonce)
    qop_l = None if qop is None else qop.lower()
    if qop_l == "auth-int":
        ha2 = _h(algorithm, method, uri, _hash(algorithm, body))
    elif qop_l in (None, "auth"):
        ha2 = _h(algorithm, method, uri)
    else:
        raise AuthError(f"param 'qop': unsupported {cut(qop or '')!r}")
    if qop is None:
        return _h(algorithm, a1, nonce, ha2)
    if cnonce is None or nc is None:
        raise AuthError("params 'cnonce' and 'nc' are required with qop")
    nc_text = f"{nc:08x}" if isinstance(nc, int) else nc
    return _h(algorithm, a1, nonce, nc_text, cnonce, qop, ha2)


def _response_of(
    c: Credentials, *, method: str, password: str | None, ha1: str | None, body: bytes
) -> str:
    return compute_response(
        algorithm=c.algorithm,
        username=c.username,
        realm=c.realm,
        password=password,
        ha1=ha1,
        method=method,
        uri=c.uri,
        nonce=c.nonce,
        nc=c.nc,
        cnonce=c.cnonce,
        qop=c.qop,
        body=body,
    )


# --- server -------------------------------------------------------------------------------------


class AuthResult(enum.Enum):
    """What ``DigestServer.verify`` concluded."""

    OK = "ok"
    STALE = "stale"  # right password, expired nonce: re-challenge with stale=true
    BAD_NONCE = "bad-nonce"  # not a nonce we issued (forged, garbled, other realm or secret)
    WRONG_RESPONSE = "wrong-response"  # wrong password (or tampered request)
    REPLAY = "replay"  # nonce-count not fresh for this nonce
    REALM_MISMATCH = "realm-mismatch"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    MALFORMED = "malformed"  # not Digest, unknown qop, qop or -sess without cnonce/nc


class DigestServer:
    """Issues stateless nonces and verifies digest credentials for one realm (RFC 3261 §22.4).

    ``algorithms`` are offered most preferred first (RFC 8760 §2.4). ``nc_window`` > 0
    accepts a nonce-count up to that far below the highest seen, once each, for requests
    sharing a nonce that arrive out of order; 0 is strict.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        nonce_lifetime: float = 300.0,
        nc_window: int = 0,
        max_nonces: int = 100_000,
    ) -> None:
        if len(secret) < 16:
            raise LocalProtocolError("DigestServer: secret must be at least 16 bytes")
        if not algorithms:
            raise LocalProtocolError("DigestServer: algorithms must not be empty")
        canonical = tuple(_canonical_algorithm(a) for a in algorithms)
        for a in canonical:
            if a not in SUPPORTED_ALGORITHMS:
                raise LocalProtocolError(f"DigestServer: algorithm {a!r} is not supported")
        if not (nonce_lifetime > 0 and nc_window >= 0 and max_nonces > 0):
            raise LocalProtocolError(
                "DigestServer: need nonce_lifetime > 0, nc_window >= 0, max_nonces > 0"
            )
        self.realm = realm
        self.algorithms = canonical
        self.nonce_lifetime = nonce_lifetime
        self.nc_window = nc_window
        self.max_nonces = max_nonces
        self._secret = secret
        self._seq = 0
        # nonce -> (highest nc accepted, bitmap: bit i set = nc (highest - i) seen)
        self._seen: dict[str, tuple[int, int]] = {}
        self._expiries: list[tuple[float, str]] = []  # heap, one entry per key of _seen
        self._evicted_ms: int | None = None  # nonces issued at or before this are stale

    def __repr__(self) -> str:
        return (
            f"DigestServer(realm={self.realm!r}, algorithms={self.algorithms!r}, "
            f"nonce_lifetime={self.nonce_lifetime!r}, secret=<hidden>)"
        )

    def _mac(self, head: bytes) -> bytes:
        mac = hmac.new(self._secret, head + self.realm.encode("utf-8"), hashlib.sha256)
        return mac.digest()[:_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        """A fresh nonce carrying ``now`` to the millisecond, authenticated by the secret."""
        if not math.isfinite(now) or abs(now) >= 2**53 / 1000:
            raise LocalProtocolError(f"DigestServer: now={now!r} is not a usable clock value")
        head = round(now * 1000).to_bytes(8, "big", signed=True) + self._seq.to_bytes(4, "big")
        self._seq = (self._seq + 1) % 2**32
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii")

    def _nonce_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we made, else None."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        head, mac = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        return int.from_bytes(head[:8], "big", signed=True)

    def challenge(
        self, now: float, *, stale: bool = False, opaque: str | None = None
    ) -> list[Challenge]:
        """One challenge per algorithm, most preferred first, sharing one fresh nonce."""
        nonce = self.make_nonce(now)
        return [
            Challenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=a,
                qop=("auth",),
                opaque=opaque,
                stale=stale,
            )
            for a in self.algorithms
        ]

    def verify(
        self,
        credentials: Credentials,
        *,
        method: str,
        password: str | None = None,
        ha1: str | None = None,
        now: float,
        body: bytes = b"",
    ) -> AuthResult:
        """Check ``credentials`` for a request ``method`` (with ``body`` for qop=auth-int).

        Give the user's ``password`` or their ``ha1_for(..., credentials.algorithm)``.
        Records the nonce-count only on OK.
        """
        if (password is None) == (ha1 is None):
            raise LocalProtocolError("DigestServer.verify: give exactly one of password and ha1")
        self.handle_timeout(now)
        c = credentials
        qop = None if c.qop is None else c.qop.lower()
        algorithm = _canonical_algorithm(c.algorithm)
        sess = algorithm.endswith("-sess")
        if (
            not c.is_digest
            or qop not in (None, "auth", "auth-int")
            or (qop is not None and (c.nc is None or c.cnonce is None))
            or (sess and c.cnonce is None)
        ):
            return AuthResult.MALFORMED
        if c.realm != self.realm:
            return AuthResult.REALM_MISMATCH
        if algorithm not in self.algorithms:
            return AuthResult.UNSUPPORTED_ALGORITHM
        issued_ms = self._nonce_ms(c.nonce)
        if issued_ms is None:
            return AuthResult.BAD_NONCE
        expected = _response_of(c, method=method, password=password, ha1=ha1, body=body)
        if not hmac.compare_digest(expected.encode(), c.response.lower().encode("utf-8")):
            return AuthResult.WRONG_RESPONSE
        issued = issued_ms / 1000
        expiry = issued + self.nonce_lifetime
        if (
            now >= expiry
            or issued - now > self.nonce_lifetime
            or (self._evicted_ms is not None and issued_ms <= self._evicted_ms)
        ):
            return AuthResult.STALE
        nc = _NO_QOP_NC if c.nc is None or qop is None else int(c.nc, 16)
        if not self._accept_nc(c.nonce, nc, expiry):
            return AuthResult.REPLAY
        return AuthResult.OK

    def _accept_nc(self, nonce: str, nc: int, expiry: float) -> bool:
        entry = self._seen.get(nonce)
        if entry is None:
            self._seen[nonce] = (nc, 1)
            heapq.heappush(self._expiries, (expiry, nonce))
            while len(self._seen) > self.max_nonces:
                _, old = heapq.heappop(self._expiries)
                del self._seen[old]
                old_ms = self._nonce_ms(old)
                if old_ms is not None and (self._evicted_ms is None or old_ms > self._evicted_ms):
                    self._evicted_ms = old_ms
            return True
        highest, bits = entry
        if nc == _NO_QOP_NC or highest == _NO_QOP_NC:
            return False
        if nc > highest:
            shift = nc - highest  # a jump past the window forgets it (and bounds the shift)
            window = max(self.nc_window, 1)
            self._seen[nonce] = (
                nc,
                1 if shift >= window else ((bits << shift) | 1) & (2**window - 1),
            )
            return True
        back = highest - nc
        if back >= self.nc_window or bits >> back & 1:
            return False
        self._seen[nonce] = (highest, bits | 1 << back)
        return True

    def next_deadline(self) -> float | None:
        """When the earliest replay-table entry expires."""
        return self._expiries[0][0] if self._expiries else None

    def handle_timeout(self, now: float) -> None:
        """Forget the nonce-counts of nonces expired by ``now``."""
        while self._expiries and self._expiries[0][0] <= now:
            _, nonce = heapq.heappop(self._expiries)
            del self._seen[nonce]


# --- client -------------------------------------------------------------------------------------


def _pick(challenges: Sequence[Challenge]) -> tuple[Challenge, str | None] | None:
    """RFC 8760 §2.5: the topmost Digest challenge with a known algorithm and qop."""
    for ch in challenges:
        if not ch.is_digest or _canonical_algorithm(ch.algorithm) not in SUPPORTED_ALGORITHMS:
            continue
        offered = [q.lower() for q in ch.qop]
        if "auth" in offered:
            return ch, "auth"
        if "auth-int" in offered:
            return ch, "auth-int"
        if not offered:
            return ch, None
    return None


def _no_usable(challenges: Sequence[Challenge]) -> AuthError:
    offered = ", ".join(f"{c.scheme} {c.algorithm}" for c in challenges) or "none"
    return AuthError(f"no usable digest challenge (offered: {cut(offered)})")


def answer_challenge(
    challenges: Sequence[Challenge],
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    ids: Ids,
    body: bytes = b"",
    nc: int = 1,
) -> Credentials:
    """Credentials answering the first usable challenge (RFC 3261 §22.2, RFC 8760 §2.5).

    Prefers qop ``auth``, then ``auth-int``, then the RFC 2069 form when no qop is offered.
    Raises ``AuthError`` if no challenge can be answered.
    """
    picked = _pick(challenges)
    if picked is None:
        raise _no_usable(challenges)
    ch, qop = picked
    if not 0 < nc < 2**32:
        raise LocalProtocolError(f"answer_challenge: nc={nc} outside 1..0xffffffff")
    sess = _canonical_algorithm(ch.algorithm).endswith("-sess")
    cnonce = ids.token(16) if qop is not None or sess else None
    nc_text = f"{nc:08x}" if qop is not None else None
    unsigned = Credentials(
        username=username,
        realm=ch.realm,
        nonce=ch.nonce,
        uri=uri,
        algorithm=ch.algorithm,
        cnonce=cnonce,
        opaque=ch.opaque,
        qop=qop,
        nc=nc_text,
    )
    response = _response_of(unsigned, method=method, password=password, ha1=None, body=body)
    return replace(unsigned, response=response)


class DigestClient:
    """Answers challenges and reuses the last one, counting nc up (RFC 2617 §3.2.2).

    Holds no password: each call is given it. ``answer`` starts over on a new challenge
    (also on ``stale=true``); ``next_credentials`` authorizes a further request
    pre-emptively with the same nonce and the next nonce-count.
    """

    def __init__(self, *, username: str, ids: Ids) -> None:
        self.username = username
        self._ids = ids
        self._challenge: Challenge | None = None
        self._nc = 0

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r}, nc={self._nc})"

    def answer(
        self,
        challenges: Sequence[Challenge],
        *,
        password: str,
        method: str,
        uri: str,
        body: bytes = b"",
    ) -> Credentials:
        picked = _pick(challenges)
        if picked is None:
            raise _no_usable(challenges)
        if picked[0] != self._challenge:
            self._challenge, self._nc = picked[0], 0
        self._nc += 1
        return answer_challenge(
            [picked[0]],
            username=self.username,
            password=password,
            method=method,
            uri=uri,
            ids=self._ids,
            body=body,
            nc=self._nc,
        )

    def next_credentials(
        self, *, password: str, method: str, uri: str, body: bytes = b""
    ) -> Credentials | None:
        """Credentials for another request on the last nonce, or None before any challenge."""
        if self._challenge is None:
            return None
        return self.answer([self._challenge], password=password, method=method, uri=uri, body=body)
