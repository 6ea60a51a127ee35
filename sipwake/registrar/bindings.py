"""Bindings: one registered contact of an address-of-record (RFC 3261 §10.3).

A ``Binding`` is a frozen value; the registrar replaces it on every refresh
and keeps its ``binding_id`` stable, so a store can upsert by that id and the
call-wake engine can tell "the same device came back" from "a new device".

Identity of a binding, in the order the registrar tries it:

1. RFC 5626 §6: ``(aor, +sip.instance, reg-id)`` when outbound is in use —
   a new flow replaces the old one even from a new contact URI;
2. ``+sip.instance`` alone (Linphone reconnecting after a push wake);
3. RFC 8599 §5.3 (local policy): the push target ``(pn-provider, pn-param,
   pn-prid)`` — the same device re-registering from a new network;
4. RFC 3261 §10.3 step 7: the contact URI (§19.1.4 comparison).

Times are monotonic seconds (``now``); a store converts them to wall-clock
time and back. The contact keeps its push parameters (they identify the
device); ``forward_uri()`` strips them for forwarding (RFC 8599 §5.6.2,
as OpenSIPS and Flexisip do). ``repr`` never shows a push token.

Push key (``seal_key``): a pushable binding registered over a secure transport (TLS,
WSS) holds 32 random bytes that the registrar returns to the device only in the 200
to its REGISTER (``PUSH_KEY_HEADER``), and that seal call details in its pushes
(``sipwake.push.seal``, ``calls.encrypt_push``). It is kept across refreshes over a
secure transport and dropped by one over plain UDP/TCP/WS. ``repr`` never shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sipwake.frozen import interpreted_init
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PUSH_PARAMS, PushTarget
from sipwake.sip.uri import SipUri

__all__ = [
    "PUSH_KEY_BYTES",
    "PUSH_KEY_HEADER",
    "SECURE_TRANSPORTS",
    "Binding",
    "PushKey",
    "format_q",
]

#: RFC 8599 §5.3 identity of a device: (provider without ``.dev``, pn-param, pn-prid).
PushKey = tuple[str, str, str]

#: Length of a binding's push key (AES-256).
PUSH_KEY_BYTES = 32
#: The 200-to-REGISTER header that hands a device its push key (base64url, no padding).
PUSH_KEY_HEADER = "Sipwake-Push-Key"
#: Transports a push key may travel over (RFC 3261 §26.2: TLS; RFC 7118: WSS).
SECURE_TRANSPORTS = frozenset({"tls", "wss"})


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Binding:
    """One contact registered for an AOR (RFC 3261 §10.3, RFC 5626 §6, RFC 8599 §5)."""

    binding_id: str
    """Stable id: kept across refreshes and replacements (store key)."""
    aor: str
    """The address-of-record key, ``SipUri.aor()`` of the To URI."""
    contact: SipUri
    """The Contact URI as registered, push parameters and URI headers included."""
    expires_at: float
    """Monotonic time the binding expires at."""
    registered_at: float
    """Monotonic time of the REGISTER that last created or refreshed it."""
    call_id: str
    cseq: int
    q: float = 1.0
    instance: str | None = None
    """``+sip.instance`` without quotes and angle brackets (``urn:uuid:…``)."""
    reg_id: int | None = None
    """RFC 5626 ``reg-id``; set only when outbound was negotiated."""
    path: tuple[str, ...] = ()
    """RFC 3327 Path header values of the REGISTER, in order (pre-loaded as Route)."""
    source: Peer
    """Where the REGISTER came from: the flow to reach this contact over."""
    push: PushTarget | None = None
    """Where to push the device (RFC 8599 or Linphone legacy); None: not pushable."""
    user_agent: str | None = None
    pnsreg: bool = False
    """The Contact carried the ``+sip.pnsreg`` media feature tag (RFC 8599 §4.1.3)."""
    seal_key: bytes | None = None
    """The device's push key (see the module text); None: registered without TLS."""
    nat: bool = False
    """Registered over UDP through a NAT (``sipwake.registrar.reach``): requests go to
    ``source``, not to the Contact."""

    def __init__(
        self,
        *,
        binding_id: str,
        aor: str,
        contact: SipUri,
        expires_at: float,
        registered_at: float,
        call_id: str,
        cseq: int,
        source: Peer,
        q: float = 1.0,
        instance: str | None = None,
        reg_id: int | None = None,
        path: tuple[str, ...] = (),
        push: PushTarget | None = None,
        user_agent: str | None = None,
        pnsreg: bool = False,
        seal_key: bytes | None = None,
        nat: bool = False,
    ) -> None:
        self.binding_id = binding_id  # type: ignore[misc]
        self.aor = aor  # type: ignore[misc]
        self.contact = contact  # type: ignore[misc]
        self.expires_at = expires_at  # type: ignore[misc]
        self.registered_at = registered_at  # type: ignore[misc]
        self.call_id = call_id  # type: ignore[misc]
        self.cseq = cseq  # type: ignore[misc]
        self.q = q  # type: ignore[misc]
        self.instance = instance  # type: ignore[misc]
        self.reg_id = reg_id  # type: ignore[misc]
        self.path = path  # type: ignore[misc]
        self.source = source  # type: ignore[misc]
        self.push = push  # type: ignore[misc]
        self.user_agent = user_agent  # type: ignore[misc]
        self.pnsreg = pnsreg  # type: ignore[misc]
        self.seal_key = seal_key  # type: ignore[misc]
        self.nat = nat  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"Binding(binding_id={self.binding_id!r}, aor={self.aor!r}, "
            f"contact='{self.forward_uri()}', expires_at={self.expires_at!r}, "
            f"instance={self.instance!r}, reg_id={self.reg_id!r}, source='{self.source}', "
            f"push={self.push!r})"
        )

    def remaining(self, now: float) -> float:
        """Seconds left before the binding expires (0 once expired)."""
        return max(0.0, self.expires_at - now)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def forward_uri(self) -> SipUri:
        """The contact URI without push parameters: the Request-URI to forward to.

        Made on each call (a few microseconds, once per fork) rather than kept: a binding
        is held for hours, 100,000 of them at a time."""
        return self.contact.without_params(*PUSH_PARAMS)

    @property
    def push_key(self) -> PushKey | None:
        """RFC 8599 §5.3 device identity, when the binding is pushable."""
        return self.push.key() if self.push is not None else None

    def reach_source(self) -> bool:
        """Whether requests for this binding go to where its REGISTER came from rather
        than to its Contact: over a connection (while it is open), with RFC 5626 outbound,
        or through a NAT (``sipwake.registrar.reach``)."""
        return self.source.reliable or self.reg_id is not None or self.nat

    @property
    def outbound(self) -> bool:
        """Registered with RFC 5626 outbound (instance and reg-id)."""
        return self.reg_id is not None

    def expires_s(self, now: float) -> int:
        """The ``expires`` value that lists this binding at ``now`` in a 2xx to REGISTER.

        RFC 3261 §10.3 step 7: a registrar may shorten the duration a client asks for,
        never lengthen it. ``expires_at - now`` is a difference of float clocks and may
        land a hair above or below the integer granted, so it is never rounded up:

        * registered by the very REGISTER being answered (``now`` is its
          ``registered_at``): exactly the seconds granted (the float difference is that
          integer give or take rounding, so it is rounded to the nearest);
        * listed later (a refresh of another contact, a query): the whole seconds left,
          rounded down, so a client that re-registers by it finds the binding still there;
          but at least 1 while the binding lasts, since ``expires=0`` in a 200 reads as
          "removed" (RFC 3261 §10.2.2) and the binding is still current (§10.2.4);
        * 0 once expired.
        """
        left = self.expires_at - now
        if left <= 0:
            return 0
        if now == self.registered_at:
            return max(1, round(left))
        return max(1, math.floor(left))

    def contact_value(self, now: float) -> str:
        """The Contact header value listing this binding in a 2xx to REGISTER
        (RFC 3261 §10.3 step 8): ``<uri>;expires=N`` with ``expires_s(now)``,
        plus ``q``, ``+sip.instance`` and ``reg-id`` as registered (RFC 5626 §6)."""
        value = f"<{self.contact}>;expires={self.expires_s(now)}"
        if self.q != 1.0:
            value += f";q={format_q(self.q)}"
        if self.instance is not None:
            value += f';+sip.instance="<{self.instance}>"'
        if self.reg_id is not None:
            value += f";reg-id={self.reg_id}"
        return value


interpreted_init(Binding)


def format_q(q: float) -> str:
    """A qvalue as RFC 3261 §20.10 writes it: ``0.5``, ``0``, ``1``."""
    text = f"{q:.3f}".rstrip("0").rstrip(".")
    return text or "0"
