"""STUN keep-alives on the SIP port (RFC 5626 §4.4.2 and §8.4, RFC 5389).

A UA using SIP outbound over UDP keeps its NAT binding open and checks the flow with
STUN Binding requests sent to the registrar's SIP port; the server answers each with
a Binding success response carrying the address it saw (XOR-MAPPED-ADDRESS), which
is all RFC 5626 §8.4 asks of it. Nothing here touches a socket: ``binding_request``
tells a STUN request from a SIP message, ``binding_response`` builds the answer.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["MAGIC_COOKIE", "binding_request", "binding_response"]

MAGIC_COOKIE = 0x2112A442
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_XOR_MAPPED_ADDRESS = 0x0020
_HEADER = 20


def binding_request(data: bytes) -> bytes | None:
    """The 12-byte transaction id when ``data`` is a STUN Binding request (RFC 5389 §6:
    first two bits 0, the magic cookie, a length that fits), else None. A SIP message
    never starts with a byte below 0x40, so the two cannot be mistaken."""
    if len(data) < _HEADER or data[0] & 0xC0 or data[4:8] != _COOKIE:
        return None
    kind, length = struct.unpack_from("!HH", data)
    if kind != _BINDING_REQUEST or length % 4 or length != len(data) - _HEADER:
        return None
    return bytes(data[8:_HEADER])


def binding_response(transaction_id: bytes, host: str, port: int) -> bytes | None:
    """A Binding success response telling the requester it was seen at ``host:port``
    (None when ``host`` is not an IP address)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    raw = address.packed
    mask = _COOKIE if address.version == 4 else _COOKIE + transaction_id
    xored = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    family = 0x01 if address.version == 4 else 0x02
    value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored
    attribute = struct.pack("!HH", _XOR_MAPPED_ADDRESS, len(value)) + value
    header = struct.pack("!HH", _BINDING_SUCCESS, len(attribute)) + _COOKIE + transaction_id
    return header + attribute
