"""Requests the voicemail sends inside a dialog it answered (RFC 3261 §12.2.1.1).

As the UAS, the dialog's remote target is the INVITE's Contact, its route set
the INVITE's Record-Route values in order (§12.1.1), the local URI and tag the
To header with our tag, the remote ones the From header. The request goes to
the first Route (loose routing), else to the remote target, over UDP.
"""

from __future__ import annotations

from sipwake.errors import SipParseError
from sipwake.ids import Ids
from sipwake.sip.headers import parse_name_addr
from sipwake.sip.message import Headers, Request
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri, Uri
from sipwake.transaction import add_via

__all__ = ["build_bye", "next_hop"]


def build_bye(
    invite: Request,
    *,
    local_tag: str,
    route_set: list[str],
    cseq: int,
    host: str,
    port: int,
    ids: Ids,
    source: Peer,
) -> tuple[Request, Peer]:
    """The BYE for the dialog ``invite`` created, and where to send it; ``source`` (where
    the INVITE came from) stands in for a remote target that is not a SIP URI."""
    contacts = invite.contacts or []
    target: Uri = contacts[0].uri if contacts else invite.from_.uri
    fields = [("Max-Forwards", "70")]
    fields += [("Route", value) for value in route_set]
    to_value = invite.headers.get("To") or str(invite.to)
    fields += [
        ("From", f"{to_value};tag={local_tag}"),
        ("To", invite.headers.get("From") or str(invite.from_)),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{cseq} BYE"),
        ("Content-Length", "0"),
    ]
    bye = Request("BYE", target, Headers(fields))
    add_via(bye, transport="udp", host=host, port=port, ids=ids)
    hop = target
    if route_set:
        try:
            hop = parse_name_addr(route_set[0], "Route #1").uri
        except SipParseError:
            hop = target
    return bye, next_hop(hop, source)


def next_hop(uri: Uri, fallback: Peer) -> Peer:
    """Where a request to ``uri`` goes over UDP (RFC 3263 without DNS: host and port)."""
    if not isinstance(uri, SipUri):
        return fallback
    host = uri.param("maddr") or uri.host
    default = 5061 if uri.secure else 5060
    return Peer(transport="udp", host=host.strip("[]"), port=uri.port or default)
