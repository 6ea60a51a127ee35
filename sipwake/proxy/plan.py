"""Call plans: the PBX timings and policies the call-wake engine applies to one user.

A ``CallPlan`` is a frozen value made from three layers, later ones winning:
the embedded defaults, a named *preset* copying a real system, and the
user's own settings (``users.<name>`` in the YAML file). The engine never
reads configuration itself; the node hands it the plan of the called user.

Presets (see README "Presets" for the sources of each value):

``sipwake``
    The default: ring foreground devices at once, push suspended ones with
    180 Ringing to the caller, 30 s no-answer time, 10 s mobile dial delay,
    "call cancelled" alert push when the caller gives up during the wake,
    the call push sent again every 10 s to a device that got it but has not
    registered (``repush_interval_s``).
``rfc8599``
    Only what RFC 8599 says: push, hold the transaction (100 Trying only),
    fork on re-registration; 480 when the bucket time runs out; one push per
    device (no re-push: the RFC has none).
``flexisip``
    Flexisip 2.x Router/PushNotification defaults: 110 Push sent,
    ``call-fork-timeout`` 90 s then 408; a device pushed for a call that ended
    before it registered gets that INVITE then at once a CANCEL when it does
    (``Reason: SIP;cause=200`` when another device answered), so an iOS app
    can report the call to CallKit and see it end; the call push repeated every
    5 s to a device still waking (``call-remote-push-interval``, which Flexisip
    ships at 0 and allows up to 30 s: this preset is Flexisip with it on).
``avaya-ip-office``
    IP Office R11.1+: one iOS device per user (the last to register is the
    only one pushed), push only for clients registered over TLS, No Answer
    Time 15 s raised to at least 20 s when a push client exists, Mobile
    Dial Delay 10 s.
``cisco-cucm``
    CUCM 14 with Jabber/Webex: every device rings; iOS devices get the VoIP
    push even in the foreground (iOS 13+ rule: the call arrives by push while
    SIP carries it); Forward No Answer after 12 s.
``innovaphone``
    Call details (caller number and name) encrypted in the push payload with
    a per-device key; DND stops pushes; logging out removes the push target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PRESETS", "CallPlan", "CancelNotice", "Ringback", "plan_for"]

Ringback = Literal["180", "110", "100"]
"""What the caller hears while a device wakes: 180 Ringing from the PBX, Flexisip's
110 Push sent, or only the 100 Trying every INVITE gets."""

CancelNotice = Literal["push", "invite-cancel", "none"]
"""Telling a woken device that the caller gave up: an alert push ("missed call"), the
INVITE followed by CANCEL once it registers (Flexisip, iOS CallKit), or nothing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPlan:
    """Everything the engine needs to decide who rings, when, and where a call goes."""

    preset: str = "sipwake"
    no_answer_s: float = 30.0
    """RFC-less PBX "No Answer Time": after it, every branch is cancelled and the call
    diverts (``voicemail``/``forward_no_answer``) or is answered ``no_answer_status``."""
    no_answer_with_push_min_s: float = 0.0
    """When a push is sent, the no-answer time is at least this (Avaya: 20 s)."""
    no_answer_status: int = 480
    mobile_dial_delay_s: float = 10.0
    """Seconds before the twin branch (``twin``) joins the call."""
    ringback: Ringback = "180"
    push_foreground: bool = False
    """Push foreground devices too (Cisco, iOS 13+)."""
    single_ios_device: bool = False
    """Only the most recently registered APNs device of a user is pushed (Avaya)."""
    push_requires_tls: bool = False
    """Push only devices registered over TLS (Avaya: "APNs works only on TLS")."""
    cancel_notice: CancelNotice = "push"
    cancel_replay_s: float = 30.0
    """``invite-cancel``: how long a device pushed for a call that ended is owed that
    call's INVITE and CANCEL when it registers (after that it would only be noise)."""
    encrypt_push: bool = False
    """Call details (caller number and name, Call-ID) only sealed with the device's push
    key in the payload, never in clear (innovaphone; ``sipwake.push.seal``)."""
    udp_foreground_s: float = 120.0
    """A UDP binding with push parameters counts as foreground (reachable without a push)
    this long after its last REGISTER; older, it is suspended."""
    push_attempts: int = 3
    """Tries per device for a push that failed transiently (within the no-answer time)."""
    push_backoff_s: float = 1.0
    """First retry delay; doubled on each retry unless the provider said Retry-After."""
    repush_interval_s: float | None = 10.0
    """Re-push: a device whose call push the service accepted but that has not
    registered gets the call push again every this many seconds, until it registers or
    the call ends (Flexisip ``call-remote-push-interval``); None or 0: one push only.
    Each re-push carries the call's same UUID, so an app already showing the call sees
    the same CallKit call."""
    dnd: bool = False
    """Do not disturb: no push, no ringing; straight to the no-answer target."""
    voicemail: str | None = None
    """Voicemail URI for no answer and busy (RFC 4458 ``target``/``cause`` added)."""
    forward_no_answer: str | None = None
    """Forward-on-no-answer target; wins over ``voicemail`` for no answer."""
    forward_busy: str | None = None
    """Divert-on-busy target; ``voicemail`` when unset."""
    twin: str | None = None
    """The twin branch's URI (the user's mobile number through the gateway)."""

    @property
    def repush_after(self) -> float | None:
        """The re-push interval, None when re-push is off."""
        return self.repush_interval_s or None

    def no_answer_after(self, pushed: bool) -> float:
        if pushed:
            return max(self.no_answer_s, self.no_answer_with_push_min_s)
        return self.no_answer_s

    @property
    def no_answer_target(self) -> str | None:
        return self.forward_no_answer or self.voicemail

    @property
    def busy_target(self) -> str | None:
        return self.forward_busy or self.voicemail

    def warnings(self) -> list[str]:
        """Settings that cannot work together (ANCHORS.md: the wake window must fit)."""
        out = []
        if self.twin and self.mobile_dial_delay_s >= self.no_answer_s:
            out.append(
                f"mobile dial delay {self.mobile_dial_delay_s:g} s is not shorter than the "
                f"no-answer time {self.no_answer_s:g} s: the twin never rings"
            )
        if self.no_answer_after(True) < 8:
            out.append(
                f"no-answer time {self.no_answer_after(True):g} s leaves a push-woken phone "
                "too little time (iOS takes up to 6 s to wake and re-register)"
            )
        return out


PRESETS: dict[str, dict[str, Any]] = {
    "sipwake": {},
    "rfc8599": {
        "ringback": "100",
        "no_answer_s": 30.0,
        "mobile_dial_delay_s": 10.0,
        "cancel_notice": "none",
        "repush_interval_s": None,
    },
    "flexisip": {
        "ringback": "110",
        "no_answer_s": 90.0,
        "no_answer_status": 408,
        "cancel_notice": "invite-cancel",
        "repush_interval_s": 5.0,
    },
    "avaya-ip-office": {
        "no_answer_s": 15.0,
        "no_answer_with_push_min_s": 20.0,
        "mobile_dial_delay_s": 10.0,
        "single_ios_device": True,
        "push_requires_tls": True,
    },
    "cisco-cucm": {
        "no_answer_s": 12.0,
        "push_foreground": True,
    },
    "innovaphone": {
        "encrypt_push": True,
    },
}


def plan_for(preset: str = "sipwake", **overrides: Any) -> CallPlan:
    """The plan of ``preset`` with ``overrides`` (``None`` values are ignored)."""
    try:
        base = PRESETS[preset]
    except KeyError:
        raise ValueError(
            f"unknown preset {preset!r}; expected one of {', '.join(sorted(PRESETS))}"
        ) from None
    values = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    return dataclasses.replace(CallPlan(preset=preset), **values)
