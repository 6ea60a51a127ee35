"""Reading a REGISTER: every check that can refuse it before a binding changes.

``read_register`` turns a request into a ``RegisterPlan`` (what to bind, for
how long, which Feature-Caps to answer with) or raises ``Rejection`` carrying
the status to answer. The checks follow RFC 3261 §10.3 in its order:

1. Request-URI scheme (416, §8.2.2.1);
2. ``Require`` option tags we do not know (420 with ``Unsupported``, §8.2.2.3);
3. authentication and authorisation belong to the caller (§10.3 steps 3-4);
4. the AOR: the To URI must be sip/sips (400, RFC 4475 §3.3.4 unksm2) and in
   one of our domains (404, step 5);
5. ``Contact: *`` only alone and with ``Expires: 0`` (400, step 6);
6. per contact (step 7): expiry from its ``expires`` parameter, else the
   Expires header, else the default; 0 < expiry < minimum gives 423 with
   Min-Expires; longer than the maximum is shortened; push parameters
   (RFC 8599 §5.6.1): a provider we do not serve gives 555, a malformed set
   400, a capability query (``pn-provider`` without ``pn-prid``) is answered
   with Feature-Caps; RFC 5626 §6: ``reg-id`` needs ``+sip.instance`` (400),
   counts only with ``Supported: outbound``, and a registrar that is not the
   first hop needs the first Path URI to carry ``ob`` (439).

Deliberate choices: the Request-URI host is not checked against ``domains``
(a lab PBX is often addressed by IP; the node routes only REGISTERs meant for
it here); Path without ``Supported: path`` is accepted and stored but not
echoed (RFC 3327 §5.3 allows it). Contacts being removed (expiry 0) are not
checked for push parameters (RFC 8599 §4.1.2: they must not carry pn-prid).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import unquote

from sipwake.frozen import interpreted_init
from sipwake.registrar.config import SUPPORTED_EXTENSIONS, RegistrarConfig
from sipwake.sip.headers import (
    NameAddr,
    contact_expires,
    contact_instance,
    contact_q,
    parse_name_addr,
)
from sipwake.sip.message import Request
from sipwake.sip.pushtarget import (
    PushTarget,
    is_push_query_params,
    push_params,
    push_target_from_params,
)
from sipwake.sip.uri import SipUri

__all__ = ["ContactPlan", "RegisterPlan", "Rejection", "read_register"]

#: RFC 3261 §10.3 step 7: 423 only for intervals shorter than one hour.
_ONE_HOUR = 3600
_MAX_REG_ID = 2**31 - 1


class Rejection(Exception):
    """The REGISTER is refused with ``status`` (internal control flow of the registrar)."""

    def __init__(
        self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason or ''}".strip())
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ContactPlan:
    """One Contact of a REGISTER, checked: what to bind and for how long."""

    uri: SipUri
    expires_s: int
    """Granted expiry (0 removes the binding)."""
    q: float = 1.0
    instance: str | None = None
    reg_id: int | None = None
    """Set only when RFC 5626 outbound applies (Supported: outbound, instance, reg-id)."""
    push: PushTarget | None = None
    pnsreg: bool = False

    def __init__(
        self,
        *,
        uri: SipUri,
        expires_s: int,
        q: float = 1.0,
        instance: str | None = None,
        reg_id: int | None = None,
        push: PushTarget | None = None,
        pnsreg: bool = False,
    ) -> None:
        self.uri = uri  # type: ignore[misc]
        self.expires_s = expires_s  # type: ignore[misc]
        self.q = q  # type: ignore[misc]
        self.instance = instance  # type: ignore[misc]
        self.reg_id = reg_id  # type: ignore[misc]
        self.push = push  # type: ignore[misc]
        self.pnsreg = pnsreg  # type: ignore[misc]


interpreted_init(ContactPlan)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RegisterPlan:
    """A REGISTER that passed every check (RFC 3261 §10.3 steps 1-7)."""

    aor: str
    call_id: str
    cseq: int
    wildcard: bool
    """``Contact: *`` with ``Expires: 0``: remove every binding of the AOR."""
    contacts: tuple[ContactPlan, ...]
    """Empty (and not ``wildcard``): a query for the current bindings."""
    path: tuple[str, ...]
    echo_path: bool
    """The UA sent ``Supported: path``: copy Path into the 200 (RFC 3327 §5.3)."""
    outbound: bool
    """Outbound applied to a contact: answer ``Require: outbound`` (RFC 5626 §6)."""
    feature_caps: tuple[str, ...]
    """``Feature-Caps`` values for the 200, one per push provider (RFC 8599 §5.4)."""
    user_agent: str | None

    def __init__(
        self,
        *,
        aor: str,
        call_id: str,
        cseq: int,
        wildcard: bool,
        contacts: tuple[ContactPlan, ...],
        path: tuple[str, ...],
        echo_path: bool,
        outbound: bool,
        feature_caps: tuple[str, ...],
        user_agent: str | None,
    ) -> None:
        self.aor = aor  # type: ignore[misc]
        self.call_id = call_id  # type: ignore[misc]
        self.cseq = cseq  # type: ignore[misc]
        self.wildcard = wildcard  # type: ignore[misc]
        self.contacts = contacts  # type: ignore[misc]
        self.path = path  # type: ignore[misc]
        self.echo_path = echo_path  # type: ignore[misc]
        self.outbound = outbound  # type: ignore[misc]
        self.feature_caps = feature_caps  # type: ignore[misc]
        self.user_agent = user_agent  # type: ignore[misc]


interpreted_init(RegisterPlan)


def read_register(request: Request, config: RegistrarConfig) -> RegisterPlan:
    """Check a REGISTER; raises ``Rejection``, or ``RemoteProtocolError`` for a header
    that does not parse (the caller answers its ``status_hint``)."""
    if not isinstance(request.uri, SipUri):
        raise Rejection(416)
    unknown = [t for t in request.tokens("require") if t not in SUPPORTED_EXTENSIONS]
    if unknown:
        raise Rejection(420, headers=(("Unsupported", ", ".join(unknown)),))
    to_uri = request.to.uri
    if not isinstance(to_uri, SipUri):
        raise Rejection(400, "To: address-of-record must be a sip or sips URI")
    if to_uri.host.lower().strip("[]") not in config.domains:
        raise Rejection(404, "Not Found (domain not served here)")
    call_id = request.call_id
    cseq = request.cseq.seq
    contacts = request.contacts
    expires_header = request.expires
    supported = request.tokens("supported")
    path = tuple(request.headers.values("path"))
    user_agent = request.headers.get("User-Agent")
    if user_agent is not None and len(user_agent) <= 200:
        user_agent = sys.intern(user_agent)  # one copy per app version, not per binding
    echo_path = bool(path) and "path" in supported
    if contacts is None:
        if expires_header != 0:
            raise Rejection(400, "Contact: '*' needs Expires: 0")
        return RegisterPlan(
            aor=config.aor(to_uri),
            call_id=call_id,
            cseq=cseq,
            wildcard=True,
            contacts=(),
            path=path,
            echo_path=echo_path,
            outbound=False,
            feature_caps=(),
            user_agent=user_agent,
        )
    default = expires_header if expires_header is not None else config.default_expires
    outbound_asked = "outbound" in supported
    plans: list[ContactPlan] = []
    too_brief = 0
    caps: dict[str, bool] = {}  # provider -> +sip.pnsreg asked
    for index, contact in enumerate(contacts, start=1):
        plan, minimum = _read_contact(contact, index, default, outbound_asked, config, caps)
        if minimum:
            too_brief = max(too_brief, minimum)
        plans.append(plan)
    if too_brief:
        raise Rejection(423, headers=(("Min-Expires", str(too_brief)),))
    # reg-id is kept only when outbound was asked for (``_read_contact``).
    outbound = outbound_asked and any(p.reg_id is not None and p.expires_s > 0 for p in plans)
    if outbound and len(request.via) > 1 and not _first_hop_outbound(path):
        raise Rejection(439)
    feature_caps = tuple(
        f'*;+sip.pns="{provider}"' + (f';+sip.pnsreg="{config.pnsreg}"' if pnsreg else "")
        for provider, pnsreg in caps.items()
    )
    return RegisterPlan(
        aor=config.aor(to_uri),
        call_id=call_id,
        cseq=cseq,
        wildcard=False,
        contacts=tuple(plans),
        path=path,
        echo_path=echo_path,
        outbound=outbound,
        feature_caps=feature_caps,
        user_agent=user_agent,
    )


def _read_contact(
    contact: NameAddr,
    index: int,
    default: int,
    outbound_asked: bool,
    config: RegistrarConfig,
    caps: dict[str, bool],
) -> tuple[ContactPlan, int]:
    """One contact's plan, and the Min-Expires it is short of (0 if none)."""
    uri = contact.sip_uri
    if uri is None:
        raise Rejection(400, f"Contact #{index}: only sip and sips URIs can be registered")
    if contact.params:
        requested = contact_expires(contact, default)
        instance = contact_instance(contact)
        reg_id = _reg_id(contact, index, instance)
        if not outbound_asked:
            reg_id = None  # RFC 5626 §6: without Supported: outbound, RFC 3261 rules apply
        pnsreg = contact.has_param("+sip.pnsreg")
        q = contact_q(contact)
    else:  # the common shape: what the functions above read from no parameters
        requested, instance, reg_id, pnsreg, q = default, None, None, False, 1.0
    push: PushTarget | None = None
    if requested > 0:
        found = push_params(uri)
        if is_push_query_params(found):
            provider = unquote(found["pn-provider"] or "").lower()
            if provider and provider not in config.push_providers:
                raise Rejection(555)
            for name in [provider] if provider else sorted(config.push_providers):
                caps[name] = caps.get(name, False)
        else:
            push = push_target_from_params(found)
            if push is not None:
                if push.provider not in config.push_providers:
                    raise Rejection(555)
                if not push.legacy:
                    caps[push.provider] = caps.get(push.provider, False) or pnsreg
    minimum = max(config.min_expires, config.min_push_expires) if push else config.min_expires
    short = minimum if 0 < requested < min(minimum, _ONE_HOUR) else 0
    maximum = config.push_max_expires if push else config.max_expires
    plan = ContactPlan(
        uri=uri,
        expires_s=min(requested, maximum),
        q=q,
        instance=instance,
        reg_id=reg_id,
        push=push,
        pnsreg=pnsreg,
    )
    return plan, short


def _reg_id(contact: NameAddr, index: int, instance: str | None) -> int | None:
    """RFC 5626 §4.2: ``reg-id`` is 1..2^31-1 and only meaningful with ``+sip.instance``."""
    if not contact.has_param("reg-id"):
        return None
    raw = contact.param("reg-id") or ""
    if not raw.isdigit() or not 0 < int(raw) <= _MAX_REG_ID:
        raise Rejection(400, f"Contact #{index}: reg-id must be 1..2147483647")
    if instance is None:
        raise Rejection(400, f"Contact #{index}: reg-id without +sip.instance")
    return int(raw)


def _first_hop_outbound(path: tuple[str, ...]) -> bool:
    """RFC 5626 §6: the edge proxy that recorded the flow put ``ob`` on its Path URI."""
    if not path:
        return False
    first = parse_name_addr(path[0], "Path #1")
    return isinstance(first.uri, SipUri) and first.uri.has_param("ob")
