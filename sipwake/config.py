"""Configuration: embedded defaults, a YAML file, command-line overrides.

Everything works with no file at all (``sipwake serve``): domain ``lab.test``,
UDP and TCP on 127.0.0.1:5060, TLS on 5061, WebSocket on 5066, SQLite in
``./sipwake.db``, demo users alice, bob and carol. A YAML file
(``sipwake serve -c lab.yaml``) changes any of it; a mistake is reported as
``file:line: key: what is wrong`` (``ConfigError``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sipwake.errors import ConfigError, SipParseError
from sipwake.proxy.authguard import GuardSettings
from sipwake.proxy.plan import CallPlan, plan_for
from sipwake.proxy.ratelimit import Rate, parse_rate
from sipwake.sip.uri import SipUri, parse_uri

__all__ = [
    "AuthConfig",
    "CallsConfig",
    "Config",
    "ListenerSpec",
    "MobileBoxConfig",
    "PushConfig",
    "RegistrarConfig",
    "StoreConfig",
    "TlsConfig",
    "UserConfig",
    "WebhookConfig",
    "load_config",
    "parse_listen",
]

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
_LISTEN_RE = re.compile(r"(udp|tcp|tls|wss?):(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})")


class ListenerSpec(BaseModel):
    """One listening socket: ``udp:127.0.0.1:5060``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    transport: Literal["udp", "tcp", "tls", "ws", "wss"]
    host: str
    port: int = Field(ge=0, le=65535)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            m = _LISTEN_RE.fullmatch(value.strip())
            if m is None:
                raise ValueError(
                    "expected TRANSPORT:HOST:PORT with TRANSPORT one of udp, tcp, tls, ws, wss; "
                    f"got {value!r}"
                )
            return {"transport": m.group(1), "host": m.group(2).strip("[]"), "port": m.group(3)}
        return value


def parse_listen(text: str) -> ListenerSpec:
    """``udp:HOST:PORT`` (also tcp, tls, ws, wss; IPv6 hosts in brackets)."""
    return ListenerSpec.model_validate(text)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Section):
    cert: Path | None = None
    key: Path | None = None
    dir: Path = Path("sipwake-tls")
    """Where a self-signed certificate is made on first run when none is configured."""


class StoreConfig(_Section):
    backend: Literal["memory", "sqlite"] = "sqlite"
    path: Path = Path("sipwake.db")


class LockoutConfig(_Section):
    """What failed authentications from one address (or for one user) lead to."""

    window_s: float = Field(600.0, gt=0)
    """Failures count for this long."""
    delay_after: int = Field(3, ge=1)
    """Past this many, each answer is held back 1 s, doubling, up to ``max_delay_s``."""
    max_delay_s: float = Field(8.0, ge=0, le=30)
    ban_after: int = Field(10, ge=2)
    """This many from one address and it is banned for ``ban_s`` (never a user)."""
    ban_s: float = Field(900.0, gt=0)
    ban: Literal["drop", "reject"] = "drop"
    """A banned address's requests: dropped unanswered, or answered 403."""


class AuthConfig(_Section):
    open: bool = False
    """Accept any user of the domain without authentication (labs, benchmarks)."""
    realm: str | None = None
    algorithms: list[Literal["SHA-256", "MD5", "SHA-512-256"]] = ["MD5"]
    """Digest algorithms offered, one WWW-Authenticate each, preferred first (RFC 8760
    §2.4). MD5 alone by default: common softphones (baresip 1.0's libre among them)
    abort when any challenge names an algorithm they lack instead of skipping it.
    ``[SHA-256, MD5]`` offers RFC 8760 to clients that handle several challenges."""
    nonce_lifetime_s: float = Field(300.0, gt=0)
    lockout: LockoutConfig | None = LockoutConfig()
    """Failed authentications: growing delay, then a ban (``sipwake.proxy.authguard``);
    null: none (each failure is still logged)."""

    def guard(self) -> GuardSettings | None:
        lock = self.lockout
        if lock is None:
            return None
        return GuardSettings(
            window_s=lock.window_s,
            delay_after=lock.delay_after,
            max_delay_s=lock.max_delay_s,
            ban_after=lock.ban_after,
            ban_s=lock.ban_s,
            ban=lock.ban,
        )


PresetName = Literal[
    "sipwake", "rfc8599", "flexisip", "avaya-ip-office", "cisco-cucm", "innovaphone"
]


def _check_sip_uri(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        uri = parse_uri(value.strip())
    except SipParseError as exc:
        raise ValueError(f"not a SIP URI: {exc.reason}") from None
    if not isinstance(uri, SipUri):
        raise ValueError(f"expected a sip: or sips: URI, got {value!r}")
    return value.strip()


BUILTIN_VOICEMAIL = "builtin"
"""``voicemail: builtin``: the voicemail sipwake runs itself (``voicemail_box``)."""


class VoicemailBoxConfig(_Section):
    """The built-in voicemail: a SIP UAS recording G.711 messages to WAV files."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    """UDP port (0: any free one; sipwake routes to it itself)."""
    dir: Path = Path("sipwake-voicemail")
    max_message_s: float = Field(120.0, gt=0, le=3600)


class MobileBoxConfig(_Section):
    """The built-in mobile: where twin branches go when no ``calls.twin_gateway`` is set.
    It rings (180) and answers after ``answer_after_s``, or never by itself: then
    ``sipwake mobile answer NUMBER`` picks up (a real mobile is a person)."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    """UDP port (0: any free one; sipwake routes to it itself)."""
    answer_after_s: float | Literal["never"] = "never"

    @field_validator("answer_after_s")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and value < 0:
            raise ValueError("expected a number of seconds ≥ 0 or 'never'")
        return value


class _PlanFields(_Section):
    """Call-plan settings a user may override (``sipwake.proxy.plan.CallPlan``)."""

    no_answer_s: float | None = Field(None, gt=0, le=3600)
    mobile_dial_delay_s: float | None = Field(None, ge=0, le=3600)
    voicemail: str | None = None
    """Voicemail URI for no answer and busy."""
    forward_no_answer: str | None = None
    forward_busy: str | None = None
    dnd: bool | None = None
    encrypt_push: bool | None = None
    """Seal call details in pushes with the device's push key (README "Push services")."""

    @field_validator("voicemail", "forward_no_answer", "forward_busy")
    @classmethod
    def _uris(cls, value: str | None) -> str | None:
        if value == BUILTIN_VOICEMAIL:
            return value
        return _check_sip_uri(value)


class UserConfig(_PlanFields):
    password: str | None = None
    """Plain password; ``None`` for demo users gets a generated one."""
    display_name: str | None = None
    mobile: str | None = None
    """Twinning target: the user's mobile number (through ``calls.twin_gateway``, or the
    built-in mobile when there is no gateway)."""
    mobile_answer_after_s: float | Literal["never"] | None = None
    """The built-in mobile of this user answers after this (``mobile_box`` when unset)."""
    preset: PresetName | None = None

    def __repr__(self) -> str:
        return f"UserConfig(display_name={self.display_name!r}, mobile={self.mobile!r})"


class RegistrarConfig(_Section):
    min_expires_s: int = Field(60, ge=1)
    max_expires_s: int = Field(3600, ge=60)
    push_max_expires_s: int = Field(604800, ge=60)
    """Longest binding granted to a contact with push parameters (7 days): a suspended
    app cannot refresh it, so sipwake pushes it to re-register before it expires
    (README "Calls to phones that sleep"). At least ``max_expires_s``."""
    default_expires_s: int = Field(3600, ge=60)
    max_bindings_per_aor: int = Field(10, ge=1)
    push_providers: list[str] = ["apns", "apns.dev", "fcm", "webpush"]

    @model_validator(mode="after")
    def _push_max(self) -> RegistrarConfig:
        if self.push_max_expires_s < self.max_expires_s:
            raise ValueError(
                f"push_max_expires_s ({self.push_max_expires_s}) must be at least "
                f"max_expires_s ({self.max_expires_s})"
            )
        return self


class CallsConfig(_PlanFields):
    """System-wide call plan: a preset and the settings that override it."""

    preset: PresetName = "sipwake"
    ringback: Literal["180", "110", "100"] | None = None
    udp_foreground_s: float | None = Field(None, ge=0)
    udp_qualify: bool = True
    """Ping UDP bindings without push parameters with OPTIONS once they have been quiet
    for ``udp_foreground_s``; one that does not answer is offline until it shows a sign
    of life (README "Calls to phones that sleep")."""
    udp_qualify_timeout_s: float = Field(6.0, gt=0, le=32)
    """How long a ping waits for an answer (at most Timer F, 32 s)."""
    udp_qualify_per_s: float = Field(200.0, gt=0)
    """Pings sent per second at most, over all bindings."""
    push_foreground: bool | None = None
    single_ios_device: bool | None = None
    push_requires_tls: bool | None = None
    cancel_notice: Literal["push", "invite-cancel", "none"] | None = None
    """When the caller gives up (or another device answers) while a device wakes: an
    alert push, or (``flexisip``) the INVITE then a CANCEL once it registers."""
    cancel_replay_s: float | None = Field(None, gt=0, le=600)
    """``invite-cancel``: how long the woken device is owed that INVITE + CANCEL."""
    push_attempts: int | None = Field(None, ge=1, le=10)
    repush_interval_s: float | None = Field(None, ge=0, le=60)
    """Send the call push again this often to a device that got it but has not
    registered (0: one push only; unset: the preset's, 10 s for ``sipwake``)."""
    twin_gateway: str | None = None
    """Where twin calls go: a SIP URI with ``{number}`` for the user's mobile number,
    e.g. ``sip:{number}@gw.lab.test:5070``."""

    @field_validator("twin_gateway")
    @classmethod
    def _gateway(cls, value: str | None) -> str | None:
        if value is not None:
            if "{number}" not in value:
                raise ValueError("twin_gateway must contain {number}")
            _check_sip_uri(value.replace("{number}", "0"))
        return value


_NODE_WIDE = frozenset({"udp_qualify", "udp_qualify_timeout_s", "udp_qualify_per_s"})
"""``calls`` settings of the whole node rather than of a user's call plan."""


class WebhookConfig(_Section):
    url: str
    """Where each push is POSTed (JSON, ``X-Sipwake-Signature``)."""
    secret: str | None = None
    """HMAC key for the signature; derived from ``secret_file`` when unset."""
    routes: Literal["all"] | list[Literal["apns", "apns.dev", "fcm", "webpush"]] = "all"
    """Which pushes go to the webhook: every push not routed elsewhere, or these services."""
    timeout_s: float = Field(5.0, gt=0, le=60)

    def __repr__(self) -> str:
        return f"WebhookConfig(url={self.url!r}, routes={self.routes!r})"


_APNS_TOKEN_FIELDS = ("team_id", "key_id", "key_file")


class ApnsConfig(_Section):
    """APNs with provider-token auth (``team_id``, ``key_id``, ``key_file``: the ``.p8``
    key signs JWTs) or certificate auth (``cert_file``, and ``cert_key_file`` when the
    private key is not in the certificate's PEM file): one or the other, not both."""

    cert_file: Path | None = None
    """TLS client certificate (PEM) from Apple's developer portal (VoIP Services)."""
    cert_key_file: Path | None = None
    """The certificate's private key (PEM), when ``cert_file`` does not hold it too."""
    team_id: str | None = Field(None, validate_default=True)
    key_id: str | None = Field(None, validate_default=True)
    key_file: Path | None = Field(None, validate_default=True)
    """The ``.p8`` token signing key (PEM)."""
    bundle_id: str
    environment: Literal["production", "sandbox"] = "production"
    base_url: str | None = None
    """Another APNs endpoint (``sipwake mock-push``); Apple's host for the environment
    when unset."""
    ca_file: Path | None = None
    """Trust this CA for ``base_url`` (the mock's self-signed certificate)."""

    @field_validator(*_APNS_TOKEN_FIELDS)
    @classmethod
    def _token_or_cert(cls, value: object, info: ValidationInfo) -> object:
        # Validated after cert_file and cert_key_file (declared first), so each
        # token field's error names that very field and its line.
        if info.data.get("cert_file") is not None:
            if value is not None:
                raise ValueError(
                    "not used with cert_file: choose provider-token auth (team_id, key_id, "
                    "key_file) or certificate auth (cert_file), not both"
                )
        elif value is None and "cert_key_file" in info.data:
            raise ValueError(
                "required for provider-token auth (team_id, key_id, key_file); "
                "or set cert_file for certificate auth"
            )
        return value

    @field_validator("cert_key_file")
    @classmethod
    def _key_needs_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("cert_file") is None:
            raise ValueError("cert_key_file needs cert_file (the certificate it belongs to)")
        return value

    @property
    def uses_certificate(self) -> bool:
        return self.cert_file is not None


class FcmConfig(_Section):
    service_account: Path
    """The Google service-account JSON key (project id, RSA key, token endpoint)."""
    base_url: str | None = None
    """Another FCM endpoint (``sipwake mock-push``); fcm.googleapis.com when unset."""
    token_uri: str | None = None
    """Another OAuth token endpoint; the service account's when unset."""
    ca_file: Path | None = None


class WebPushConfig(_Section):
    vapid_key_file: Path
    """P-256 private key (PEM) that signs VAPID tokens (RFC 8292)."""
    subject: str = "mailto:admin@lab.test"
    allowed_hosts: list[str] | None = None
    """Push services the endpoints may name; the well-known ones when unset."""
    ca_file: Path | None = None


class PushConfig(_Section):
    """Push providers. With none configured, pushes go to the in-process sandbox, which
    records them (``sipwake pushes``) and reports them delivered."""

    webhook: WebhookConfig | None = None
    apns: ApnsConfig | None = None
    fcm: FcmConfig | None = None
    webpush: WebPushConfig | None = None


class LimitsConfig(_Section):
    max_message_bytes: int = Field(65535, ge=1024)
    max_transactions: int = Field(50000, ge=10)
    max_connections_per_source: int = Field(100, ge=1)
    message_timeout_s: float = Field(10.0, gt=0, le=3600)
    """A SIP message over TCP/TLS must be whole this long after its first byte (and a new
    connection must bring its first message in this time), else the connection is closed."""
    tls_handshake_timeout_s: float = Field(10.0, gt=0, le=3600)
    ws_handshake_timeout_s: float = Field(10.0, gt=0, le=3600)
    idle_timeout_s: float = Field(120.0, gt=0)
    """A connection that carries no binding is closed after this long without a message;
    one a REGISTER was accepted over stays open while its binding lasts."""
    shed_load: bool = False
    """Answer a share of new requests 503 when the server is saturated (``sipwake.overload``)."""
    requests_per_source: str | None = "300/1s"
    """Requests a source address may send (``COUNT/SECONDS``; the excess is dropped,
    ``sipwake.proxy.ratelimit``); null: no limit. Trusted sources are not limited."""
    wake_pushes_per_source: str | None = "5/60s"
    """Calls and messages from one source address that may push one user's sleeping
    phones; past it they ring foreground devices only. null: no limit."""
    wake_pushes_per_user: str | None = "30/60s"
    """Calls and messages that may push one user's sleeping phones, from anywhere."""
    trusted_sources: list[str] = ["127.0.0.0/8", "::1/128"]
    """Networks exempt from ``requests_per_source`` (a lab's own tools, benchmarks)."""

    @field_validator("requests_per_source", "wake_pushes_per_source", "wake_pushes_per_user")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("trusted_sources")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"expected an address or network like 10.0.0.0/8, got {item!r}"
                ) from None
        return value

    def rate(self, name: str) -> Rate | None:
        value = getattr(self, name)
        return None if value is None else parse_rate(value)


class Config(_Section):
    domain: str = "lab.test"
    aliases: list[str] = []
    """Other host names and addresses that mean this server (its listener addresses are added)."""
    listen: list[ListenerSpec] = [
        ListenerSpec(transport="udp", host="127.0.0.1", port=5060),
        ListenerSpec(transport="tcp", host="127.0.0.1", port=5060),
        ListenerSpec(transport="tls", host="127.0.0.1", port=5061),
        ListenerSpec(transport="ws", host="127.0.0.1", port=5066),
    ]
    tls: TlsConfig = TlsConfig()
    store: StoreConfig = StoreConfig()
    auth: AuthConfig = AuthConfig()
    registrar: RegistrarConfig = RegistrarConfig()
    limits: LimitsConfig = LimitsConfig()
    calls: CallsConfig = CallsConfig()
    push: PushConfig = PushConfig()
    voicemail_box: VoicemailBoxConfig = VoicemailBoxConfig()
    mobile_box: MobileBoxConfig = MobileBoxConfig()
    users: dict[str, UserConfig] = {
        "alice": UserConfig(display_name="Alice"),
        "bob": UserConfig(display_name="Bob"),
        "carol": UserConfig(display_name="Carol"),
    }
    admin: str | None = "auto"
    """Where the local status/admin endpoint listens (``sipwake status``, ``sipwake mobile``):
    ``auto`` (127.0.0.1, the first SIP listener's port + 4, so 5064 beside 5060, or any
    free port when that one is taken), ``HOST:PORT``, or null (none). Its address and
    token are written to ``admin_file`` for the client commands run in this folder."""
    secret_file: Path = Path("sipwake-secret")
    """Random secret made on first run: nonces and the demo users' passwords derive from it."""

    @field_validator("admin", mode="before")
    @classmethod
    def _admin(cls, value: object) -> object:
        if value is False or (isinstance(value, str) and value.lower() in ("off", "none")):
            return None
        if isinstance(value, str) and value != "auto":
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"expected auto, off or HOST:PORT, got {value!r}")
        return value

    def admin_address(self, first_sip_port: int | None) -> tuple[str, int] | None:
        """The admin endpoint's address; for ``auto``, beside the first SIP listener's
        port (``first_sip_port`` as bound; None or 0: any free port)."""
        if self.admin is None:
            return None
        if self.admin == "auto":
            port = first_sip_port + 4 if first_sip_port and first_sip_port <= 65531 else 0
            return "127.0.0.1", port
        host, _, port_text = self.admin.rpartition(":")
        return host.strip("[]"), int(port_text)

    @property
    def admin_file(self) -> Path:
        """The admin endpoint's address and token, for the client commands: beside the
        secret file, in the server's folder (``./sipwake-admin`` by default)."""
        return self.secret_file.with_name("sipwake-admin")

    @property
    def realm(self) -> str:
        return self.auth.realm or self.domain

    @property
    def uses_builtin_voicemail(self) -> bool:
        values = [self.calls.voicemail, self.calls.forward_no_answer, self.calls.forward_busy]
        for user in self.users.values():
            values += [user.voicemail, user.forward_no_answer, user.forward_busy]
        return BUILTIN_VOICEMAIL in values

    @property
    def uses_builtin_mobile(self) -> bool:
        """No twin gateway, and some user has a mobile number: twin to the built-in mobile."""
        return self.calls.twin_gateway is None and any(u.mobile for u in self.users.values())

    def mobile_answer_after(self, number: str) -> float | None:
        """Seconds the built-in mobile with ``number`` rings before answering (None: never)."""
        value: float | str = self.mobile_box.answer_after_s
        for user in self.users.values():
            if user.mobile == number and user.mobile_answer_after_s is not None:
                value = user.mobile_answer_after_s
        return None if isinstance(value, str) else float(value)

    def call_plan(self, user: str | None = None) -> CallPlan:
        """The call plan of ``user`` (system settings, then the user's own), or the
        system's plan for users without settings."""
        calls = self.calls
        system = calls.model_dump(exclude={"preset", "twin_gateway", *_NODE_WIDE})
        entry = self.users.get(user) if user is not None else None
        preset = calls.preset
        own: dict[str, Any] = {}
        twin = None
        if entry is not None:
            preset = entry.preset or preset
            own = entry.model_dump(include=set(_PlanFields.model_fields))
            if entry.mobile and calls.twin_gateway:
                twin = calls.twin_gateway.replace("{number}", entry.mobile)
        merged = {**system, **{k: v for k, v in own.items() if v is not None}}
        return plan_for(preset, twin=twin, **merged)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_config(path: str | Path | None = None) -> Config:
    """The embedded defaults, overridden by the YAML file at ``path`` if given."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", path=str(path), line=line) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of settings at the top", path=str(path), line=1)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(
            p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        key = ".".join(str(p) for p in loc) or "(top)"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(message, path=str(path), line=_line_of(root, loc), key=key) from exc
