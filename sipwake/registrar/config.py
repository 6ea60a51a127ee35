"""Registrar policy: the settings that RFC 3261 §10.3 and RFC 8599 leave to the operator."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from sipwake.sip.uri import SipUri

__all__ = ["DEFAULT_PUSH_PROVIDERS", "SUPPORTED_EXTENSIONS", "RegistrarConfig"]

#: RFC 8599 §14.5 PNS values, plus Linphone's ``apns.dev`` (APNs sandbox, PROTOCOLS §2.2).
DEFAULT_PUSH_PROVIDERS = frozenset({"apns", "apns.dev", "fcm", "webpush"})

#: Option tags the registrar understands in ``Require`` (RFC 3327 path, RFC 5626 outbound).
SUPPORTED_EXTENSIONS = frozenset({"path", "outbound"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarConfig:
    """Registrar settings; times in seconds (``*_expires`` are SIP Expires values)."""

    domains: AbstractSet[str]
    """Domains whose AORs this registrar holds (RFC 3261 §10.3 step 5; else 404)."""
    canonical_domain: str | None = None
    """When set, an AOR in any of ``domains`` is keyed as ``sip:user@canonical_domain``
    (the domain, its aliases and the server's own addresses name one user)."""
    push_providers: AbstractSet[str] = DEFAULT_PUSH_PROVIDERS
    """``pn-provider`` values accepted (RFC 8599 §5.6.1; else 555)."""
    default_expires: int = 3600
    """Requested for a contact when neither its ``expires`` nor the Expires header
    says (then checked and shortened like any request)."""
    min_expires: int = 60
    """Shorter non-zero requests get 423 with Min-Expires (RFC 3261 §10.3 step 7)."""
    max_expires: int = 3600
    """Longer requests are shortened to this."""
    min_push_expires: int = 180
    """Minimum for a contact with push parameters: the binding must outlive the
    push-for-refresh lead time (RFC 8599 §5.5 recommends 120 s) plus a margin;
    shorter gets 423 (RFC 8599 §5.6.1.1 step 3)."""
    max_push_expires: int | None = 604800
    """Maximum for a contact with push parameters: 7 days, as Linphone asks and Flexisip's
    wiki advises (a suspended app cannot refresh on its own; the node pushes it to
    re-register before expiry, ``sipwake.registrar.refresh``). None: ``max_expires``.
    At least ``max_expires``."""
    max_bindings_per_aor: int = 10
    """Beyond this, the least recently registered bindings are dropped."""
    flow_timer: int | None = 120
    """``Flow-Timer`` sent with ``Require: outbound`` on reliable flows (RFC 5626 §4.4.1)."""
    pnsreg: int = 130
    """``+sip.pnsreg`` value (seconds before expiry the UA refreshes by itself),
    sent when the Contact carried the ``+sip.pnsreg`` media tag; RFC 8599 §5.6.1.1
    wants more than 120."""

    def aor(self, uri: SipUri) -> str:
        """The AOR key of ``uri`` (RFC 3261 §10.3 step 5), aliases folded into the domain."""
        key = uri.aor()
        if self.canonical_domain is None or uri.host.lower().strip("[]") not in self.domains:
            return key
        user = key[4:].rpartition("@")[0] if "@" in key else None
        return f"sip:{user}@{self.canonical_domain}" if user is not None else key

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", frozenset(d.lower().strip("[]") for d in self.domains))
        object.__setattr__(
            self, "push_providers", frozenset(p.lower() for p in self.push_providers)
        )
        if not 0 < self.min_expires <= self.max_expires:
            raise ValueError(
                f"need 0 < min_expires ({self.min_expires}) <= max_expires ({self.max_expires})"
            )
        if self.default_expires <= 0:
            raise ValueError(f"default_expires must be positive, got {self.default_expires}")
        if self.max_push_expires is not None and self.max_push_expires < self.max_expires:
            raise ValueError(
                f"need max_push_expires ({self.max_push_expires}) >= "
                f"max_expires ({self.max_expires})"
            )
        if self.max_bindings_per_aor < 1:
            raise ValueError("max_bindings_per_aor must be at least 1")

    @property
    def push_max_expires(self) -> int:
        """The effective maximum for a contact with push parameters."""
        return self.max_push_expires if self.max_push_expires is not None else self.max_expires
