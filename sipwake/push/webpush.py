"""Web Push provider: RFC 8030 push messages, RFC 8291 encryption, RFC 8292 VAPID.

Theory of operation. A browser softphone registers with ``pn-provider=webpush`` and its
push subscription URL as ``pn-prid`` (RFC 8599 §12); if it also sends the sipwake
extension parameters ``pn-p256dh``/``pn-auth`` (its subscription keys), pushes carry an
RFC 8291 ``aes128gcm`` payload (JSON: ``type``, ``call-id``, ``caller``, ``uuid``,
``body``, the same keys as the APNs payload), else an empty body: a bare wake-up, as
RFC 8599 intends. Each push is one ``POST`` to the subscription URL (PROTOCOLS.md §6.1):

* ``TTL``: short for calls (``call_ttl_s``, 30 s: a late ring is useless), longer for
  missed-call and message notices (``message_ttl_s``);
* ``Urgency: high`` for calls, ``normal`` otherwise;
* ``Topic``: call and cancel pushes of one Call-ID share a topic (32 base64url
  characters of a hash of the Call-ID, so the Call-ID itself does not leak to the push
  service), so a cancel replaces a call push the service still holds (RFC 8030 §5.4);
* ``Authorization: vapid t=<JWT>, k=<key>`` (RFC 8292): an ES256 JWT whose ``aud`` is
  the subscription's origin, ``exp`` 12 h ahead, ``sub`` a ``mailto:``/``https:``
  contact. One JWT per origin is cached and re-minted an hour before it expires (never
  per request); a 401/403 answer drops it so the next push signs afresh.

The answer becomes a ``PushOutcome`` (``classify_webpush_response``): 201/202 delivered
(accepted by the push service), 404/410 invalid_target, 429 and 5xx retry (honouring
``Retry-After``), 413 and other 4xx error. Transport failures are retry.

Pure parts (no I/O; the ECDH key and salt are fresh unless injected):
``encrypt_aes128gcm``, ``vapid_header``, ``VapidTokens``, ``build_webpush_request`` and
``classify_webpush_response``; ``WebPushProvider`` is the asyncio shell around one
``httpx.AsyncClient``.

Secrets: a subscription URL is a bearer capability (anyone holding it can push), so it
is logged only as its origin plus a masked path (``mask_endpoint``); JWTs and the
``auth`` secret are never logged. A filter on the httpx/httpcore/hpack loggers masks URL
paths, ``:path`` header values and JWTs that those libraries would log. The URL comes
from a registering UA, so the provider only posts to ``https`` URLs on allowed push
service hosts (``DEFAULT_PUSH_HOSTS`` unless configured) and never follows redirects.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import ssl
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sipwake.errors import PushError
from sipwake.push.base import REFRESH_COLLAPSE_ID, PushOutcome, PushRequest, PushStatus
from sipwake.push.logmask import guard_library_loggers, mask_jwts
from sipwake.push.payload import parse_retry_after
from sipwake.push.seal import private_fields
from sipwake.sip.pushtarget import mask_token

__all__ = [
    "DEFAULT_PUSH_HOSTS",
    "MAX_PLAINTEXT",
    "MAX_VAPID_LIFETIME_S",
    "VAPID_LIFETIME_S",
    "WEBPUSH_BODY_LIMIT",
    "VapidTokens",
    "WebPushHttpRequest",
    "WebPushProvider",
    "b64url_decode",
    "b64url_encode",
    "build_webpush_request",
    "classify_webpush_response",
    "encrypt_aes128gcm",
    "endpoint_origin",
    "mask_endpoint",
    "topic_for",
    "vapid_header",
    "webpush_plaintext",
]

logger = logging.getLogger(__name__)

_PROVIDER = "webpush"

#: RFC 8030 §7.2: a push service need not accept more than 4096 bytes of body.
WEBPUSH_BODY_LIMIT = 4096
#: RFC 8291 §4: 4096 minus the 86-byte header, 1 delimiter byte and the 16-byte tag.
MAX_PLAINTEXT = 3993
#: RFC 8292 §2: ``exp`` at most 24 hours after the request.
MAX_VAPID_LIFETIME_S = 24 * 3600
#: Lifetime given to our VAPID JWTs (half the maximum, room for clock skew).
VAPID_LIFETIME_S = 12 * 3600
#: Re-mint a cached JWT when less than this is left of its lifetime.
VAPID_REFRESH_MARGIN_S = 3600

#: Push services of the browsers (host or parent domain): FCM (Chrome, Edge on Android),
#: Mozilla autopush, Apple (Safari), Windows Push Notification Services (Edge).
DEFAULT_PUSH_HOSTS: tuple[str, ...] = (
    "fcm.googleapis.com",
    "push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
)

_RECORD_SIZE = 4096
_CALLER_LIMIT = 256

# -- encodings -------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2, as Web Push and VAPID use it)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; ``ValueError`` for anything else."""
    text = text.strip().rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


# -- RFC 8291 / RFC 8188 encryption ----------------------------------------------------


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def encrypt_aes128gcm(
    plaintext: bytes,
    ua_public_b64: str,
    auth_b64: str,
    *,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
    record_size: int = _RECORD_SIZE,
) -> bytes:
    """The ``aes128gcm`` body of one push message (RFC 8291 §3.3, §3.4, §4; RFC 8188 §2).

    ``ua_public_b64``/``auth_b64`` are the subscription's ``p256dh`` and ``auth``
    (base64url). ``private_key`` (the application server's ECDH key) and ``salt`` are
    fresh per message unless given (a test passes RFC 8291 Appendix A's). The body is
    the header ``salt(16) | rs(4) | idlen(1) | keyid(65)`` followed by a single record:
    the plaintext, the padding delimiter 0x02, no padding, AES-128-GCM sealed.

    Raises ``ValueError`` for keys that are not a P-256 point / 16 bytes, a salt that is
    not 16 bytes, or a plaintext that cannot fit one record of a 4096-byte body.
    """
    try:
        ua_public_bytes = b64url_decode(ua_public_b64)
        auth_secret = b64url_decode(auth_b64)
    except ValueError as exc:
        raise ValueError("subscription keys must be base64url") from exc
    if len(auth_secret) != 16:
        raise ValueError(f"auth secret must be 16 bytes, got {len(auth_secret)}")
    try:
        # Validates the point: it must lie on P-256 (RFC 8291 §7).
        ua_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public_bytes)
    except ValueError as exc:
        raise ValueError("p256dh is not a valid P-256 public key") from exc
    if salt is None:
        salt = os.urandom(16)
    if len(salt) != 16:
        raise ValueError(f"salt must be 16 bytes, got {len(salt)}")
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT}")
    if record_size < len(plaintext) + 1 + 16 + 1:
        raise ValueError(f"record size {record_size} too small for {len(plaintext)} bytes")
    if private_key is None:
        private_key = ec.generate_private_key(ec.SECP256R1())
    as_public = _public_bytes(private_key.public_key())
    ua_public_bytes = _public_bytes(ua_public)

    ecdh_secret = private_key.exchange(ec.ECDH(), ua_public)
    # RFC 8291 §3.3: HKDF(salt=auth, IKM=ecdh, info=key_info, L=32), steps written out.
    prk_key = _hmac(auth_secret, ecdh_secret)
    key_info = b"WebPush: info\x00" + ua_public_bytes + as_public
    ikm = _hmac(prk_key, key_info + b"\x01")
    # RFC 8188 §2.2, §2.3: content encryption key and nonce.
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]

    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    header = salt + struct.pack("!IB", record_size, len(as_public)) + as_public
    return header + record


# -- RFC 8292 VAPID --------------------------------------------------------------------


def endpoint_origin(endpoint: str) -> str:
    """The RFC 6454 origin of an ``https`` subscription URL (``https://host[:port]``).

    Raises ``ValueError`` for anything but an absolute ``https`` URL with a host and no
    user information or fragment.
    """
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise ValueError("malformed URL") from exc
    if parts.scheme.lower() != "https":
        raise ValueError(f"scheme must be https, got {parts.scheme[:10]!r}")
    host = parts.hostname
    if not host or parts.username is not None or parts.password is not None:
        raise ValueError("URL needs a host and no user information")
    if parts.fragment or any(c.isspace() for c in endpoint):
        raise ValueError("URL must have no fragment or spaces")
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}" if port in (None, 443) else f"https://{shown}:{port}"


def mask_endpoint(endpoint: str) -> str:
    """A subscription URL as it may be logged: origin and a masked path."""
    try:
        origin = endpoint_origin(endpoint)
    except ValueError:
        return mask_token(endpoint)
    path = urlsplit(endpoint).path.lstrip("/")
    return f"{origin}/{mask_token(path)}"


def _check_subject(subject: str) -> None:
    if not subject.startswith(("mailto:", "https:")) or len(subject) < 8:
        raise ValueError(f"VAPID subject must be a mailto: or https: URI, got {subject[:80]!r}")


def vapid_header(
    endpoint: str, private_key: ec.EllipticCurvePrivateKey, subject: str, now: float
) -> str:
    """``Authorization`` value for a push to ``endpoint`` (RFC 8292 §2, §3).

    ``vapid t=<JWT>, k=<public key>``: the JWT is ES256 over ``aud`` (the endpoint's
    origin), ``exp`` (``now`` + 12 h; ``now`` is wall-clock UNIX seconds) and ``sub``
    (``mailto:`` or ``https:``); ``k`` is the uncompressed public key, base64url.
    """
    _check_subject(subject)
    claims = {
        "aud": endpoint_origin(endpoint),
        "exp": int(now) + VAPID_LIFETIME_S,
        "sub": subject,
    }
    token = jwt.encode(claims, private_key, algorithm="ES256", headers={"typ": "JWT"})
    return f"vapid t={token}, k={b64url_encode(_public_bytes(private_key.public_key()))}"


class VapidTokens:
    """The VAPID ``Authorization`` values of one key, cached per origin.

    A value is reused until less than an hour of its 12 h lifetime is left. At most
    ``max_origins`` are kept (origins come from registering UAs), oldest dropped first.
    Pure apart from signing: callers pass wall time.
    """

    def __init__(
        self, private_key: ec.EllipticCurvePrivateKey, subject: str, *, max_origins: int = 256
    ) -> None:
        _check_subject(subject)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise ValueError("VAPID key must be a P-256 (prime256v1) EC private key")
        self._private_key = private_key
        self._subject = subject
        self._max_origins = max_origins
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.minted = 0
        """How many JWTs have been signed (for metrics and tests)."""
        self.public_key = b64url_encode(_public_bytes(private_key.public_key()))
        """The application server key (``k``, RFC 8599 ``+sip.vapid``), base64url."""

    def __repr__(self) -> str:
        return f"VapidTokens(k={self.public_key!r}, origins={len(self._cache)})"

    def get(self, endpoint: str, wall_now: float) -> str:
        """The ``Authorization`` value for ``endpoint``, signed anew when missing or old."""
        origin = endpoint_origin(endpoint)
        cached = self._cache.get(origin)
        if cached is not None and wall_now < cached[1] - VAPID_REFRESH_MARGIN_S:
            return cached[0]
        value = vapid_header(endpoint, self._private_key, self._subject, wall_now)
        self.minted += 1
        self._cache[origin] = (value, int(wall_now) + VAPID_LIFETIME_S)
        self._cache.move_to_end(origin)
        while len(self._cache) > self._max_origins:
            self._cache.popitem(last=False)
        logger.info("webpush: signed VAPID JWT for %s", origin)
        return value

    def forget(self, endpoint: str) -> None:
        """Drop the cached value of ``endpoint``'s origin (the service refused it)."""
        with contextlib.suppress(ValueError):
            self._cache.pop(endpoint_origin(endpoint), None)


# -- RFC 8030 request and answer -------------------------------------------------------


#: RFC 8030 §5.3 Urgency by push kind: a call must wake the device now; a refresh may
#: wait for the device's next wake (``low``: a battery-saving browser may hold it).
_URGENCY = {"call": "high", "refresh": "low"}


def topic_for(call_id: str) -> str:
    """The RFC 8030 §5.4 ``Topic`` of a call's pushes: 32 base64url characters.

    A hash, so the push service does not learn the Call-ID; equal for the call push and
    its cancel, so the cancel replaces the call push while the service still holds it.
    """
    return b64url_encode(hashlib.sha256(call_id.encode()).digest()[:24])


def _payload(request: PushRequest) -> dict[str, Any]:
    if request.kind == "refresh":  # re-register (RFC 8599 §5.5): no call, nothing to seal
        return {"type": "refresh"}
    if request.private:
        # Only the kind; the details sealed for the device itself (sipwake.push.seal),
        # inside the RFC 8291 encryption to the browser.
        return {"type": request.kind, **private_fields(request)}
    caller = (request.caller or "")[:_CALLER_LIMIT] or None
    data: dict[str, Any] = {"type": request.kind, "call-id": request.call_id}
    if caller is not None:
        data["caller"] = caller
    if request.call_uuid is not None:
        data["uuid"] = request.call_uuid
    match request.kind:
        case "call":
            pass
        case "cancel":
            data["body"] = request.body or (
                f"Missed call from {caller}" if caller else "Missed call"
            )
        case "message":
            data["body"] = request.body or ""
    return data


def _encode(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def webpush_plaintext(request: PushRequest) -> bytes:
    """The JSON the app's service worker reads, its ``body`` cut to fit one record."""
    data = _payload(request)
    plaintext = _encode(data)
    text = data.get("body")
    if len(plaintext) > MAX_PLAINTEXT and isinstance(text, str) and text:
        raw = text.encode()
        keep = max(0, len(raw) - (len(plaintext) - MAX_PLAINTEXT) - len("…".encode()))
        while True:
            data["body"] = raw[:keep].decode(errors="ignore") + "…"
            plaintext = _encode(data)
            # JSON escapes can make the cut text longer than its bytes: cut more.
            if len(plaintext) <= MAX_PLAINTEXT or keep == 0:
                break
            keep = max(0, keep - (len(plaintext) - MAX_PLAINTEXT))
    if len(plaintext) > MAX_PLAINTEXT:
        raise PushError(
            _PROVIDER, f"PayloadTooLarge: {len(plaintext)} bytes > {MAX_PLAINTEXT}", retryable=False
        )
    return plaintext


@dataclass(frozen=True, slots=True, kw_only=True)
class WebPushHttpRequest:
    """One push message request: the subscription URL, headers and (encrypted) body."""

    url: str
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return (
            f"WebPushHttpRequest(url={mask_endpoint(self.url)!r}, "
            f"ttl={self.headers.get('ttl')!r}, urgency={self.headers.get('urgency')!r}, "
            f"topic={self.headers.get('topic')!r}, body_bytes={len(self.body)})"
        )


def build_webpush_request(
    request: PushRequest,
    *,
    authorization: str,
    call_ttl_s: int = 30,
    message_ttl_s: int = 3600,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> WebPushHttpRequest:
    """The RFC 8030 §5 request for ``request`` (module docstring for the rules).

    ``authorization`` is the VAPID value (``VapidTokens.get``). With subscription keys
    on the target the JSON payload is encrypted (``private_key``/``salt`` as in
    ``encrypt_aes128gcm``); without, the body is empty. Raises ``PushError`` (not
    retryable) for a URL that is not https (``BadEndpoint``), bad subscription keys
    (``BadSubscriptionKeys``) or a payload that cannot fit (``PayloadTooLarge``).
    """
    endpoint = request.target.prid
    try:
        endpoint_origin(endpoint)
    except ValueError as exc:
        raise PushError(
            _PROVIDER, f"BadEndpoint: {exc}: {mask_endpoint(endpoint)!r}", retryable=False
        ) from None
    ttl = call_ttl_s if request.kind == "call" else message_ttl_s
    headers: dict[str, str] = {
        "ttl": str(max(0, int(ttl))),
        "urgency": _URGENCY.get(request.kind, "normal"),
        "authorization": authorization,
    }
    if request.kind in ("call", "cancel"):
        headers["topic"] = topic_for(request.call_id)
    elif request.kind == "refresh":
        headers["topic"] = REFRESH_COLLAPSE_ID
    body = b""
    target = request.target
    if target.p256dh is not None and target.auth is not None:
        plaintext = webpush_plaintext(request)
        try:
            body = encrypt_aes128gcm(
                plaintext, target.p256dh, target.auth, private_key=private_key, salt=salt
            )
        except ValueError as exc:
            raise PushError(_PROVIDER, f"BadSubscriptionKeys: {exc}", retryable=False) from None
        headers["content-encoding"] = "aes128gcm"
        headers["content-type"] = "application/octet-stream"
    return WebPushHttpRequest(url=endpoint, headers=headers, body=body)


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Gone",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
}


def _reason(status: int, body: bytes) -> str:
    """A short reason: the service's own text when it gave one, else the status name."""
    name = _REASONS.get(status, f"HTTP{status}")
    text = ""
    try:
        document = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict):
        # Mozilla autopush: {"code", "errno", "error", "message"}; others: {"reason"}.
        for key in ("message", "reason", "error"):
            value = document.get(key)
            if isinstance(value, str) and value:
                text = value
                break
    elif body:
        text = body.decode(errors="replace")
    text = " ".join(text.split())[:80]
    return f"{name}: {text}" if text else name


def classify_webpush_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    latency: float = 0.0,
    wall_now: float | None = None,
) -> PushOutcome:
    """A ``PushOutcome`` for a push service's answer (RFC 8030 §5, §8.4; PROTOCOLS.md §6.1).

    201/202 → delivered; 404/410 → invalid_target; 429 and 5xx → retry (``Retry-After``
    honoured); 413 and other 4xx (400, 401, 403…) → error with the service's reason.
    ``headers`` keys are lower case.
    """
    result: PushStatus
    if status in (201, 202):
        result = "delivered"
    elif status in (404, 410):
        result = "invalid_target"
    elif status == 429 or 500 <= status <= 599:
        result = "retry"
    else:
        result = "error"
    return PushOutcome(
        status=result,
        provider=_PROVIDER,
        reason=None if result == "delivered" else _reason(status, body),
        http_status=status,
        retry_after=(
            parse_retry_after(headers.get("retry-after"), wall_now=wall_now)
            if result == "retry"
            else None
        ),
        latency=latency,
    )


def _host_allowed(endpoint: str, allowed: Collection[str] | None) -> bool:
    if allowed is None:
        return True
    host = (urlsplit(endpoint).hostname or "").lower().rstrip(".")
    return any(host == entry or host.endswith("." + entry) for entry in allowed)


# -- log hygiene -----------------------------------------------------------------------

_URL_RE = re.compile(r"(https://[^/\s'\"<>]+)/([^\s'\"<>]+)")
_PATH_HEADER_RE = re.compile(r"(:path['\"]?\s*[=,:]\s*b?['\"])([^'\"]+)")


def _mask_secrets(text: str) -> str:
    """URL paths (subscription capabilities), ``:path`` headers and JWTs."""
    text = _URL_RE.sub(lambda m: f"{m.group(1)}/{mask_token(m.group(2))}", text)
    text = _PATH_HEADER_RE.sub(lambda m: m.group(1) + mask_token(m.group(2)), text)
    return mask_jwts(text)


# -- the provider ----------------------------------------------------------------------


class WebPushProvider:
    """Sends Web Push messages to browser push services (a ``PushProvider``)."""

    def __init__(
        self,
        vapid_private_key_pem: str | bytes,
        subject: str,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        call_ttl_s: int = 30,
        message_ttl_s: int = 3600,
        allowed_hosts: Collection[str] | None = DEFAULT_PUSH_HOSTS,
        http2: bool = True,
    ) -> None:
        """``vapid_private_key_pem``: the P-256 VAPID key (PEM); ``subject``: a ``mailto:``
        or ``https:`` contact; ``clock`` gives wall seconds (JWT ``exp``), ``timer``
        monotonic seconds (latency); ``ssl_context`` overrides the system trust store;
        ``allowed_hosts`` lists push service hosts (a host or its subdomains) that may be
        posted to, ``None`` for any. Raises ``ValueError`` for an unusable key or subject.
        """
        pem = (
            vapid_private_key_pem.encode()
            if isinstance(vapid_private_key_pem, str)
            else vapid_private_key_pem
        )
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            # Never echo the key: name only the failure's type.
            raise ValueError(f"VAPID key is not a PEM private key: {type(exc).__name__}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("VAPID key must be a P-256 (prime256v1) EC private key")
        self._vapid = VapidTokens(key, subject)
        self._clock = clock
        self._timer = timer
        self._call_ttl_s = call_ttl_s
        self._message_ttl_s = message_ttl_s
        self._allowed_hosts = (
            None if allowed_hosts is None else tuple(h.lower().rstrip(".") for h in allowed_hosts)
        )
        guard_library_loggers("webpush", _mask_secrets)
        self._client = httpx.AsyncClient(
            http1=True,
            http2=http2,
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"WebPushProvider(k={self._vapid.public_key!r}, hosts={self._allowed_hosts!r})"

    @property
    def public_key(self) -> str:
        """The VAPID application server key, base64url (RFC 8599 ``+sip.vapid``)."""
        return self._vapid.public_key

    @property
    def tokens_minted(self) -> int:
        return self._vapid.minted

    async def send(self, request: PushRequest) -> PushOutcome:
        endpoint = request.target.prid
        try:
            outcome = await self._send_once(request)
        except PushError as exc:
            outcome = PushOutcome(
                status="invalid_target" if exc.reason.startswith("BadEndpoint") else "error",
                provider=_PROVIDER,
                reason=exc.reason,
            )
        if outcome.http_status in (401, 403):
            # The service refused our JWT: sign a fresh one next time.
            self._vapid.forget(endpoint)
        logger.info(
            "webpush: %s push to %s: %s%s%s (%.0f ms)",
            request.kind,
            mask_endpoint(endpoint),
            outcome.status,
            f" {outcome.http_status}" if outcome.http_status is not None else "",
            f" {outcome.reason}" if outcome.reason else "",
            outcome.latency * 1000,
        )
        return outcome

    async def _send_once(self, request: PushRequest) -> PushOutcome:
        endpoint = request.target.prid
        try:
            endpoint_origin(endpoint)
        except ValueError as exc:
            raise PushError(
                _PROVIDER, f"BadEndpoint: {exc}: {mask_endpoint(endpoint)!r}", retryable=False
            ) from None
        if not _host_allowed(endpoint, self._allowed_hosts):
            raise PushError(
                _PROVIDER,
                f"EndpointNotAllowed: {mask_endpoint(endpoint)!r} is not a configured push host",
                retryable=False,
            )
        wall_now = self._clock()
        authorization = self._vapid.get(endpoint, wall_now)
        built = build_webpush_request(
            request,
            authorization=authorization,
            call_ttl_s=self._call_ttl_s,
            message_ttl_s=self._message_ttl_s,
        )
        started = self._timer()
        try:
            response = await self._client.post(built.url, headers=built.headers, content=built.body)
        except httpx.TimeoutException as exc:
            return self._unanswered(f"timeout: {type(exc).__name__}", started)
        except httpx.TransportError as exc:
            return self._unanswered(f"transport: {type(exc).__name__}", started)
        return classify_webpush_response(
            response.status_code,
            response.content,
            response.headers,
            latency=self._timer() - started,
            wall_now=wall_now,
        )

    def _unanswered(self, reason: str, started: float) -> PushOutcome:
        """No answer from the push service (timeout, connection lost): retry later."""
        return PushOutcome(
            status="retry", provider=_PROVIDER, reason=reason, latency=self._timer() - started
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> WebPushProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
