"""The push provider interface: one request in, one outcome out.

A provider never raises for a refusal the provider reported (bad token, throttling,
server error): it returns a ``PushOutcome`` whose ``status`` tells the caller what to do
next: ``delivered`` (done), ``retry`` (try again, after ``retry_after`` seconds if set),
``invalid_target`` (stop using this device token, RFC 8599 §5.3 binding hygiene) or
``error`` (give up on this push). Transport failures become ``retry`` or ``error`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from sipwake.sip.pushtarget import PushTarget, mask_token

__all__ = [
    "CONFIGURATION_REASONS",
    "REFRESH_COLLAPSE_ID",
    "PushKind",
    "PushOutcome",
    "PushProvider",
    "PushRecord",
    "PushRequest",
    "PushStatus",
    "configuration_error",
]

PushKind = Literal["call", "cancel", "message", "refresh"]
"""Why a push goes out: a ``call``; a ``cancel`` (missed call) or ``message`` alert; a
``refresh``: a silent push asking a suspended app to re-register before its binding
expires (RFC 8599 §5.5): APNs ``background`` at priority 5, FCM normal priority, Web
Push ``Urgency: low``; it carries no call (``call_id`` empty)."""

#: Collapse key of refresh pushes: a newer one replaces one the service still holds.
REFRESH_COLLAPSE_ID = "sipwake-refresh"
PushStatus = Literal["delivered", "retry", "invalid_target", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRequest:
    """One push to send: why (``kind``), to whom (``target``) and for which call."""

    kind: PushKind
    target: PushTarget
    call_id: str
    """The SIP Call-ID the push is about (the app matches it after it registers)."""
    caller: str | None = None
    """Caller display name or number, shown by CallKit before the app reaches the server."""
    call_uuid: str | None = None
    """A UUID for CallKit's ``reportNewIncomingCall``; providers may omit it."""
    body: str | None = None
    """Message text (``kind == "message"``) or a missed-call line (``kind == "cancel"``)."""
    apns_id: str | None = None
    """Lower-case canonical UUID sent as ``apns-id`` (APNs makes one when absent)."""
    caller_number: str | None = None
    """The caller's number (From URI user): part of the sealed details of a private push."""
    private: bool = False
    """Call details (caller, Call-ID, UUID, text) must not reach the push service in
    clear (``calls.encrypt_push``): they travel only sealed with ``seal_key``
    (``sipwake.push.seal``), or not at all without a key."""
    seal_key: bytes | None = field(default=None, repr=False)
    """The device's push key (32 bytes) from its binding; None: it has none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PushOutcome:
    """What became of one push."""

    status: PushStatus
    provider: str
    reason: str | None = None
    """The provider's reason string (``Unregistered``, ``TooManyRequests``…), or ours."""
    http_status: int | None = None
    retry_after: float | None = None
    """Seconds to wait before retrying, when the provider said so (``Retry-After``)."""
    apns_id: str | None = None
    latency: float = 0.0
    """Seconds from sending the request to reading the response."""
    unregistered_at: float | None = None
    """APNs 410 ``timestamp`` (UNIX seconds): the token is invalid since then; a binding
    registered later should be kept (PROTOCOLS.md §3.5, token hygiene)."""


#: Refusals that mean the server is set up wrong, not that the token is dead: the token is
#: kept and the refusal logged loudly (APNs §3.5, FCM §5 in PROTOCOLS.md).
CONFIGURATION_REASONS = frozenset(
    {
        "DeviceTokenNotForTopic",  # the token is for another topic (VoIP vs remote, bundle)
        "TopicDisallowed",  # our key or certificate may not push to this topic
        "BadTopic",
        "MissingTopic",
        "InvalidPushType",
        "BadEnvironmentKeyIdInToken",
        "UnrelatedKeyIdInToken",
        "InvalidProviderToken",
        "BadCertificate",
        "BadCertificateEnvironment",
        "SENDER_ID_MISMATCH",  # FCM: the token belongs to another Firebase project
        "THIRD_PARTY_AUTH_ERROR",
    }
)


def configuration_error(outcome: PushOutcome) -> bool:
    """Whether the provider refused a push because of our configuration (topic, key,
    project): the device token stays; an operator must fix the setting."""
    return outcome.status == "error" and outcome.reason in CONFIGURATION_REASONS


class PushProvider(Protocol):
    """A push service client: ``send`` one push at a time, concurrently; ``close`` once."""

    async def send(self, request: PushRequest) -> PushOutcome:
        """Send ``request``; report the provider's answer instead of raising for it."""
        ...

    async def close(self) -> None:
        """Release connections; ``send`` must not be called afterwards."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRecord:
    """One push attempt as a store keeps it (``sipwake pushes`` lists them).

    The device token is kept only masked (``mask_token``): a record built with a
    token that is not already masked is refused with ``ValueError``.
    """

    wall: float
    """When the push was sent (UNIX seconds)."""
    aor: str | None
    binding_id: str | None
    kind: str
    provider: str
    """Who handled it: ``apns``, ``fcm``, ``webpush``, ``webhook``, ``sandbox``…"""
    pn_provider: str
    """The target's ``pn-provider`` as the device wrote it (``apns.dev``…)."""
    token: str
    """The push token (``pn-prid``), masked."""
    status: str
    reason: str | None = None
    http_status: int | None = None
    latency: float = 0.0
    """Seconds from handing the push to the provider to its outcome."""
    apns_id: str | None = None
    call_id: str = ""

    def __post_init__(self) -> None:
        if self.token != mask_token(self.token):
            raise ValueError("PushRecord.token must be masked with mask_token()")

    @classmethod
    def of(
        cls,
        request: PushRequest,
        outcome: PushOutcome,
        *,
        wall: float,
        binding_id: str | None = None,
        aor: str | None = None,
    ) -> PushRecord:
        """The record of ``request`` sent at ``wall`` with ``outcome`` (token masked)."""
        return cls(
            wall=wall,
            aor=aor,
            binding_id=binding_id,
            kind=request.kind,
            provider=outcome.provider,
            pn_provider=request.target.provider,
            token=mask_token(request.target.prid),
            status=outcome.status,
            reason=outcome.reason,
            http_status=outcome.http_status,
            latency=outcome.latency,
            apns_id=outcome.apns_id or request.apns_id,
            call_id=request.call_id,
        )
