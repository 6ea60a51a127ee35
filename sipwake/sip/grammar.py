"""RFC 3261 §25 grammar: named regex fragments and small lexical helpers.

Every typed header parser builds on these. Fragments are plain strings so they
compose; the compiled patterns used on the hot path are module constants.
Values handed in here are already unfolded (the parser turns folded lines into
a single space), so LWS is ``[ \\t]*``.
"""

from __future__ import annotations

import re

from sipwake.errors import SipParseError, cut

__all__ = [
    "COMPILED",
    "HOST",
    "LWS",
    "PARAM_VALUE",
    "QUOTED_STRING",
    "TOKEN",
    "Params",
    "is_token",
    "parse_checked_params",
    "parse_params",
    "quote",
    "split_commas",
    "unquote",
]

#: True when this package runs compiled by mypyc (``SIPWAKE_COMPILE=1 pip install .``);
#: ``sipwake serve`` prints which core runs.
COMPILED = not __file__.endswith(".py")

#: RFC 3261 §25.1 token characters.
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = rf"[{TOKEN_CHARS}]++"
#: Linear white space after unfolding.
LWS = r"[ \t]*"
#: quoted-string: qdtext or quoted-pair, any UTF-8 (already decoded) inside.
QUOTED_STRING = r'"(?:[^"\\\r\n]++|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*+"'
IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
#: IPv6 reference; tolerant of RFC 5118 §4.10's three-colon form.
IPV6_REF = r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]"
HOSTNAME = r"[A-Za-z0-9_][A-Za-z0-9\-_.]*+"
#: A port number, 0-65535, as a regex.
PORT = r"(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4})(?!\d)"
HOST = rf"(?:{IPV6_REF}|{HOSTNAME})"
#: gen-value for header parameters: token, host (incl. [v6]) or quoted-string.
PARAM_VALUE = rf"(?:{QUOTED_STRING}|{IPV6_REF}|[{TOKEN_CHARS}:\[\]/]++)"
#: ``*( SEMI generic-param )`` then trailing LWS, as one regex fragment.
PARAMS = rf"(?:{LWS};{LWS}{TOKEN}(?:{LWS}={LWS}{PARAM_VALUE})?)*+{LWS}"

_TOKEN_RE = re.compile(TOKEN)
_PARAM_RE = re.compile(rf"{LWS};{LWS}({TOKEN})(?:{LWS}={LWS}({PARAM_VALUE}))?")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_QUOTE_RE = re.compile(r'["\\]')

#: Parameters in written order: ``(name, value)``; ``value`` is None for a bare flag.
Params = tuple[tuple[str, str | None], ...]


def is_token(text: str) -> bool:
    """True if ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_RE.fullmatch(text) is not None


def unquote(text: str) -> str:
    """Strip the quotes of a quoted-string and resolve its quoted-pairs."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


def quote(text: str) -> str:
    """Make ``text`` a quoted-string, escaping ``"`` and ``\\``."""
    if _NEEDS_QUOTE_RE.search(text):
        text = _NEEDS_QUOTE_RE.sub(lambda m: "\\" + m.group(0), text)
    return f'"{text}"'


def split_commas(value: str) -> list[str]:
    """Split a header value on top-level commas (not inside quotes or ``<>``).

    Empty elements are kept (as ``""``) so callers can reject them.
    """
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def parse_params(text: str, pos: int, where: str) -> Params:
    """Parse ``*( SEMI generic-param )`` from ``text[pos:]`` up to the end.

    Raises ``SipParseError`` naming ``where`` on anything left over, e.g. an
    empty parameter (``;;``) or a stray character.
    """
    params: list[tuple[str, str | None]] = []
    n = len(text)
    match = _PARAM_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            rest = text[pos:].strip(" \t")
            if not rest:
                break
            raise SipParseError(f"{where}: bad parameter at {cut(rest)!r}")
        params.append((m.group(1), m.group(2)))
        pos = m.end()
    return tuple(params)


def parse_checked_params(text: str) -> Params:
    """``parse_params(text, 0, …)`` for a ``text`` already matched by ``PARAMS``: without
    quotes or white space, splitting on ``;`` and ``=`` finds the same parameters."""
    if '"' in text or " " in text or "\t" in text:
        return parse_params(text, 0, "parameters")
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


def find_param(params: Params, name: str) -> tuple[bool, str | None]:
    """Look a parameter up by case-insensitive name: ``(present, value)``."""
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return True, value
    return False, None


def format_params(params: Params) -> str:
    """Serialise parameters back to ``;name=value;flag``."""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])
