"""APNs request builder and response classifier: pure functions, no I/O.

The builder turns a ``PushRequest`` into the method, path, headers and JSON body of one
APNs provider-API request (PROTOCOLS.md §3.2); the classifier turns APNs' answer
(status, JSON ``reason``, headers) into a ``PushOutcome`` (§3.5). The ``authorization``
header is left to the caller, which owns the provider token.

PushKit rules (§4) shape the builder: only ``call`` pushes use the VoIP channel
(``apns-push-type: voip``, topic ``<bundle>.voip``, the device's VoIP token, priority 10,
expiration 0, so a late push is not stored); ``cancel`` (missed call) and ``message`` are
regular ``alert`` pushes on the plain bundle topic to the device's remote-notification
token (``PushTarget.channel``), because every VoIP push must be reported to CallKit as a
call and APNs refuses an alert to a VoIP token (``DeviceTokenNotForTopic``). A device
with no remote token gets no alert (``NoAlertToken``); one with no VoIP token gets its
calls as alerts.
A private push (``PushRequest.private``, ``calls.encrypt_push``) carries its ``type`` and
the sealed details (``enc``) only, and no ``apns-collapse-id``.
A ``refresh`` push (RFC 8599 §5.5: re-register before the binding expires) is a
``background`` push to the remote token on the plain bundle topic, at priority 5 (Apple
refuses a background push at 10), ``{"aps": {"content-available": 1}}`` and nothing
else: no alert, no sound, no call details; never a VoIP push (it is not a call).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from sipwake.errors import PushError
from sipwake.push.base import REFRESH_COLLAPSE_ID, PushOutcome, PushRequest, PushStatus
from sipwake.push.seal import private_fields
from sipwake.sip.pushtarget import mask_token

__all__ = [
    "ALERT_PAYLOAD_LIMIT",
    "APNS_HOSTS",
    "VOIP_PAYLOAD_LIMIT",
    "ApnsHttpRequest",
    "ApnsSettings",
    "build_apns_request",
    "classify_apns_response",
    "parse_retry_after",
]

#: PROTOCOLS.md §3.2: maximum JSON body of a regular push, in bytes.
ALERT_PAYLOAD_LIMIT = 4096
#: PROTOCOLS.md §3.2: maximum JSON body of a VoIP push, in bytes.
VOIP_PAYLOAD_LIMIT = 5120

APNS_HOSTS: Mapping[str, str] = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}

_PROVIDER = "apns"
_TOKEN_RE = re.compile(r"[0-9A-Fa-f]{8,200}")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CALLER_LIMIT = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class ApnsSettings:
    """Who we are to APNs: token-auth identity (empty with certificate auth), default app
    and environment."""

    bundle_id: str
    """Default bundle id, used when the push target's ``pn-param`` names none."""
    environment: Literal["production", "sandbox"] = "production"
    team_id: str = ""
    key_id: str = ""
    alert_ttl_s: int = 3600
    """How long APNs may store an alert push (missed call, message); VoIP is never stored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApnsHttpRequest:
    """One APNs HTTP/2 request, without its ``authorization`` header."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        token = self.path.rsplit("/", 1)[-1]
        return (
            f"ApnsHttpRequest(method={self.method!r}, "
            f"path={self.path.replace(token, mask_token(token))!r}, "
            f"push_type={self.headers.get('apns-push-type')!r}, "
            f"topic={self.headers.get('apns-topic')!r}, body_bytes={len(self.body)})"
        )


def _private_payload(request: PushRequest) -> dict[str, Any]:
    """Only the kind in clear; the details sealed for the device (``sipwake.push.seal``).
    Alerts get generic text and ``mutable-content``, so the app's notification service
    extension can open ``enc`` and show the caller."""
    data: dict[str, Any] = {"type": request.kind, **private_fields(request)}
    sealed = "enc" in data
    match request.kind:
        case "call":
            data["aps"] = {}
        case "cancel":
            alert = {"title": "Missed call", "body": "Missed call"}
            data["aps"] = {"alert": alert, "sound": "default"}
        case "message":
            data["aps"] = {"alert": {"body": "New message"}, "sound": "default"}
    if sealed and request.kind != "call":
        data["aps"]["mutable-content"] = 1
    return data


def _payload(request: PushRequest) -> dict[str, Any]:
    if request.kind == "refresh":  # silent: nothing to show, nothing to seal
        return {"type": "refresh", "aps": {"content-available": 1}}
    if request.private:
        return _private_payload(request)
    caller = (request.caller or "")[:_CALLER_LIMIT] or None
    data: dict[str, Any] = {"type": request.kind, "call-id": request.call_id}
    if caller is not None:
        data["caller"] = caller
    if request.call_uuid is not None:
        data["uuid"] = request.call_uuid
    match request.kind:
        case "call":
            # PushKit ignores aps; the app reads call-id/caller/uuid to report to CallKit.
            data["aps"] = {}
        case "cancel":
            text = request.body or (f"Missed call from {caller}" if caller else "Missed call")
            data["aps"] = {"alert": {"title": "Missed call", "body": text}, "sound": "default"}
        case "message":
            alert: dict[str, str] = {"body": request.body or ""}
            if caller is not None:
                alert["title"] = caller
            data["aps"] = {"alert": alert, "sound": "default"}
    return data


def _encode(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _fit(data: dict[str, Any], limit: int) -> bytes:
    """Encode ``data``, shortening the alert text when the body would exceed ``limit``."""
    body = _encode(data)
    alert = data["aps"].get("alert")
    if len(body) > limit and isinstance(alert, dict) and alert.get("body"):
        text: str = alert["body"]
        excess = len(body) - limit
        # Cut by bytes, then drop any partial character, and mark the cut.
        raw = text.encode()[: max(0, len(text.encode()) - excess - 3)]
        alert["body"] = raw.decode(errors="ignore") + "…"
        body = _encode(data)
        while len(body) > limit and alert["body"]:
            alert["body"] = alert["body"][:-2] + "…" if len(alert["body"]) > 1 else ""
            body = _encode(data)
    if len(body) > limit:
        raise PushError(_PROVIDER, f"PayloadTooLarge: {len(body)} bytes > {limit}", retryable=False)
    return body


def build_apns_request(
    request: PushRequest, settings: ApnsSettings, *, wall_now: float
) -> ApnsHttpRequest:
    """The APNs request for ``request`` (PROTOCOLS.md §3.2, §4).

    ``wall_now`` (UNIX seconds) dates the expiration of stored alert pushes. Raises
    ``PushError(retryable=False)`` when the device token is not hex (it would otherwise
    travel into the request path) or the payload cannot fit the APNs limit.
    """
    target = request.target.channel("call" if request.kind == "call" else "alert")
    if target is None:
        raise PushError(
            _PROVIDER,
            f"NoAlertToken: a {request.kind} push needs the device's remote-notification "
            "token; it has only a VoIP token, which takes calls only (PushKit)",
            retryable=False,
        )
    token = target.prid
    if not _TOKEN_RE.fullmatch(token):
        raise PushError(
            _PROVIDER, f"BadDeviceToken: not hex: {mask_token(token)!r}", retryable=False
        )
    # The token decides the channel: only a call reaches a VoIP token (channel() never
    # hands an alert one); a call to an app without PushKit is an alert on its bundle.
    voip = target.service == "voip"
    topic = target.apns_topic or (f"{settings.bundle_id}.voip" if voip else settings.bundle_id)
    stored = not voip and request.kind != "call"
    background = request.kind == "refresh"
    headers: dict[str, str] = {
        "apns-push-type": "voip" if voip else "background" if background else "alert",
        "apns-topic": topic,
        "apns-priority": "5" if background else "10",
        "apns-expiration": str(int(wall_now) + settings.alert_ttl_s) if stored else "0",
        "content-type": "application/json",
    }
    if request.apns_id is not None:
        if not _UUID_RE.fullmatch(request.apns_id):
            raise PushError(_PROVIDER, f"BadMessageId: {request.apns_id[:40]!r}", retryable=False)
        headers["apns-id"] = request.apns_id
    if background:
        headers["apns-collapse-id"] = REFRESH_COLLAPSE_ID
    elif not voip and not request.private:
        headers["apns-collapse-id"] = request.call_id.encode()[:64].decode(errors="ignore")
    data = _payload(request)
    if request.kind == "call" and not voip:
        data["aps"] = _call_alert(request)
    body = _fit(data, VOIP_PAYLOAD_LIMIT if voip else ALERT_PAYLOAD_LIMIT)
    return ApnsHttpRequest(method="POST", path=f"/3/device/{token}", headers=headers, body=body)


def _call_alert(request: PushRequest) -> dict[str, Any]:
    """The ``aps`` of a call pushed to an app without a VoIP token (Flexisip's "remote"
    strategy): a visible, sounding alert; the caller only when details may be in clear."""
    caller = None if request.private else (request.caller or "")[:_CALLER_LIMIT] or None
    aps: dict[str, Any] = {
        "alert": {"title": "Incoming call", "body": caller or "Incoming call"},
        "sound": "default",
    }
    if request.private and request.seal_key is not None:
        aps["mutable-content"] = 1
    return aps


def parse_retry_after(value: str | None, *, wall_now: float | None = None) -> float | None:
    """RFC 9110 §10.2.3 ``Retry-After``: delay-seconds, or an HTTP-date given ``wall_now``."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    if wall_now is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - wall_now)


#: 400 reasons that say the token itself is bad: stop using it.
_INVALID_TARGET_400 = frozenset({"BadDeviceToken"})


def _reason(body: bytes) -> tuple[str | None, float | None]:
    if not body:
        return None, None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    reason = data.get("reason")
    stamp = data.get("timestamp")
    return (
        reason[:80] if isinstance(reason, str) else None,
        stamp / 1000.0 if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None,
    )


def classify_apns_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    latency: float = 0.0,
    wall_now: float | None = None,
) -> PushOutcome:
    """A ``PushOutcome`` for APNs' answer (PROTOCOLS.md §3.5).

    200 → delivered; 400 BadDeviceToken and 410 (Unregistered, ExpiredToken: with its
    ``timestamp`` as ``unregistered_at``, so a token registered again since is kept) →
    invalid_target; 403 ExpiredProviderToken → retry (after minting a new token); 429,
    500, 503 → retry, honouring ``Retry-After``; anything else → error, among them
    DeviceTokenNotForTopic and TopicDisallowed: the token is fine, our topic or key is
    not (``base.configuration_error``). ``headers`` keys are lower case.
    """
    reason, stamp = _reason(body)
    result: PushStatus
    if status == 200:
        result = "delivered"
    elif status == 410 or (status == 400 and reason in _INVALID_TARGET_400):
        result = "invalid_target"
    elif (status == 403 and reason == "ExpiredProviderToken") or status in (429, 500, 503):
        result = "retry"
    else:
        result = "error"
    retry_after = (
        parse_retry_after(headers.get("retry-after"), wall_now=wall_now)
        if result == "retry"
        else None
    )
    return PushOutcome(
        status=result,
        provider=_PROVIDER,
        reason=reason,
        http_status=status,
        retry_after=retry_after,
        apns_id=headers.get("apns-id"),
        latency=latency,
        unregistered_at=stamp if status == 410 else None,
    )
