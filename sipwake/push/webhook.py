"""Webhook push provider: a signed JSON POST to a URL of the lab's choosing.

Labs use it to wake what no push service can reach: a desktop softphone, a device
farm, a test harness that restarts a stopped softphone. Any HTTP/1.1 server will do.

Request (one per push)::

    POST <url>
    Content-Type: application/json
    X-Sipwake-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

    {"kind": "call", "call_id": "...", "caller": "...", "call_uuid": "...",
     "body": null, "provider": "apns", "prid": "<device token>", "param": "...",
     "sent_at": 1800000000.123}

``provider``, ``prid`` and ``param`` are the device's RFC 8599 ``pn-*`` values, so a
receiver can tell which device to wake; ``sent_at`` is UNIX time (seconds). With
``calls.encrypt_push`` the call details are null and ``enc`` carries them sealed for the
device (``sipwake.push.seal``; absent when the device has no push key).

Verifying a request (receivers): split the header on ``,`` into ``key=value`` pairs;
take ``t`` (an integer) and every ``v1``. Compute
``hex(HMAC-SHA256(secret, f"{t}.".encode() + raw_body))`` over the body bytes exactly
as received, compare it in constant time with each ``v1``, and refuse a ``t`` more
than a few minutes from your clock (replays). ``verify_signature`` below does that.

Answer: any 2xx means delivered. 404 or 410 says the device is gone (the binding's
push target is dropped); 429 or 503 asks for a retry, after ``Retry-After`` seconds
when given; other 4xx are errors (not retried); other 5xx, a timeout or a lost
connection are retried. A JSON answer body ``{"reason": "..."}`` becomes the outcome's
reason.

The secret is never logged; device tokens only masked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from sipwake import __version__
from sipwake.errors import cut
from sipwake.push.base import PushOutcome, PushRequest, PushStatus
from sipwake.push.payload import parse_retry_after
from sipwake.push.seal import private_fields

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookHttpRequest",
    "WebhookProvider",
    "build_webhook_request",
    "classify_webhook_response",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Sipwake-Signature"
_PROVIDER = "webhook"


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _mac(secret: str | bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, wall_now: float) -> str:
    """The ``X-Sipwake-Signature`` value for ``body`` sent at ``wall_now`` (UNIX seconds)."""
    timestamp = int(wall_now)
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = 300,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made within ``tolerance_s``
    seconds of ``now`` (UNIX seconds). Any ``v1`` may match (a sender rotating keys
    may send several). Malformed headers are simply invalid."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    # Check every candidate (no early exit) so timing says nothing about which matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookHttpRequest:
    """The POST to make: header fields and the exact body bytes that were signed."""

    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:  # the body holds the device token
        return f"WebhookHttpRequest(body={len(self.body)} bytes)"


def build_webhook_request(
    request: PushRequest, secret: str | bytes, *, wall_now: float
) -> WebhookHttpRequest:
    """The signed webhook POST for ``request`` at ``wall_now`` (pure)."""
    target = request.target
    payload: dict[str, object] = {
        "kind": request.kind,
        "call_id": request.call_id,
        "caller": request.caller,
        "call_uuid": request.call_uuid,
        "body": request.body,
        "provider": target.provider,
        "prid": target.prid,
        "param": target.param,
        "sent_at": round(wall_now, 3),
    }
    if request.private:
        # calls.encrypt_push: the details only sealed for the device (sipwake.push.seal).
        payload.update(call_id=None, caller=None, call_uuid=None, body=None)
        payload.update(private_fields(request))
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {
        "content-type": "application/json",
        "user-agent": f"sipwake/{__version__}",
        SIGNATURE_HEADER.lower(): sign(secret, body, wall_now),
    }
    return WebhookHttpRequest(headers=headers, body=body)


def _reason(body: bytes) -> str | None:
    if not body or not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return cut(reason) if isinstance(reason, str) else None


def classify_webhook_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    latency: float = 0.0,
    wall_now: float | None = None,
) -> PushOutcome:
    """A ``PushOutcome`` for the receiver's answer (pure; ``headers`` keys lower case).

    2xx → delivered; 404, 410 → invalid_target; 429, 503 and other 5xx → retry
    (``Retry-After`` honoured); other statuses → error.
    """
    result: PushStatus
    if 200 <= status < 300:
        result = "delivered"
    elif status in (404, 410):
        result = "invalid_target"
    elif status == 429 or 500 <= status < 600:
        result = "retry"
    else:
        result = "error"
    reason = _reason(body)
    if reason is None and result != "delivered":
        reason = f"HTTP {status}"
    return PushOutcome(
        status=result,
        provider=_PROVIDER,
        reason=reason,
        http_status=status,
        retry_after=(
            parse_retry_after(headers.get("retry-after"), wall_now=wall_now)
            if result == "retry"
            else None
        ),
        latency=latency,
    )


class WebhookProvider:
    """POSTs each push, signed, to one URL (a ``PushProvider``; see the module text)."""

    name = _PROVIDER

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        clock: Callable[[], float],
        timeout_s: float = 5,
        ssl_context: ssl.SSLContext | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``clock`` gives wall seconds (``t`` and ``sent_at``), ``timer`` monotonic
        seconds (latency); ``ssl_context`` overrides the system trust store (https)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"webhook url must be http:// or https:// with a host, got {cut(url)!r}"
            )
        if not secret:
            raise ValueError("webhook secret must not be empty")
        if timeout_s <= 0:
            raise ValueError(f"webhook timeout_s must be > 0, got {timeout_s}")
        self.url = url
        self._secret = secret
        self._clock = clock
        self._timer = timer
        self._client = httpx.AsyncClient(
            http1=True,
            http2=False,
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout_s,
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never the secret
        return f"WebhookProvider(url={self.url!r})"

    async def send(self, request: PushRequest) -> PushOutcome:
        wall_now = self._clock()
        built = build_webhook_request(request, self._secret, wall_now=wall_now)
        started = self._timer()
        try:
            response = await self._client.post(self.url, headers=built.headers, content=built.body)
            outcome = classify_webhook_response(
                response.status_code,
                response.content,
                response.headers,
                latency=self._timer() - started,
                wall_now=wall_now,
            )
        except httpx.TimeoutException as exc:
            outcome = self._unanswered(f"timeout: {type(exc).__name__}", started)
        except httpx.TransportError as exc:
            outcome = self._unanswered(f"transport: {type(exc).__name__}", started)
        logger.info(
            "webhook: %s push to %s: %s%s (%.0f ms)",
            request.kind,
            request.target.masked(),
            outcome.status,
            f" {outcome.http_status or ''} {outcome.reason}" if outcome.reason else "",
            outcome.latency * 1000,
        )
        return outcome

    def _unanswered(self, reason: str, started: float) -> PushOutcome:
        """No answer (timeout, refused, reset): the push may be retried."""
        return PushOutcome(
            status="retry", provider=_PROVIDER, reason=reason, latency=self._timer() - started
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> WebhookProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
