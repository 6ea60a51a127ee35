"""Push parameters on a Contact URI, read into one typed ``PushTarget``.

Two spellings reach a registrar:

* RFC 8599 §4.1.3 / §8.7: ``pn-provider``, ``pn-param``, ``pn-prid`` and
  (outside REGISTER) ``pn-purr``; values are %-escaped URI parameter values.
  APNs' ``pn-param`` is ``<TeamID>.<bundle>.<service>``: the first dot ends the
  team id, the last dot starts the service (§10).
* sipwake's extension for Web Push payload encryption: RFC 8599 §12 spells
  only the subscription URI (``pn-prid``), not the RFC 8291 subscription keys a
  browser hands out with it, so a softphone that wants an encrypted payload
  adds ``pn-p256dh`` (the 65-byte uncompressed P-256 public key) and
  ``pn-auth`` (the 16-byte authentication secret), both base64url. Without
  them a Web Push wake-up carries no payload, as RFC 8599 §12 intends.
* Linphone's two-token APNs form (PROTOCOLS.md §2.2): an iOS app holds a PushKit VoIP
  token (topic ``<bundle>.voip``) and a separate remote-notification token (topic
  ``<bundle>``); Linphone writes both in one contact,
  ``pn-prid=<voip>:voip&<remote>:remote;pn-param=<TeamID>.<bundle>.voip&remote`` (or
  the two in the other order). ``PushTarget.channel`` hands out the token of one
  service: calls go to the VoIP token, alerts (missed call, message) to the remote
  token; a target with no remote token gets no alert push, since APNs refuses an alert
  to a VoIP token (``DeviceTokenNotForTopic``) and PushKit kills an app that gets a VoIP
  push that is not a call (PROTOCOLS.md §4).
* Linphone/Flexisip's legacy form: ``pn-type`` (apple, firebase, google,
  android…), ``app-id`` (for Apple ending in ``.prod``/``.dev``, maybe with
  ``.voip`` before it), ``pn-tok``, and the options ``pn-msg-str``,
  ``pn-call-str``, ``pn-timeout``, ``pn-silent``.

Both become a ``PushTarget``; ``legacy`` records which spelling was used so a
registrar can answer in kind. A parameter present but unusable raises
``SipParseError`` (status 400), so a softphone hears why its registration
was refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from sipwake.errors import SipParseError, cut
from sipwake.frozen import interpreted_init
from sipwake.sip.uri import SipUri

__all__ = [
    "PUSH_PARAMS",
    "Channel",
    "PushParams",
    "PushTarget",
    "is_push_query",
    "is_push_query_params",
    "mask_token",
    "push_params",
    "push_target_from_params",
    "push_target_from_uri",
    "redact",
]

#: Every URI parameter that carries push information (stripped before forwarding).
PUSH_PARAMS = frozenset(
    {
        "pn-provider",
        "pn-param",
        "pn-prid",
        "pn-purr",
        "pn-p256dh",
        "pn-auth",
        "pn-type",
        "app-id",
        "pn-tok",
        "pn-msg-str",
        "pn-call-str",
        "pn-groupchat-str",
        "pn-call-snd",
        "pn-msg-snd",
        "pn-timeout",
        "pn-silent",
        "pn-missing-call-str",
        "pn-call-accepted-elsewhere-str",
        "pn-call-declined-elsewhere-str",
        "pn-call-remote-push-interval",
    }
)

#: What a push is for: a call (PushKit VoIP where the device has a VoIP token) or an alert
#: (missed call, message, cancel notice: the remote-notification token).
Channel = Literal["call", "alert"]

#: The APNs services ``pn-param`` may name after the bundle id (Linphone, PROTOCOLS.md §2.2).
_APNS_SERVICES = frozenset({"voip", "remote"})

_LEGACY_PROVIDERS = {
    "apple": "apns",
    "firebase": "fcm",
    "google": "fcm",
    "android": "fcm",
    "fcm": "fcm",
    "apns": "apns",
    "webpush": "webpush",
}


def mask_token(token: str, keep: int = 4) -> str:
    """A push token as it may appear in logs: its first and last few characters."""
    if len(token) <= 2 * keep:
        return "*" * len(token)
    return f"{token[:keep]}…{token[-keep:]}"


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class PushTarget:
    """Where and how to push one device (RFC 8599 or Linphone legacy parameters)."""

    provider: str
    """``apns``, ``fcm``, ``webpush``, or what the client wrote (e.g. ``apns.dev``)."""
    prid: str
    """The push resource id: APNs device token, FCM registration token, Web Push URL."""
    param: str | None = None
    """RFC 8599 ``pn-param``: APNs ``Team.bundle.service``, FCM project id."""
    purr: str | None = None
    sandbox: bool = False
    """APNs development environment (``apns.dev`` or an ``app-id`` ending ``.dev``)."""
    legacy: bool = False
    silent: bool = False
    timeout_s: int = 0
    call_str: str | None = None
    msg_str: str | None = None
    p256dh: str | None = None
    """Web Push: the subscription's P-256 public key (base64url, 65 bytes decoded), the
    sipwake ``pn-p256dh`` extension; with ``auth`` it allows an RFC 8291 payload."""
    auth: str | None = None
    """Web Push: the subscription's authentication secret (base64url, 16 bytes decoded),
    the sipwake ``pn-auth`` extension. A secret: never in ``repr`` or logs."""

    def __init__(
        self,
        *,
        provider: str,
        prid: str,
        param: str | None = None,
        purr: str | None = None,
        sandbox: bool = False,
        legacy: bool = False,
        silent: bool = False,
        timeout_s: int = 0,
        call_str: str | None = None,
        msg_str: str | None = None,
        p256dh: str | None = None,
        auth: str | None = None,
    ) -> None:
        self.provider = provider  # type: ignore[misc]
        self.prid = prid  # type: ignore[misc]
        self.param = param  # type: ignore[misc]
        self.purr = purr  # type: ignore[misc]
        self.sandbox = sandbox  # type: ignore[misc]
        self.legacy = legacy  # type: ignore[misc]
        self.silent = silent  # type: ignore[misc]
        self.timeout_s = timeout_s  # type: ignore[misc]
        self.call_str = call_str  # type: ignore[misc]
        self.msg_str = msg_str  # type: ignore[misc]
        self.p256dh = p256dh  # type: ignore[misc]
        self.auth = auth  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"PushTarget(provider={self.provider!r}, prid={mask_token(self.prid)!r}, "
            f"param={self.param!r}, sandbox={self.sandbox}, legacy={self.legacy}"
            + (", keys=***" if self.has_keys else "")
            + ")"
        )

    @property
    def has_keys(self) -> bool:
        """Whether Web Push subscription keys came with the target (encrypted payload)."""
        return self.p256dh is not None and self.auth is not None

    @property
    def base_provider(self) -> str:
        """The provider without Linphone's ``.dev`` suffix (``apns.dev`` → ``apns``)."""
        return self.provider.split(".", 1)[0]

    @property
    def team_id(self) -> str | None:
        """APNs team id: ``pn-param`` up to its first dot."""
        if self.base_provider != "apns" or not self.param or "." not in self.param:
            return None
        return self.param.split(".", 1)[0]

    @property
    def topic(self) -> str | None:
        """APNs topic: ``pn-param`` after the team id (``com.example.app.voip``)."""
        if self.base_provider != "apns" or not self.param or "." not in self.param:
            return None
        return self.param.split(".", 1)[1]

    @property
    def bundle_id(self) -> str | None:
        """APNs bundle id: the topic without its service suffix."""
        topic = self.topic
        if topic is None:
            return None
        bundle, _, service = topic.rpartition(".")
        if service == "complication" or _split_services(service) is not None:
            return bundle
        return topic

    @property
    def services(self) -> tuple[str, ...]:
        """APNs services named by ``pn-param`` (``voip``, ``remote``), in its order;
        empty when it names none (a plain bundle id: the remote token, Flexisip's rule)."""
        topic = self.topic
        if topic is None:
            return ()
        return _split_services(topic.rpartition(".")[2]) or ()

    def tokens(self) -> dict[str, str]:
        """APNs: the device token of each service (``{"voip": …, "remote": …}``); a target
        naming no service holds one remote token (Flexisip's rule), one without
        ``pn-param`` a VoIP token. Empty for other providers. The target
        was checked when parsed (``_apns_tokens``); one built by hand that does not pair
        up gets its whole ``prid`` under its first service."""
        if self.base_provider != "apns":
            return {}
        # No pn-param at all (legacy without app-id): nothing says which; a call push.
        services = self.services or (("remote",) if self.param else ("voip",))
        try:
            return _apns_tokens(self.prid, services)
        except SipParseError:
            return {services[0]: self.prid}

    def channel(self, channel: Channel) -> PushTarget | None:
        """The single-token target a ``call`` or an ``alert`` push goes to.

        APNs: a call goes to the VoIP token, or, for an app without one, as an alert to
        its remote token; an alert goes to the remote token only (None without one).
        Other providers: one token serves both. The result names one service in
        ``pn-param`` (``<team>.<bundle>.voip`` or ``<team>.<bundle>.remote``), so its
        ``topic``/``bundle_id``/``service`` say where it goes.
        """
        tokens = self.tokens()
        if not tokens:
            return self
        service = "voip" if channel == "call" and "voip" in tokens else "remote"
        token = tokens.get(service)
        if token is None:
            return None
        if len(tokens) == 1:
            return self
        team, bundle = self.team_id, self.bundle_id
        return PushTarget(
            provider=self.provider,
            prid=token,
            param=f"{team}.{bundle}.{service}",
            purr=self.purr,
            sandbox=self.sandbox,
            legacy=self.legacy,
            silent=self.silent,
            timeout_s=self.timeout_s,
            call_str=self.call_str,
            msg_str=self.msg_str,
        )

    @property
    def service(self) -> str | None:
        """APNs: ``voip`` or ``remote`` for a single-token target (``channel``'s result),
        None for a two-token one or another provider."""
        tokens = self.tokens()
        return next(iter(tokens)) if len(tokens) == 1 else None

    @property
    def apns_topic(self) -> str | None:
        """The ``apns-topic`` of a single-token APNs target: ``<bundle>.voip`` for the VoIP
        token, the bundle id for the remote one (a ``legacy.`` team dropped)."""
        service, bundle = self.service, self.bundle_id
        if service is None or bundle is None:
            return None
        return f"{bundle}.voip" if service == "voip" else bundle

    def combined(self, newer: PushTarget) -> PushTarget:
        """The target of one device that registered ``newer`` after this one: RFC 8599
        apps may register their VoIP and their remote token as two contacts of the same
        ``+sip.instance``. When both are APNs targets of the same app (provider, team,
        bundle), ``newer``'s tokens replace those of the same service and the other
        service's token stays (a two-token target); otherwise ``newer`` replaces this."""
        mine, theirs = self.tokens(), newer.tokens()
        same_app = (
            bool(mine)
            and bool(theirs)
            and self.provider == newer.provider
            and self.team_id == newer.team_id
            and self.bundle_id == newer.bundle_id
            and self.bundle_id is not None
        )
        if not same_app or set(theirs) >= set(mine):
            return newer
        tokens = {**mine, **theirs}
        order = ("voip", "remote")
        return PushTarget(
            provider=newer.provider,
            prid="&".join(f"{tokens[s]}:{s}" for s in order),
            param=f"{newer.team_id}.{newer.bundle_id}.voip&remote",
            purr=newer.purr,
            sandbox=newer.sandbox,
            legacy=newer.legacy,
            silent=newer.silent,
            timeout_s=newer.timeout_s,
            call_str=newer.call_str,
            msg_str=newer.msg_str,
        )

    def holds(self, prid: str) -> bool:
        """Whether ``prid`` is this target's token, or one of its two APNs tokens."""
        return prid == self.prid or prid in self.tokens().values()

    def without(self, prid: str) -> PushTarget | None:
        """This target once token ``prid`` is dead: the other APNs token alone (a refusal
        of one token never removes the other), None when nothing is left, itself when
        ``prid`` is not its token."""
        if prid == self.prid:
            return None
        tokens = self.tokens()
        if prid not in tokens.values() or len(tokens) < 2:
            return self
        left = "remote" if tokens.get("voip") == prid else "voip"
        return self.channel("call" if left == "voip" else "alert")

    def key(self) -> tuple[str, str, str]:
        """RFC 8599 §5.3 identity of the device: (provider, param, prid)."""
        return (self.base_provider, self.param or "", self.prid)

    def masked(self) -> str:
        """A loggable description: provider and masked token."""
        return f"{self.provider}:{mask_token(self.prid)}"

    #: Push parameters by lower-case name (the first of a repeated name wins, as
    #: ``SipUri.param`` reads it): gathered in one pass over a URI's parameters.


interpreted_init(PushTarget)
PushParams = dict[str, str | None]

_PUSH_PREFIXES = ("pn-", "app-id")


def push_params(uri: SipUri) -> PushParams:
    """The parameters of ``uri`` that may carry push information (names starting ``pn-``
    or ``app-id``), by lower-case name; empty when there are none."""
    found: PushParams = {}
    for name, value in uri.params:
        key = name.lower()
        if key.startswith(_PUSH_PREFIXES) and key not in found:
            found[key] = value
    return found


def _value(params: PushParams, name: str) -> str | None:
    raw = params.get(name)
    return unquote(raw) if raw is not None and "%" in raw else raw


def push_target_from_uri(uri: SipUri) -> PushTarget | None:
    """The push target a Contact URI carries, or None when it carries none.

    A bare ``pn-provider`` (RFC 8599 capability query, §5.6.1) returns None too;
    ask ``is_push_query`` for that case.
    """
    return push_target_from_params(push_params(uri))


def push_target_from_params(params: PushParams) -> PushTarget | None:
    """``push_target_from_uri`` on parameters already gathered by ``push_params``."""
    if not params:
        return None
    if "pn-provider" in params:
        return _rfc8599(params, _value(params, "pn-provider") or "")
    if "pn-type" in params or "pn-tok" in params:
        return _legacy(params)
    return None


def is_push_query(uri: SipUri) -> bool:
    """RFC 8599 §5.6.1: ``pn-provider`` without ``pn-prid`` asks which services exist."""
    return is_push_query_params(push_params(uri))


def is_push_query_params(params: PushParams) -> bool:
    """``is_push_query`` on parameters already gathered by ``push_params``."""
    return "pn-provider" in params and "pn-prid" not in params


def _int(params: PushParams, name: str) -> int:
    raw = _value(params, name)
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or len(raw) > 6:
        raise SipParseError(f"Contact: {name} must be a number, got {cut(raw)!r}")
    return int(raw)


def _rfc8599(params: PushParams, provider: str) -> PushTarget | None:
    prid = _value(params, "pn-prid")
    if prid is None:
        return None
    provider = provider.lower()
    if not provider:
        raise SipParseError("Contact: pn-provider is empty but pn-prid is set")
    if not prid:
        raise SipParseError("Contact: pn-prid is empty")
    param = _value(params, "pn-param")
    base = provider.split(".", 1)[0]
    if base == "apns" and (not param or param.count(".") < 2):
        raise SipParseError(
            "Contact: pn-param for apns must be '<TeamID>.<bundle>.<service>', "
            f"got {cut(param or '')!r}"
        )
    if base == "apns":
        try:
            services = _split_services((param or "").rpartition(".")[2]) or ("remote",)
            _apns_tokens(prid, services)
        except SipParseError as exc:
            raise SipParseError(f"Contact: {exc}") from None
    if base == "webpush" and param:
        raise SipParseError("Contact: pn-param must not be used with webpush (RFC 8599 §12)")
    p256dh, auth = _webpush_keys(params, base)
    return PushTarget(
        provider=provider,
        prid=prid,
        param=param,
        purr=_value(params, "pn-purr"),
        sandbox=provider.endswith(".dev"),
        legacy=False,
        silent=_value(params, "pn-silent") == "1",
        timeout_s=_int(params, "pn-timeout"),
        call_str=_value(params, "pn-call-str"),
        msg_str=_value(params, "pn-msg-str"),
        p256dh=p256dh,
        auth=auth,
    )


def _split_services(text: str) -> tuple[str, ...] | None:
    """``voip``, ``remote``, ``voip&remote`` or ``remote&voip`` as a tuple; None when
    ``text`` is not a service list (then it is the last label of a bundle id)."""
    names = tuple(text.split("&"))
    if all(n in _APNS_SERVICES for n in names) and len(set(names)) == len(names):
        return names
    return None


def _apns_tokens(prid: str, services: tuple[str, ...]) -> dict[str, str]:
    """Linphone's ``pn-prid`` read against the services of ``pn-param`` (Flexisip's
    rules, PROTOCOLS.md §2.2): one ``token[:service]`` per service, joined by ``&``; a
    single token may leave out its service. Raises ``SipParseError`` when they do not
    pair up."""
    parts = prid.split("&")
    if len(parts) != len(services):
        raise SipParseError(
            f"pn-prid has {len(parts)} token(s) but pn-param names {len(services)} "
            f"service(s) ({'&'.join(services)})"
        )
    tokens: dict[str, str] = {}
    for part in parts:
        token, colon, service = part.partition(":")
        if not colon:
            if len(parts) > 1:
                raise SipParseError(f"pn-prid: token {mask_token(token)!r} names no service")
            service = services[0]
        if service not in services or service in tokens:
            raise SipParseError(f"pn-prid: service {cut(service)!r} does not match pn-param")
        if not token or ":" in token:
            raise SipParseError(f"pn-prid: token for {service} is empty or holds ':'")
        tokens[service] = token
    return tokens


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _b64url_bytes(name: str, value: str, *, secret: bool = False) -> bytes:
    shown = f"{len(value)} characters" if secret else repr(cut(value))
    if not _B64URL_RE.fullmatch(value):
        raise SipParseError(f"Contact: {name} must be base64url, got {shown}")
    text = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SipParseError(f"Contact: {name} must be base64url, got {shown}") from exc


def _webpush_keys(params: PushParams, base: str) -> tuple[str | None, str | None]:
    """The sipwake ``pn-p256dh``/``pn-auth`` pair, checked (RFC 8291 §2, §3.2 sizes)."""
    p256dh, auth = _value(params, "pn-p256dh"), _value(params, "pn-auth")
    if p256dh is None and auth is None:
        return None, None
    if base != "webpush":
        raise SipParseError(f"Contact: pn-p256dh and pn-auth are for webpush, not {cut(base)!r}")
    if p256dh is None or auth is None:
        missing = "pn-auth" if auth is None else "pn-p256dh"
        raise SipParseError(f"Contact: {missing} missing: pn-p256dh and pn-auth go together")
    key = _b64url_bytes("pn-p256dh", p256dh)
    if len(key) != 65 or key[0] != 0x04:
        raise SipParseError(
            "Contact: pn-p256dh must be an uncompressed P-256 public key "
            f"(65 bytes starting 0x04), got {len(key)} bytes"
        )
    # The secret itself is never echoed, only its size.
    if len(_b64url_bytes("pn-auth", auth, secret=True)) != 16:
        raise SipParseError("Contact: pn-auth must decode to 16 bytes (RFC 8291 §3.2)")
    return p256dh, auth


def _legacy(params: PushParams) -> PushTarget:
    kind = (_value(params, "pn-type") or "").lower()
    token = _value(params, "pn-tok")
    if not token:
        raise SipParseError("Contact: pn-tok missing or empty (Linphone push parameters)")
    provider = _LEGACY_PROVIDERS.get(kind)
    if provider is None:
        raise SipParseError(f"Contact: unknown pn-type {cut(kind)!r}")
    app_id = _value(params, "app-id") or ""
    sandbox = False
    param: str | None = app_id or None
    if provider == "apns":
        bundle = app_id
        for suffix, dev in ((".dev", True), (".prod", False)):
            if bundle.endswith(suffix):
                bundle, sandbox = bundle[: -len(suffix)], dev
                break
        silent = _value(params, "pn-silent") == "1"
        if silent and not bundle.endswith(".voip"):
            bundle += ".voip"
        # Legacy parameters carry no team id; keep the bundle as the topic.
        param = f"legacy.{bundle}" if bundle else None
    return PushTarget(
        provider=provider,
        prid=token,
        param=param,
        sandbox=sandbox,
        legacy=True,
        silent=_value(params, "pn-silent") == "1",
        timeout_s=_int(params, "pn-timeout"),
        call_str=_value(params, "pn-call-str"),
        msg_str=_value(params, "pn-msg-str"),
    )


_SECRET_PARAM_RE = re.compile(
    r"(?i)(pn-prid|pn-tok|pn-purr|pn-p256dh|pn-auth)=([^;>,\s?&]+(?:&[^;>,\s?&=]+(?=[;>,\s?&]|$))*)"
)


#: The push key a 200 to REGISTER hands a device (``registrar.bindings.PUSH_KEY_HEADER``):
#: hidden whole, as a password would be.
_PUSH_KEY_LINE_RE = re.compile(r"(?im)^(\s*Sipwake-Push-Key\s*:\s*)\S[^\r\n]*")


def redact(text: str) -> str:
    """``text`` with push tokens masked and push keys hidden, for logs, traces and printed
    messages."""
    text = _PUSH_KEY_LINE_RE.sub(lambda m: f"{m.group(1)}***", text)
    return _SECRET_PARAM_RE.sub(lambda m: f"{m.group(1)}={mask_token(m.group(2))}", text)
