"""Requests and responses the transaction layer builds itself.

- ``add_via``: the Via a client transaction needs (RFC 3261 §8.1.1.7, RFC 3581).
- ``build_ack``: the ACK an ICT sends for a 3xx-6xx response (§17.1.1.3).
- ``build_cancel``: the CANCEL for a pending INVITE (§9.1).
- ``trying_response``: the IST's own 100 Trying (§8.2.6.1, §17.2.1).
- ``overload_response``: 503 with Retry-After when the layer is full (§21.5.4).
- ``sent_response``, ``sent_request``: what a transaction kept as the bytes it sent,
  read back.

Header values are copied as written, so what goes out matches what came in.
"""

from __future__ import annotations

from sipwake.errors import LocalProtocolError
from sipwake.ids import Ids
from sipwake.sip.message import Headers, Request, Response, make_response
from sipwake.sip.uri import Uri

__all__ = [
    "add_via",
    "build_ack",
    "build_cancel",
    "overload_response",
    "sent_request",
    "sent_response",
    "trying_response",
]


def add_via(request: Request, *, transport: str, host: str, port: int | None, ids: Ids) -> str:
    """Put a new top Via on ``request`` (in place) and return its fresh branch.

    The branch carries the RFC 3261 magic cookie (§8.1.1.7) and the Via a
    valueless ``rport`` (RFC 3581 §3). ``transport`` is a Via transport or a
    ``Peer.transport`` (``udp`` → ``UDP``); an IPv6 ``host`` is bracketed.
    """
    branch = ids.branch()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    hostport = host if port is None else f"{host}:{port}"
    request.headers.insert("Via", f"SIP/2.0/{transport.upper()} {hostport};branch={branch};rport")
    return branch


def _top_via_value(request: Request) -> str:
    values = request.headers.values("via")
    if not values:
        raise LocalProtocolError(f"{request.method} has no Via header")
    return values[0]


def _single_value(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise LocalProtocolError(f"{message!r} has no {name} header")
    return value


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a 3xx-6xx ``response`` to ``invite`` (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number come from the INVITE, To
    from the response (with its tag); the only Via is the INVITE's top Via
    (same branch), and the INVITE's Route header fields are copied.
    """
    fields = [("Via", _top_via_value(invite))]
    fields += [("Route", value) for value in invite.headers.get_all("Route")]
    fields += [
        ("Max-Forwards", "70"),
        ("From", _single_value(invite, "From")),
        ("To", _single_value(response, "To")),
        ("Call-ID", _single_value(invite, "Call-ID")),
        ("CSeq", f"{invite.cseq.seq} ACK"),
        ("Content-Length", "0"),
    ]
    return Request("ACK", invite.uri, Headers(fields))


def build_cancel(invite: Request, *, reason: str | None = None) -> Request:
    """The CANCEL for ``invite`` (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From and the CSeq number are the INVITE's, the
    CSeq method is CANCEL, the only Via is the INVITE's top Via (so the CANCEL
    has the INVITE's branch), and the INVITE's Route header fields are copied.
    ``reason`` becomes a Reason header field (RFC 3326), e.g.
    ``SIP;cause=200;text="Call completed elsewhere"``.
    """
    if invite.method != "INVITE":
        raise LocalProtocolError(f"only an INVITE can be cancelled, not {invite.method}")
    fields = [("Via", _top_via_value(invite))]
    fields += [("Route", value) for value in invite.headers.get_all("Route")]
    fields += [
        ("Max-Forwards", "70"),
        ("From", _single_value(invite, "From")),
        ("To", _single_value(invite, "To")),
        ("Call-ID", _single_value(invite, "Call-ID")),
        ("CSeq", f"{invite.cseq.seq} CANCEL"),
    ]
    if reason is not None:
        fields.append(("Reason", reason))
    fields.append(("Content-Length", "0"))
    return Request("CANCEL", invite.uri, Headers(fields))


def trying_response(request: Request) -> Response:
    """100 Trying for ``request``: no To tag, Timestamp copied (RFC 3261 §8.2.6.1)."""
    response = make_response(request, 100)
    timestamp = request.headers.get("Timestamp")
    if timestamp is not None:
        response.headers.add("Timestamp", timestamp)
    return response


def overload_response(request: Request, *, to_tag: str, retry_after_s: int) -> Response:
    """503 Service Unavailable with Retry-After (RFC 3261 §21.5.4, §20.33)."""
    response = make_response(request, 503, to_tag=to_tag)
    response.headers.add("Retry-After", str(retry_after_s))
    return response


def sent_response(data: bytes) -> Response:
    """The response ``Message.to_bytes`` wrote as ``data``, read back.

    A transaction that lingers to re-send a message keeps it as bytes, which the garbage
    collector does not track (a parsed message is a handful of objects it does). This is
    not a parser: ``to_bytes`` writes the start line, one ``name: value`` line per field
    and the body, all as they are, and this splits them apart again, so the message read
    back writes exactly ``data`` again.
    """
    start, headers, body = _split(data)
    _, status, reason = start.split(" ", 2)
    return Response(int(status), reason, headers, body)


def sent_request(data: bytes, uri: Uri) -> Request:
    """The request ``Message.to_bytes`` wrote as ``data``, read back (see ``sent_response``);
    ``uri`` is its Request-URI, the object itself, kept by the caller."""
    start, headers, body = _split(data)
    return Request(start.partition(" ")[0], uri, headers, body)


def _split(data: bytes) -> tuple[str, Headers, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    start, *lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    return start, Headers([_field(line) for line in lines]), body


def _field(line: str) -> tuple[str, str]:
    name, _, value = line.partition(": ")
    return name, value
