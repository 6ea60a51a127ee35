"""The scenario format: a YAML file that writes down "phone asleep, call comes in".

A scenario names the PBX settings (a preset and call-plan overrides), the users and
their devices (platform, transport, push provider, initial state, how long a push takes
to wake them, how they answer), a timeline of actions at scenario times (calls, hang-ups,
cancels, instant messages, suspending or resuming a device, a device losing its network,
a push service failing, the server restarting) and the expectations
to check, each with its tolerance. Times are seconds from the start of the scenario.

``load_scenario(path)`` reads and validates one file; anything wrong is a
``ScenarioFileError`` naming the file, the line and the field
(``scenarios/x.yaml:14: users.bob.devices.0.wake_delay_s: …``). ``Scenario`` is a
pydantic model (``extra="forbid"``: a misspelt key is an error, not a silent default);
``scenario_json_schema()`` is what ``sipwake schema`` prints for editors.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sipwake.config import PresetName, _line_of
from sipwake.errors import ScenarioError, cut

__all__ = [
    "AnsweredExpect",
    "CallAction",
    "Device",
    "DeviceCancelledExpect",
    "Expect",
    "FinalStatusExpect",
    "ForwardedExpect",
    "HangupAction",
    "MessageAction",
    "MessageDeliveredExpect",
    "Mobile",
    "NetworkLossAction",
    "NoPushExpect",
    "Pbx",
    "PushExpect",
    "PushFault",
    "RestartAction",
    "RingingExpect",
    "Scenario",
    "ScenarioFileError",
    "Step",
    "TimedExpect",
    "User",
    "load_scenario",
    "parse_scenario",
    "scenario_json_schema",
]

Platform = Literal["ios", "android", "web", "desk"]
Transport = Literal["udp", "tcp", "tls"]
Provider = Literal["apns", "fcm", "webpush", "none"]
DeviceState = Literal["foreground", "suspended", "offline"]
PushKindName = Literal["call", "cancel", "message", "refresh"]

#: The push provider a platform's app uses when the scenario does not say.
PLATFORM_PUSH: dict[str, str] = {"ios": "apns", "android": "fcm", "web": "webpush", "desk": "none"}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_NAME_RE = re.compile(_NAME)


class ScenarioFileError(ScenarioError):
    """A scenario file that cannot be replayed: ``path:line: key: what is wrong``."""

    def __init__(self, message: str, *, path: str, line: int | None = None, key: str = "") -> None:
        where = path if line is None else f"{path}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        # ScenarioError's (step, expected, got) fields, for code that reads them.
        super().__init__(key or "(file)", "a valid scenario", message)
        self.args = (text,)
        self.path = path
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return str(self.args[0])


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )


def _seconds(value: Any, *, allow_never: bool = False) -> Any:
    """A number of seconds ≥ 0 (or ``never``), with a message that says so."""
    if allow_never and value == "never":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        what = "seconds (a number ≥ 0)" + (" or 'never'" if allow_never else "")
        raise ValueError(f"expected {what}, got {cut(repr(value))}")
    if value < 0:
        raise ValueError(f"expected seconds ≥ 0, got {value}")
    return float(value)


# -- the PBX -------------------------------------------------------------------------------
class Pbx(_Model):
    """The PBX: a preset copying a real system, and call-plan settings that override it
    (``sipwake.proxy.plan.CallPlan``)."""

    preset: PresetName = "sipwake"
    no_answer_s: float | None = Field(None, gt=0, le=3600)
    no_answer_with_push_min_s: float | None = Field(None, ge=0, le=3600)
    no_answer_status: int | None = Field(None, ge=400, le=699)
    mobile_dial_delay_s: float | None = Field(None, ge=0, le=3600)
    ringback: Literal["180", "110", "100"] | None = None
    push_foreground: bool | None = None
    single_ios_device: bool | None = None
    push_requires_tls: bool | None = None
    cancel_notice: Literal["push", "invite-cancel", "none"] | None = None
    udp_foreground_s: float | None = Field(None, ge=0)
    push_attempts: int | None = Field(None, ge=1, le=10)
    push_backoff_s: float | None = Field(None, gt=0, le=60)
    repush_interval_s: float | None = Field(None, ge=0, le=60)
    """Call push sent again this often to a device still waking (0: never)."""
    voicemail: bool = False
    """Divert to the lab voicemail (a simulated endpoint) on no answer and busy."""
    voicemail_answer_after_s: float = Field(0.0, ge=0, le=60)
    """How long the voicemail takes to answer a diverted call."""
    twin_gateway: str = "sip:{number}@127.0.0.1:5095"
    """Where twin calls go (``{number}``: the user's ``mobile``); a simulated GSM gateway."""

    @field_validator("ringback", mode="before")
    @classmethod
    def _ringback(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("twin_gateway")
    @classmethod
    def _gateway(cls, value: str) -> str:
        if "{number}" not in value:
            raise ValueError("twin_gateway must contain {number}")
        return value


# -- users and devices ----------------------------------------------------------------------
class Device(_Model):
    """One softphone of a user."""

    name: str = Field(pattern=_NAME)
    platform: Platform
    transport: Transport = "tcp"
    push: Provider | None = None
    """apns, fcm, webpush or none; by default the platform's (ios → apns, android → fcm,
    web → webpush, desk → none)."""
    push_params: Literal["rfc8599", "legacy"] = "rfc8599"
    """How the device writes its push parameters: RFC 8599 (``pn-provider``/``pn-param``/
    ``pn-prid``) or Linphone's legacy ``pn-type``/``app-id``/``pn-tok``."""
    tokens: Literal["voip", "voip&remote", "remote&voip", "remote"] = "voip"
    """An iOS app's APNs tokens: its PushKit VoIP token (topic ``<bundle>.voip``, calls
    only), its remote-notification token (topic ``<bundle>``: missed calls, messages), or
    both in Linphone's one-contact form, in either order (``pn-prid=V:voip&R:remote``).
    The replay's APNs knows each token's topic and refuses a push on another one."""
    state: DeviceState = "foreground"
    """At the start: foreground (connection open), suspended (registered with push
    parameters, connection closed: it needs a push), offline (not registered)."""
    wake_delay_s: float | Literal["never"] = 2.0
    """Seconds from a push reaching the device to its REGISTER over a new connection."""
    expires_s: int = Field(3600, ge=1, le=31536000)
    """The Expires its REGISTERs ask for (Linphone asks 7 days with push parameters); the
    server may grant less (``registrar.push_max_expires_s``)."""
    ignores_pushes: int = Field(0, ge=0, le=100)
    """Call and message pushes the service delivers that do not wake the app (killed by
    the system, a push iOS holds back): the push after them wakes it."""
    answer_after_s: float | None = None
    """Seconds from ringing to the user's answer (200, or the ``reject`` code); unset:
    it rings until the call ends."""
    reject: int | None = Field(None, ge=400, le=699)
    """Answer with this status instead of 200 (603 Decline, 486…)."""
    busy: bool = False
    """Already in a call: 486 Busy Here at once, no ringing."""
    dnd: bool = False
    """The phone's own do-not-disturb: 480 at once (the PBX's DND is ``users.<name>.dnd``)."""

    @field_validator("wake_delay_s", mode="before")
    @classmethod
    def _wake(cls, value: Any) -> Any:
        return _seconds(value, allow_never=True)

    @field_validator("answer_after_s", mode="before")
    @classmethod
    def _answer(cls, value: Any) -> Any:
        return None if value is None else _seconds(value)

    @model_validator(mode="after")
    def _consistent(self) -> Device:
        immediate = [n for n in ("busy", "dnd") if getattr(self, n)]
        if len(immediate) > 1 or (
            immediate and (self.reject is not None or self.answer_after_s is not None)
        ):
            raise ValueError(
                "busy and dnd answer at once: use one of them, without reject or answer_after_s"
            )
        provider = self.provider
        expected = PLATFORM_PUSH[self.platform]
        if provider != "none" and provider != expected:
            raise ValueError(
                f"a {self.platform} device pushes with {expected} (or none), not {provider}"
            )
        if self.state == "suspended" and provider == "none":
            raise ValueError(
                "a suspended device needs a push provider to be woken "
                "(without one it is offline: state: offline)"
            )
        if self.push_params == "legacy" and provider == "webpush":
            raise ValueError("Linphone's legacy push parameters have no webpush form")
        if self.tokens != "voip" and provider != "apns":
            raise ValueError(f"tokens: {self.tokens} is for an iOS device pushed with apns")
        if "&" in self.tokens and self.push_params == "legacy":
            raise ValueError("tokens: Linphone's legacy parameters carry one token")
        return self

    @property
    def provider(self) -> str:
        return self.push or PLATFORM_PUSH[self.platform]


class Mobile(_Model):
    """The user's mobile phone, reached by the twin branch through the GSM gateway."""

    number: str = Field(pattern=r"^\+?[0-9]{3,15}$")
    answer_after_s: float | None = None
    """Seconds from the twin INVITE to the answer; unset: it rings until cancelled."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"number": value} if isinstance(value, str) else value

    @field_validator("answer_after_s", mode="before")
    @classmethod
    def _answer(cls, value: Any) -> Any:
        return None if value is None else _seconds(value)


class User(_Model):
    display_name: str | None = None
    dnd: bool = False
    """The PBX's do-not-disturb: no push, no ringing, straight to the no-answer target."""
    mobile: Mobile | None = None
    """The mobile number for twinning (``+491701234567`` or ``{number, answer_after_s}``)."""
    devices: list[Device] = []
    password: str | None = Field(None, min_length=1, repr=False)
    """The user's SIP password: its devices (and its calls, when it is a caller) answer
    digest challenges. When any user has one the embedded server requires
    authentication, as ``sipwake serve`` without ``--open`` does."""
    auth_user: str | None = Field(None, pattern=r"^[^\s\x00-\x1f\x7f]+$")
    """The digest user name when it is not the user's name (``--target`` servers only:
    sipwake knows a user by its name)."""
    forward_no_answer: str | None = Field(None, pattern=_NAME)
    """Another user of the scenario the user's calls are forwarded to when nobody answers
    within the no-answer time (the plan's ``forward_no_answer``: ``sip:<user>@lab.test``;
    it wins over ``pbx.voicemail``). The diverted INVITE carries Diversion (RFC 5806) and
    History-Info (RFC 7044) naming this user."""
    forward_busy: str | None = Field(None, pattern=_NAME)
    """Another user of the scenario the user's calls go to when every device is busy."""


# -- the timeline ---------------------------------------------------------------------------
class CallAction(_Model):
    from_: str = Field(alias="from", pattern=_NAME)
    """The caller's name (a simulated caller; need not be a user of the scenario)."""
    to: str = Field(pattern=_NAME)
    """The called user (one of ``users``)."""
    id: str | None = Field(None, pattern=_NAME)
    """How other steps and expectations name this call (default ``call1``, ``call2``…)."""


class HangupAction(_Model):
    call: str | None = None
    """The call (default: the first one)."""
    by: Literal["caller", "callee"] = "caller"
    """Who hangs up: BYE once answered; before that the caller's hang-up is a CANCEL."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"call": value} if isinstance(value, str) else value


class CancelAction(_Model):
    call: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"call": value} if isinstance(value, str) else value


class MessageAction(_Model):
    """An instant message (RFC 3428 MESSAGE) from a simulated sender to a user."""

    from_: str = Field(alias="from", pattern=_NAME)
    to: str = Field(pattern=_NAME)
    text: str = "Hello"
    id: str | None = Field(None, pattern=_NAME)
    """How expectations name this message (default ``msg1``, ``msg2``…)."""


class RestartAction(_Model):
    """The server stops and starts again ``down_s`` later. Its bindings and held
    messages survive in its store (an SQLite file in a temporary directory); its
    transactions, calls and connections do not."""

    down_s: float = Field(0.5, ge=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _from_flag(cls, value: Any) -> Any:
        return {} if value is True or value is None else value


class NetworkLossAction(_Model):
    """A device loses its network for ``for_s`` seconds: its connection drops, nothing
    reaches it (pushes wait at the push service), it sends nothing. When the network is
    back a foreground device reconnects and registers again; a suspended one wakes if a
    push waited for it."""

    device: str
    for_s: float = Field(gt=0, le=3600)


class PushFault(_Model):
    """The push service refuses pushes between ``from`` and ``to`` as the real one would
    answer: HTTP ``status`` with ``reason`` (APNs 410 Unregistered, FCM 404 UNREGISTERED,
    429/503 for a transient failure)."""

    provider: Literal["apns", "fcm", "webpush"] | None = None
    """Only pushes through this provider (default: every provider)."""
    device: str | None = None
    """Only pushes to this device (``user.device``)."""
    status: int = Field(ge=400, le=599)
    reason: str | None = None
    retry_after_s: float | None = Field(None, ge=0)
    unregistered_at: float | None = Field(None, ge=-86400)
    """With 410: the scenario time APNs says the token stopped being valid (the answer's
    ``timestamp``; default: the moment it answers). A device that registered after it
    keeps its token (Apple's rule); negative: before the timeline started."""
    from_: float | None = Field(None, alias="from", ge=0)
    """Start of the failure (default: the step's ``at``)."""
    to: float | None = Field(None, ge=0)
    """End of the failure (default: the end of the scenario)."""


_DND_ACTION = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)? (on|off)$"


class Step(_Model):
    """One action of the timeline, at scenario time ``at``."""

    at: float = Field(0.0, ge=0)
    call: CallAction | None = None
    hangup: HangupAction | None = None
    cancel: CancelAction | None = None
    suspend: str | None = None
    """A device (``user.device``) goes to the background: a TCP/TLS device closes its
    connection and stays registered with its push parameters (suspended: a call then
    needs a push). A UDP device just stops answering; the server counts it as
    foreground until ``udp_foreground_s`` after its last REGISTER."""
    resume: str | None = None
    """A device comes to the foreground: it opens a new connection and registers again
    (an offline device that never registered comes online: it registers now, and joins
    a call that is still ringing)."""
    push_fails: PushFault | None = None
    message: MessageAction | None = None
    restart_server: RestartAction | None = None
    network_loss: NetworkLossAction | None = None
    dnd: str | None = Field(None, pattern=_DND_ACTION)
    """``USER on`` / ``USER off`` (or ``USER.DEVICE on``): the phone dials the feature
    code ``*78`` / ``*79`` (an INVITE the server answers 603 ``DND On``/``DND Off``). Sent
    by the named device, else the user's first device in the foreground, else the user's
    first device, which comes to the foreground (new connection, REGISTER) to dial it."""
    logout: str | None = None
    """A device (``user.device``) logs out: REGISTER with ``Expires: 0`` for its contact,
    then it is offline (no binding, no push target)."""
    rotate_token: str | None = None
    """A device's app gets new push tokens (PushKit/FCM rotated them): it registers again
    at once, same ``+sip.instance``, with the new ``pn-prid``; the push service knows the
    new tokens, the old ones reach nobody. A suspended device is suspended again after."""

    @property
    def action(self) -> str:
        for name in _ACTIONS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("a validated step has an action")

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [name for name in _ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"each step needs exactly one action of {', '.join(_ACTIONS)}; "
                f"got {', '.join(given) or 'none'}"
            )
        return self


_ACTIONS = (
    "call",
    "hangup",
    "cancel",
    "suspend",
    "resume",
    "push_fails",
    "message",
    "restart_server",
    "network_loss",
    "dnd",
    "logout",
    "rotate_token",
)


# -- expectations ---------------------------------------------------------------------------
class _ExpectBase(_Model):
    call: str | None = None
    """The call (or message) this is about (default: the first call of the timeline; for
    a ``message`` push, the first message)."""


class PushExpect(_ExpectBase):
    """A push of ``kind`` is sent to device ``to`` within ``within`` s of the call."""

    kind: PushKindName = "call"
    to: str
    within: float = Field(1.0, ge=0)
    encrypted: bool | None = None
    """``true``: the payload carried the call details only sealed (``enc``), none of them
    (caller, Call-ID, UUID, text) in clear, and the device opened ``enc`` with the push key
    from its REGISTER's 200 (``calls.encrypt_push``); ``false``: sent without ``enc``."""
    topic: str | None = None
    """The APNs topic it went on: ``org.lab.phone.voip`` (PushKit, to the VoIP token) or
    ``org.lab.phone`` (an alert, to the remote-notification token)."""
    delivered: bool | None = None
    """``true``: the push service took it (not refused: ``DeviceTokenNotForTopic``…)."""
    nth: int = Field(1, ge=1, le=100)
    """Which push of that kind to the device for the call the other fields check: 2 is
    the first re-push (``repush_interval_s``)."""
    count: int | None = Field(None, ge=1, le=100)
    """Exactly this many pushes of that kind went to the device for the call."""


class RefreshPushesExpect(_Model):
    """Device ``to`` got at least ``at_least`` refresh pushes (RFC 8599 §5.5: a silent
    push asking it to re-register before its binding expires), each delivered, and
    registered again after each one."""

    to: str
    at_least: int = Field(1, ge=1, le=1000)
    topic: str | None = None
    """The APNs topic they went on (``org.lab.phone``: background pushes to the
    remote-notification token, never the VoIP one)."""


class NoPushExpect(_ExpectBase):
    """No push (of ``kind``, or of any kind) is sent to device ``to`` for the call."""

    kind: PushKindName | None = None
    to: str


class RingingExpect(_ExpectBase):
    """The caller hears ringing (a 18x provisional response) within ``within`` s."""

    within: float = Field(ge=0)
    status: int | None = Field(None, ge=101, le=199)
    """A particular provisional status (default: any 18x); e.g. Flexisip's 110 Push sent."""


class TimedExpect(_ExpectBase):
    """Something happens at scenario time ``at`` ± ``tolerance``."""

    at: float = Field(ge=0)
    tolerance: float = Field(0.5, ge=0)


class AnsweredExpect(TimedExpect):
    """The call is answered by ``by``: a device (``user.device``), ``user.mobile`` (the
    twin branch) or ``voicemail``."""

    by: str


class MessageDeliveredExpect(_Model):
    """Message ``message`` reaches device ``to`` (at ``at`` ± ``tolerance`` when given);
    with ``after_wake`` (the default) only after a push woke the device."""

    message: str | None = None
    """The message (default: the first one of the timeline)."""
    to: str
    at: float | None = Field(None, ge=0)
    tolerance: float = Field(0.5, ge=0)
    after_wake: bool = True


class DeviceCancelledExpect(_ExpectBase):
    """Device ``to`` received the call's INVITE and then a CANCEL for it, within
    ``within`` s of the call (Flexisip's ``invite-cancel``: a phone woken for a call that
    ended meanwhile gets the INVITE, then at once the CANCEL, so CallKit shows it end)."""

    to: str
    within: float = Field(ge=0)
    cause: int | None = Field(None, ge=200, le=699)
    """The CANCEL's RFC 3326 ``Reason: SIP;cause=…``: 200 (completed elsewhere), 603
    (declined)…; unset: any Reason, or none."""
    after_end: bool = False
    """The INVITE reached the device only after the caller had its final response (the
    device rang for a call that had already ended)."""


class ForwardedExpect(TimedExpect):
    """The call is forwarded (no answer, busy) to device ``to``: its INVITE reaches ``to``
    at ``at`` ± ``tolerance`` carrying a Diversion header (RFC 5806) and History-Info
    (RFC 7044: the original target, then the diverted-to one) that name user
    ``diversion``."""

    to: str
    diversion: str | None = Field(None, pattern=_NAME)
    """The user the call was diverted from (default: the called user)."""
    reason: str | None = None
    """The Diversion ``reason`` (``no-answer``, ``user-busy``, ``unavailable``…)."""


class FinalStatusExpect(_ExpectBase):
    """The final response the caller gets for its INVITE."""

    status: int = Field(ge=200, le=699)

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: Any) -> Any:
        return (
            {"status": value} if isinstance(value, int) and not isinstance(value, bool) else value
        )


class Expect(_Model):
    """One expectation: exactly one of its fields."""

    push: PushExpect | None = None
    no_push: NoPushExpect | None = None
    ringing: RingingExpect | None = None
    answered: AnsweredExpect | None = None
    voicemail: TimedExpect | None = None
    """The call is diverted to voicemail (the voicemail gets the INVITE) at ``at``."""
    twin: TimedExpect | None = None
    """The twin branch (the mobile through the gateway) starts at ``at``."""
    final_status: FinalStatusExpect | None = None
    """The final response the caller (or a message's sender) gets."""
    message_delivered: MessageDeliveredExpect | None = None
    device_cancelled: DeviceCancelledExpect | None = None
    forwarded: ForwardedExpect | None = None
    refresh_pushes: RefreshPushesExpect | None = None

    @property
    def kind(self) -> str:
        for name in _EXPECTS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("a validated expectation has a kind")

    @property
    def spec(self) -> _ExpectBase | MessageDeliveredExpect | RefreshPushesExpect:
        value = getattr(self, self.kind)
        assert isinstance(value, _ExpectBase | MessageDeliveredExpect | RefreshPushesExpect)
        return value

    @model_validator(mode="after")
    def _one(self) -> Expect:
        given = [name for name in _EXPECTS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"each expectation needs exactly one of {', '.join(_EXPECTS)}; "
                f"got {', '.join(given) or 'none'}"
            )
        return self


_EXPECTS = (
    "push",
    "no_push",
    "ringing",
    "answered",
    "voicemail",
    "twin",
    "final_status",
    "message_delivered",
    "device_cancelled",
    "forwarded",
    "refresh_pushes",
)


# -- the scenario ---------------------------------------------------------------------------
class Scenario(_Model):
    name: str
    description: str = ""
    pbx: Pbx = Pbx()
    users: dict[str, User]
    timeline: list[Step]
    expect: list[Expect] = Field(min_length=1)
    duration_s: float = Field(60.0, gt=0, le=8 * 86400)
    """How long the replay runs (scenario time; up to 8 days, so a phone can sleep
    through several binding refreshes: ``sipwake replay --live`` takes it in real time)."""
    seed: int = 0
    """Seed of every identifier (tags, branches, Call-IDs): same seed, same bytes."""
    network_delay_s: float = Field(0.002, ge=0, le=5)
    """One-way delay of every SIP message."""
    push_latency_s: float = Field(0.05, ge=0, le=30)
    """From handing a push to the push service to its answer (and to the device)."""

    @field_validator("users")
    @classmethod
    def _user_names(cls, value: dict[str, User]) -> dict[str, User]:
        for name in value:
            if not _NAME_RE.match(name):
                raise ValueError(f"user name {name!r} must be letters, digits, '-' or '_'")
        return value

    # -- lookups the runner and the checks share ---------------------------------------
    def calls(self) -> list[tuple[str, Step]]:
        """(call id, step) of every call, in timeline order (ids defaulted)."""
        out = []
        n = 0
        for step in self.timeline:
            if step.call is not None:
                n += 1
                out.append((step.call.id or f"call{n}", step))
        return out

    def messages(self) -> list[tuple[str, Step]]:
        """(message id, step) of every message, in timeline order (ids defaulted)."""
        out = []
        n = 0
        for step in self.timeline:
            if step.message is not None:
                n += 1
                out.append((step.message.id or f"msg{n}", step))
        return out

    @property
    def restarts(self) -> bool:
        """Whether the server restarts (the replay then keeps a store)."""
        return any(step.restart_server is not None for step in self.timeline)

    def device_refs(self) -> dict[str, tuple[str, Device]]:
        """``user.device`` → (user, device)."""
        return {f"{u}.{d.name}": (u, d) for u, user in self.users.items() for d in user.devices}

    def resolve_device(self, ref: str) -> str | None:
        """``user.device``, or a device name that only one user has → ``user.device``."""
        refs = self.device_refs()
        if ref in refs:
            return ref
        matches = [r for r in refs if r.split(".", 1)[1] == ref]
        return matches[0] if len(matches) == 1 else None


def _reference_errors(scenario: Scenario) -> list[tuple[tuple[int | str, ...], str]]:
    """Names that point nowhere (devices, calls, users), with where they are written."""
    errors: list[tuple[tuple[int | str, ...], str]] = []
    refs = scenario.device_refs()
    known = ", ".join(sorted(refs)) or "none"
    call_ids = [cid for cid, _ in scenario.calls()]
    message_ids = [mid for mid, _ in scenario.messages()]

    def device(loc: tuple[int | str, ...], ref: str) -> None:
        if scenario.resolve_device(ref) is None:
            errors.append((loc, f"no device {ref!r} (devices: {known})"))

    def call(loc: tuple[int | str, ...], ref: str | None, *, message: bool = False) -> None:
        known = message_ids if message else call_ids
        what = "message" if message else "call"
        if ref is None:
            if not known:
                errors.append((loc, f"there is no {what} in the timeline"))
        elif ref not in call_ids + message_ids:
            errors.append((loc, f"no {what} {ref!r} ({what}s: {', '.join(known) or 'none'})"))

    for name, user in scenario.users.items():
        for field_name in ("forward_no_answer", "forward_busy"):
            to = getattr(user, field_name)
            if to is not None and (to not in scenario.users or to == name):
                why = "the user itself" if to == name else "no such user"
                users = ", ".join(scenario.users)
                errors.append((("users", name, field_name), f"{to!r}: {why} (users: {users})"))
        seen: set[str] = set()
        for i, d in enumerate(user.devices):
            if d.name in seen:
                errors.append((("users", name, "devices", i, "name"), f"duplicate {d.name!r}"))
            seen.add(d.name)
    ids_seen: set[str] = set()
    for cid, _ in scenario.calls() + scenario.messages():
        if cid in ids_seen:
            errors.append((("timeline",), f"two calls or messages are named {cid!r}"))
        ids_seen.add(cid)
    for i, step in enumerate(scenario.timeline):
        loc: tuple[int | str, ...] = ("timeline", i)
        if step.at > scenario.duration_s:
            errors.append(
                (
                    (*loc, "at"),
                    f"{step.at:g} s is after the end (duration_s {scenario.duration_s:g})",
                )
            )
        for sent in (step.call, step.message):
            if sent is not None and sent.to not in scenario.users:
                errors.append(
                    (
                        (*loc, step.action, "to"),
                        f"no user {sent.to!r} (users: {', '.join(scenario.users)})",
                    )
                )
        if step.hangup is not None:
            call((*loc, "hangup"), step.hangup.call)
        if step.cancel is not None:
            call((*loc, "cancel"), step.cancel.call)
        for action in ("suspend", "resume", "logout", "rotate_token"):
            ref = getattr(step, action)
            if ref is not None:
                device((*loc, action), ref)
        if step.rotate_token is not None:
            found = scenario.device_refs().get(scenario.resolve_device(step.rotate_token) or "")
            if found is not None and found[1].provider == "none":
                errors.append(((*loc, "rotate_token"), "the device has no push provider"))
        if step.dnd is not None:
            who = step.dnd.split(" ", 1)[0]
            if "." in who:
                device((*loc, "dnd"), who)
            elif who not in scenario.users or not scenario.users[who].devices:
                errors.append(
                    ((*loc, "dnd"), f"no user {who!r} with a device to dial the feature code")
                )
        if step.push_fails is not None and step.push_fails.device is not None:
            device((*loc, "push_fails", "device"), step.push_fails.device)
        if step.network_loss is not None:
            device((*loc, "network_loss", "device"), step.network_loss.device)
    for i, item in enumerate(scenario.expect):
        loc = ("expect", i, item.kind)
        spec = item.spec
        if isinstance(spec, MessageDeliveredExpect):
            call((*loc, "message"), spec.message, message=True)
            device((*loc, "to"), spec.to)
            continue
        if isinstance(spec, RefreshPushesExpect):
            device((*loc, "to"), spec.to)
            continue
        about_message = isinstance(spec, PushExpect | NoPushExpect) and spec.kind == "message"
        if not (isinstance(spec, NoPushExpect) and spec.call is None):
            call((*loc, "call"), spec.call, message=about_message)
        if isinstance(spec, PushExpect | NoPushExpect | DeviceCancelledExpect | ForwardedExpect):
            device((*loc, "to"), spec.to)
        diverted_from = spec.diversion if isinstance(spec, ForwardedExpect) else None
        if diverted_from is not None and diverted_from not in scenario.users:
            users = ", ".join(scenario.users)
            errors.append(((*loc, "diversion"), f"no user {diverted_from!r} (users: {users})"))
        if isinstance(spec, AnsweredExpect):
            by = spec.by
            owner, _, rest = by.partition(".")
            if by != "voicemail" and not (rest == "mobile" and owner in scenario.users):
                device((*loc, "by"), by)
    return errors


def _where(
    root: yaml.Node | None, loc: tuple[int | str, ...]
) -> tuple[tuple[int | str, ...], int | None]:
    """``loc`` without pydantic's union/validator tags, and its line in the file."""
    clean = tuple(
        p
        for p in loc
        if not (isinstance(p, str) and ("[" in p or p.startswith("function-") or p in _TAGS))
    )
    return clean, _line_of(root, clean)


_TAGS = frozenset({"float", "int", "str", "bool", "list", "dict", "none", "literal"})


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Validate a scenario's YAML ``text``; ``path`` names it in errors."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioFileError(f"not valid YAML: {problem}", path=path, line=line) from exc
    if not isinstance(data, dict):
        raise ScenarioFileError(
            "expected a mapping (name, users, timeline, expect…)", path=path, line=1
        )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key is both unknown and a required one missing: the unknown one is
        # the cause, and the missing ones are what it probably meant.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc, line = _where(root, tuple(first["loc"]))
        key = ".".join(str(p) for p in loc) or "(top)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
            missing = [
                str(e["loc"][-1])
                for e in errors
                if e["type"] == "missing" and tuple(e["loc"][:-1]) == tuple(first["loc"][:-1])
            ]
            close = difflib.get_close_matches(str(loc[-1]) if loc else "", missing, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        elif first["type"] != "missing" and "got " not in message:
            message += f" (got {cut(repr(first.get('input')))})"
        raise ScenarioFileError(message, path=path, line=line, key=key) from exc
    wrong = _reference_errors(scenario)
    if wrong:
        where, what = wrong[0]
        key = ".".join(str(p) for p in where)
        raise ScenarioFileError(what, path=path, line=_line_of(root, where), key=key)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the scenario file at ``path`` (``ScenarioFileError`` if bad)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ScenarioFileError(f"cannot read: {reason}", path=str(path)) from exc
    return parse_scenario(text, str(path))


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (for editors: ``sipwake schema``)."""
    schema = Scenario.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sipwake scenario"
    return schema
