"""Whose voicemail a call is for, and why it came here.

A diverting proxy tells the voicemail server in up to four places, read in
this order (the first that gives an answer wins):

1. the Request-URI parameters of RFC 4458 §3.2: ``target`` (the escaped URI
   originally called) and ``cause`` (a SIP status: 486 busy, 408 no reply,
   480 unavailable, 302 unconditional …), as sipwake's own call-wake engine
   writes them;
2. History-Info (RFC 7044): the entry that the last ``mp``/``rc`` parameter
   points back to, else the first entry; the cause from a ``Reason`` header
   escaped in an entry's URI (``?Reason=SIP%3Bcause%3D408``);
3. Diversion (RFC 5806): the topmost value is the last diverting party; its
   ``reason`` maps to a cause as RFC 4458 §6 maps redirecting reasons;
4. the To header (a call placed straight to the voicemail box).

The mailbox directory name is the callee's user part, with anything but
letters, digits and ``._+-`` replaced, so that no name escapes the voicemail
directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from sipwake.errors import SipParseError
from sipwake.sip.headers import NameAddr, parse_name_addr
from sipwake.sip.message import Request
from sipwake.sip.uri import SipUri, TelUri, Uri, parse_uri

__all__ = ["DIVERSION_CAUSES", "Mailbox", "mailbox_for", "safe_user"]

#: RFC 5806 Diversion reasons as RFC 4458 §6 causes.
DIVERSION_CAUSES = {
    "unknown": 404,
    "user-busy": 486,
    "no-answer": 408,
    "unconditional": 302,
    "deflection": 480,
    "unavailable": 480,
    "do-not-disturb": 480,
    "out-of-service": 503,
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")
_CAUSE_RE = re.compile(r"cause=(\d{3})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Mailbox:
    """The voicemail box a call is for."""

    callee: str
    """The address originally called (``sip:alice@lab.test``)."""
    user: str
    """The mailbox (a directory name): the callee's user part, made safe."""
    cause: int | None
    """Why the call was diverted (RFC 4458 cause), if known."""
    found_in: str
    """Where the callee came from: ``target``, ``history-info``, ``diversion`` or ``to``."""


def safe_user(name: str) -> str:
    """A mailbox name safe as one path component."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")
    return cleaned or "unknown"


def _user_of(uri: Uri) -> str:
    match uri:
        case SipUri(user=user) if user:
            return unquote(user)
        case SipUri(host=host):
            return host
        case TelUri(number=number):
            return number
        case _:
            return uri.rest


def _cause(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and 100 <= int(text) <= 699 else None


def _reason_cause(uri: Uri) -> int | None:
    if not isinstance(uri, SipUri):
        return None
    for name, value in uri.headers:
        if name.lower() == "reason":
            m = _CAUSE_RE.search(unquote(value))
            if m is not None:
                return int(m.group(1))
    return None


def _plain(uri: Uri) -> str:
    """The URI as an address: ``sip:user@host``, no port, parameters or headers."""
    return uri.aor()


def _from_target(request: Request) -> tuple[Uri | None, int | None]:
    uri = request.uri
    if not isinstance(uri, SipUri):
        return None, None
    cause = _cause(uri.param("cause"))
    raw = uri.param("target")
    if not raw:
        return None, cause
    try:
        return parse_uri(unquote(raw), "target"), cause
    except SipParseError:
        return None, cause


def _entries(request: Request, name: str) -> list[NameAddr]:
    out = []
    for i, value in enumerate(request.headers.values(name)):
        try:
            out.append(parse_name_addr(value, f"{name} #{i + 1}"))
        except SipParseError:
            continue
    return out


def _from_history(request: Request) -> tuple[Uri | None, int | None]:
    entries = _entries(request, "History-Info")
    if not entries:
        return None, None
    by_index = {e.param("index"): e for e in entries if e.param("index")}
    callee = entries[0]
    for entry in entries:
        back = entry.param("mp") or entry.param("rc")
        if back and back in by_index:
            callee = by_index[back]
    cause = next((c for e in reversed(entries) if (c := _reason_cause(e.uri)) is not None), None)
    return callee.uri, cause


def _from_diversion(request: Request) -> tuple[Uri | None, int | None]:
    entries = _entries(request, "Diversion")
    if not entries:
        return None, None
    top = entries[0]
    reason = (top.param("reason") or "").strip('"').lower()
    return top.uri, DIVERSION_CAUSES.get(reason)


def mailbox_for(request: Request) -> Mailbox:
    """Whose voicemail ``request`` (an INVITE) is for; see the module docstring."""
    target, cause = _from_target(request)
    found = "target"
    for source, read in (("history-info", _from_history), ("diversion", _from_diversion)):
        if target is not None and cause is not None:
            break
        uri, extra_cause = read(request)
        if target is None and uri is not None:
            target, found = uri, source
        if cause is None:
            cause = extra_cause
    if target is None:
        target, found = request.to.uri, "to"
    return Mailbox(
        callee=_plain(target), user=safe_user(_user_of(target)), cause=cause, found_in=found
    )
