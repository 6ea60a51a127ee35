"""How to reach a binding registered over UDP: its Contact, or the address it came from.

RFC 3261 §10.3 and §16.5 send a request for a binding to its Contact URI. That is the
right place when the device can be reached there, and the only right place for a
third-party registration (RFC 3261 §10.2: a provisioning tool, a gateway or SIPp
registering another host or port), where the REGISTER's source is not the device. Two
cases send to the REGISTER's source instead:

* the device asked for outbound (RFC 5626 §5: ``reg-id`` and ``+sip.instance``): requests
  follow the flow it registered over;
* a NAT is in the way, detected as Kamailio's ``nat_uac_test`` and Flexisip's NatHelper
  detect it: the top Via's sent-by is not the address and port the packet came from
  (the device wrote an address it does not own as seen from here), or the Contact names
  a private address (RFC 1918, RFC 6598 shared space, IPv6 ULA and link-local) while the
  packet came from one that is not private. The source is then where the NAT forwards
  answers back (RFC 3581), and the Contact's private address reaches nobody.

A third-party registration is not a NAT: its Via's sent-by is the source (the tool
registering sends from where it says), while the Contact names another port or host.

Over TCP, TLS and WebSocket the connection the binding registered over is used while it
is open (as the node does); this module is about UDP only.
"""

from __future__ import annotations

import ipaddress

from sipwake.sip.headers import Via
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri

__all__ = ["behind_nat", "is_private"]

#: RFC 3261 §18.1: the port a sent-by without one means, per transport.
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443, "sctp": 5060}

#: Address blocks a NAT keeps behind it: RFC 1918, RFC 6598 (carrier-grade NAT), RFC 4193
#: (IPv6 unique local) and link-local (RFC 3927, RFC 4291).
_PRIVATE = tuple(
    ipaddress.ip_network(block)
    for block in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def is_private(host: str) -> bool:
    """Whether ``host`` is an IP literal in an address block NATs hide (see ``_PRIVATE``);
    a host name is not."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(address in block for block in _PRIVATE)


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a.lower() == b.lower()


def behind_nat(via: Via, source: Peer, contact: SipUri) -> bool:
    """Whether a REGISTER whose top Via is ``via``, received from ``source`` and
    registering ``contact``, came through a NAT (see the module text)."""
    sent_port = via.port if via.port is not None else _DEFAULT_PORTS.get(via.transport.lower())
    if sent_port != source.port:
        return True
    if via.host != source.host and not _same_host(via.host, source.host):
        return True
    if contact.host == source.host:  # the common case: nothing to parse
        return False
    return is_private(contact.host) and not is_private(source.host)
