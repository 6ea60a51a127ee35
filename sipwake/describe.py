"""Describe a parsed SIP message for people (``sipwake parse``): what each header means.

Pure formatting: returns lines of text; the CLI prints them. Push tokens and
credentials are masked.
"""

from __future__ import annotations

from sipwake.errors import SipParseError
from sipwake.sip.grammar import split_commas
from sipwake.sip.headers import NameAddr, Via, parse_name_addr, parse_via
from sipwake.sip.message import Message, Request, Response, canonical_name
from sipwake.sip.pushtarget import mask_token, push_target_from_uri, redact
from sipwake.sip.uri import AbsoluteUri, SipUri, TelUri, Uri

__all__ = ["describe_message"]

_NAME_ADDR = {"from", "to", "contact", "route", "record-route", "path", "refer-to"}
_SECRET_HEADERS = {"authorization", "proxy-authorization", "sipwake-push-key"}


def describe_uri(uri: Uri) -> str:
    match uri:
        case SipUri():
            parts = [f"scheme={uri.scheme}"]
            if uri.user is not None:
                parts.append(f"user={uri.user!r}")
            if uri.password is not None:
                parts.append("password=***")
            parts.append(f"host={uri.host}")
            if uri.port is not None:
                parts.append(f"port={uri.port}")
            params = [
                k if v is None else f"{k}={mask_token(v) if k.lower() in _TOKEN_PARAMS else v}"
                for k, v in uri.params
            ]
            if params:
                parts.append("params=" + ";".join(params))
            if uri.headers:
                parts.append("headers=" + "&".join(f"{k}={v}" for k, v in uri.headers))
            return " ".join(parts)
        case TelUri():
            return f"scheme=tel number={uri.number}"
        case AbsoluteUri():
            return f"scheme={uri.scheme} (not SIP) rest={uri.rest!r}"


_TOKEN_PARAMS = {"pn-prid", "pn-tok"}


def _describe_via(via: Via) -> str:
    port = via.port if via.port is not None else "(default)"
    params = " ".join(k if v is None else f"{k}={v}" for k, v in via.params)
    return f"transport={via.transport} host={via.host} port={port} {params}".rstrip()


def _describe_name_addr(addr: NameAddr) -> list[str]:
    out = []
    if addr.display_name is not None:
        out.append(f"display-name={addr.display_name!r}")
    out.append(describe_uri(addr.uri))
    if addr.params:
        out.append("params=" + ";".join(k if v is None else f"{k}={v}" for k, v in addr.params))
    lines = [" ".join(out)]
    if isinstance(addr.uri, SipUri):
        try:
            target = push_target_from_uri(addr.uri)
        except SipParseError as exc:
            lines.append(f"push target: invalid: {exc.reason}")
        else:
            if target is not None:
                form = "Linphone legacy" if target.legacy else "RFC 8599"
                lines.append(
                    f"push target ({form}): provider={target.provider} "
                    f"param={target.param} prid={mask_token(target.prid)}"
                    + (" sandbox" if target.sandbox else "")
                )
    return lines


def describe_message(message: Message) -> list[str]:
    """Lines describing ``message``: start line, then each header and its parsed meaning."""
    lines: list[str] = []
    match message:
        case Request():
            lines.append(f"request: method={message.method}")
            lines.append(f"  Request-URI: {describe_uri(message.uri)}")
        case Response():
            lines.append(f"response: status={message.status} reason={message.reason!r}")
    lines.append("headers:")
    for name, value in message.headers:
        key = canonical_name(name)
        shown = "***" if key in _SECRET_HEADERS else redact(value)
        label = name if name.lower() == key else f"{name} ({key})"
        lines.append(f"  {label}: {shown}")
        try:
            if key == "via":
                for i, part in enumerate(message.headers.values(name)):
                    lines.append(f"    via[{i}] {_describe_via(parse_via(part))}")
            elif key in _NAME_ADDR and value != "*":
                parts = [value] if key in ("from", "to") else split_commas(value)
                for part in parts:
                    lines += [
                        f"    {line}" for line in _describe_name_addr(parse_name_addr(part, name))
                    ]
        except SipParseError as exc:  # already validated; defensive for extension headers
            lines.append(f"    (unparsed: {exc.reason})")
    lines.append(f"body: {len(message.body)} bytes")
    return lines
