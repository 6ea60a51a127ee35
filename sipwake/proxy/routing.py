"""Where requests go: our own addresses, URI to transport address, stateless branches.

Pure helpers for the proxy core (RFC 3261 §16.4-16.6, §16.11). No DNS: a
host that is not an IP literal (or ``localhost``) cannot be reached from the
lab PBX, and the caller answers 503/404 for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from sipwake.ids import BRANCH_MAGIC
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri

__all__ = ["LocalAddress", "Locality", "stateless_branch", "uri_peer"]

_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAddress:
    """One listener as the world should address it (Via sent-by, Record-Route)."""

    transport: str
    host: str
    port: int

    @property
    def via_transport(self) -> str:
        return self.transport.upper()

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    def record_route(self, params: str = "") -> str:
        """Our Record-Route value; ``params`` (``;name=value``…) are added to its URI."""
        scheme = "sips" if self.transport in ("tls", "wss") else "sip"
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<{scheme}:{self.host_port}{transport};lr{params}>"


@dataclass(slots=True, kw_only=True)
class Locality:
    """What "us" means: the domain, aliases and every listener address."""

    domain: str
    aliases: frozenset[str] = frozenset()
    listeners: tuple[LocalAddress, ...] = ()
    _hosts: frozenset[str] = field(default=frozenset(), init=False)

    def __post_init__(self) -> None:
        hosts = {self.domain.lower(), *(a.lower() for a in self.aliases)}
        for listener in self.listeners:
            hosts.add(listener.host.lower().strip("[]"))
        self._hosts = frozenset(hosts)

    def is_our_domain(self, host: str) -> bool:
        """The host of an AOR we serve (the domain or an alias or one of our addresses)."""
        return host.lower().strip("[]") in self._hosts

    def is_us(self, uri: SipUri) -> bool:
        """A URI that addresses this proxy itself (a Route or R-URI naming a listener).

        A name of ours (the domain, an alias such as ``localhost``) counts with no port or
        with one of our listeners' ports: a softphone whose outbound proxy is typed as
        ``localhost:5060`` pre-loads ``Route: <sip:localhost:5060;lr>`` (RFC 3261 §8.1.2),
        and §16.4 has the proxy remove the Route value that names it."""
        host = uri.host.lower().strip("[]")
        ours = uri.port is None or any(uri.port == lst.port for lst in self.listeners)
        if uri.user is None and host in self._hosts and ours:
            return True
        for listener in self.listeners:
            if host == listener.host.lower().strip("[]") and uri.port in (None, listener.port):
                return True
        return False

    def listener_for(self, transport: str) -> LocalAddress:
        """The listener to put in Via / Record-Route for an outgoing ``transport``."""
        for listener in self.listeners:
            if listener.transport == transport:
                return listener
        if transport == "wss":
            return self.listener_for("ws")
        return self.listeners[0]


def _literal(host: str) -> str | None:
    bare = host.strip("[]")
    if bare.lower() == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


def uri_peer(uri: SipUri) -> Peer | None:
    """The transport address a SIP URI names, without DNS (RFC 3263 for IP literals only)."""
    transport = uri.transport or ("tls" if uri.secure else "udp")
    if transport not in _DEFAULT_PORTS:
        return None
    maddr = uri.param("maddr")
    host = _literal(maddr or uri.host)
    if host is None:
        return None
    return Peer(transport=transport, host=host, port=uri.port or _DEFAULT_PORTS[transport])


def stateless_branch(branch: str | None, salt: str) -> str:
    """A branch for a statelessly forwarded request (RFC 3261 §16.11): the same input
    branch always maps to the same output branch, so retransmissions stay matched."""
    digest = hashlib.blake2s(f"{salt}|{branch}".encode(), digest_size=10).hexdigest()
    return BRANCH_MAGIC + "sl" + digest
