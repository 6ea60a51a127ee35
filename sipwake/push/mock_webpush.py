"""A mock Web Push service on loopback: HTTP/2 over TLS, for integration tests.

It hands out subscriptions (``subscribe`` → endpoint URL ``<base_url>/push/<id>``; over
HTTP, RFC 8030 §4: ``POST /subscribe`` → ``201 Created`` with the subscription in
``Location`` and the push resource, the endpoint, in ``Link: <…>;
rel="urn:ietf:params:push"``) and checks each push message as a real push service does
(PROTOCOLS.md §6):

* RFC 8030 §5.2 to §5.4: ``TTL`` present and a number (else 400), ``Urgency`` one of
  ``very-low``/``low``/``normal``/``high`` (else 400), ``Topic`` at most 32 base64url
  characters (else 400), body at most 4096 bytes (else 413); unknown subscription 404.
* RFC 8291 §4: a non-empty body needs ``Content-Encoding: aes128gcm`` and a well-formed
  header (65-byte ``keyid`` starting 0x04, a record size that holds the record), else 400.
* RFC 8292: ``Authorization: vapid t=<JWT>, k=<key>``: the JWT must verify (ES256) with
  the ``k`` key, ``aud`` must be this service's origin and ``exp`` in the future and at
  most 24 h ahead (else 403). A subscription created with ``restricted_key`` (the
  browser's ``applicationServerKey``) needs VAPID (401 when missing) with that very key
  (403 otherwise); an unrestricted one accepts a push without ``Authorization``.

Accepted messages are recorded with their headers and raw (still encrypted) body and
answered ``201 Created`` with a ``Location``. Faults are injected on demand: 410 Gone for
chosen subscriptions (``expire``), queued answers such as 429 with ``Retry-After`` or
503 (``fail_next``), added ``latency``. Error answers carry a JSON body shaped like
Mozilla autopush's (``code``, ``errno``, ``error``, ``message``).

    async with MockWebPush(tmp_path) as service:
        endpoint = service.subscribe(restricted_key=provider.public_key)

Test tooling, not production code.
"""

from __future__ import annotations

import json
import re
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.mock import _H2TlsMock, _Reply
from sipwake.push.webpush import (
    MAX_VAPID_LIFETIME_S,
    WEBPUSH_BODY_LIMIT,
    b64url_decode,
    b64url_encode,
)

__all__ = ["MockWebPush", "RecordedMessage", "WebPushAnswer"]

_TOPIC_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedMessage:
    """One push message the mock accepted."""

    subscription: str
    """The subscription id (last path segment of the endpoint)."""
    headers: Mapping[str, str]
    """Request headers, lower case, pseudo-headers and ``authorization`` included."""
    body: bytes
    """The body as received: the ``aes128gcm`` ciphertext, or empty."""
    jwt: str | None
    """The verified VAPID JWT, when the push carried one."""
    connection: int
    """Which TLS connection (1, 2, …) carried the push."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebPushAnswer:
    """An answer to give instead of the normal one (a fault)."""

    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


class MockWebPush(_H2TlsMock):
    """A loopback Web Push service; an async context manager that starts and stops it."""

    _stem = "mock-webpush"

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
    ) -> None:
        """``directory`` receives the TLS certificate; ``clock`` (wall seconds) judges
        VAPID ``exp``."""
        super().__init__(directory, host=host)
        self._clock = clock
        self._subscriptions: dict[str, bytes | None] = {}
        self.messages: list[RecordedMessage] = []
        self.rejected: list[tuple[int, str]] = []
        """(status, message) of every refused request, in order."""
        self.expired: set[str] = set()
        """Subscription ids answered 410 Gone."""
        self.faults: deque[WebPushAnswer] = deque()
        """Answers given to the next requests that pass every check, one each."""

    # -- subscriptions and faults ------------------------------------------------------

    def subscribe(self, restricted_key: str | None = None) -> str:
        """A new subscription's endpoint URL (RFC 8030 §4).

        ``restricted_key`` (base64url uncompressed P-256 key, the browser's
        ``applicationServerKey``) restricts it to pushes signed with that VAPID key.
        """
        if not self.base_url:
            raise RuntimeError("MockWebPush is not started")
        key = None if restricted_key is None else b64url_decode(restricted_key)
        if key is not None and (len(key) != 65 or key[0] != 0x04):
            raise ValueError("restricted_key must be an uncompressed P-256 key, base64url")
        subscription = secrets.token_urlsafe(32)
        self._subscriptions[subscription] = key
        return f"{self.base_url}/push/{subscription}"

    def expire(self, endpoint: str) -> None:
        """Answer 410 Gone for ``endpoint``'s subscription from now on."""
        self.expired.add(endpoint.rsplit("/", 1)[-1])

    def fail_next(
        self, status: int, message: str = "", *, retry_after: int | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests that pass every check with ``status``."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        for _ in range(times):
            self.faults.append(WebPushAnswer(status=status, message=message, headers=headers))

    @property
    def jwts(self) -> list[str]:
        """Distinct VAPID JWTs seen on accepted messages, in first-use order."""
        return list(dict.fromkeys(m.jwt for m in self.messages if m.jwt is not None))

    # -- HTTP/2 ------------------------------------------------------------------------

    def _answer(self, headers: Mapping[str, str], body: bytes, number: int) -> _Reply:
        if headers.get(":path") == "/subscribe" and headers.get(":method") == "POST":
            # RFC 8030 §4: a new subscription, unrestricted (no applicationServerKey).
            endpoint = self.subscribe()
            subscription = endpoint.rsplit("/", 1)[-1]
            return (
                201,
                [
                    ("location", f"{self.base_url}/subscription/{subscription}"),
                    ("link", f'<{endpoint}>; rel="urn:ietf:params:push"'),
                ],
                b"",
            )
        status, message, extra = self._judge(headers, body, number)
        response = list(extra.items())
        if status < 300:
            return status, response, b""
        self.rejected.append((status, message))
        phrase = _PHRASES.get(status, "Error")
        answer = json.dumps(
            {"code": status, "errno": 999, "error": phrase, "message": message}
        ).encode()
        return status, [*response, ("content-type", "application/json")], answer

    # -- the checks --------------------------------------------------------------------

    def _judge(
        self, headers: Mapping[str, str], body: bytes, number: int
    ) -> tuple[int, str, dict[str, str]]:
        """(status, message, extra headers) for one request, as a push service answers."""
        if headers.get(":method") != "POST":
            return 405, "push messages are POSTed", {}
        path = headers.get(":path", "")
        subscription = path.removeprefix("/push/")
        if not path.startswith("/push/") or subscription not in self._subscriptions:
            return 404, "no such subscription", {}
        ttl = headers.get("ttl")
        if ttl is None or not ttl.strip().isdigit():
            return 400, "TTL header missing or not a number", {}
        urgency = headers.get("urgency")
        if urgency is not None and urgency.strip() not in _URGENCIES:
            return 400, "Urgency must be very-low, low, normal or high", {}
        topic = headers.get("topic")
        if topic is not None and not _TOPIC_RE.fullmatch(topic):
            return 400, "Topic must be at most 32 base64url characters", {}
        if len(body) > WEBPUSH_BODY_LIMIT:
            return 413, f"body of {len(body)} bytes exceeds {WEBPUSH_BODY_LIMIT}", {}
        if body:
            refusal = _check_encrypted(headers.get("content-encoding"), body)
            if refusal is not None:
                return 400, refusal, {}
        status, message, token = self._check_vapid(
            headers.get("authorization"), self._subscriptions[subscription]
        )
        if status:
            return status, message, {}
        if self.faults:
            fault = self.faults.popleft()
            return fault.status, fault.message, dict(fault.headers)
        if subscription in self.expired:
            return 410, "subscription expired", {}
        self.messages.append(
            RecordedMessage(
                subscription=subscription,
                headers=dict(headers),
                body=body,
                jwt=token,
                connection=number,
            )
        )
        location = f"{self.base_url}/message/{secrets.token_urlsafe(12)}"
        return 201, "", {"location": location, "ttl": ttl.strip()}

    def _check_vapid(
        self, authorization: str | None, restricted: bytes | None
    ) -> tuple[int, str, str | None]:
        """(0, "", jwt) for acceptable VAPID (or none where allowed), else the refusal."""
        if authorization is None:
            if restricted is not None:
                return 401, "restricted subscription: VAPID authorization required", None
            return 0, "", None
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() != "vapid":
            return 401, "authorization scheme must be vapid", None
        params: dict[str, str] = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        token, key_text = params.get("t"), params.get("k")
        if not token or not key_text:
            return 401, "vapid authorization needs t= and k=", None
        try:
            key_bytes = b64url_decode(key_text)
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
        except ValueError:
            return 403, "k is not a P-256 public key", None
        if restricted is not None and key_bytes != restricted:
            return 403, "VAPID key does not match the restricted subscription", None
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_aud": False, "require": ["aud", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return 403, f"invalid VAPID JWT: {type(exc).__name__}", None
        if claims.get("aud") != self.base_url:
            return 403, "VAPID aud is not this push service's origin", None
        expires = claims.get("exp")
        now = self._clock()
        if not isinstance(expires, int) or expires <= now:
            return 403, "VAPID JWT expired", None
        if expires > now + MAX_VAPID_LIFETIME_S:
            return 403, "VAPID exp more than 24 hours ahead", None
        return 0, "", token

    @property
    def restricted_keys(self) -> dict[str, str | None]:
        """Subscription id → its restricting key (base64url), for assertions."""
        return {
            sub: None if key is None else b64url_encode(key)
            for sub, key in self._subscriptions.items()
        }


def _check_encrypted(encoding: str | None, body: bytes) -> str | None:
    """None when ``body`` looks like one RFC 8291 ``aes128gcm`` message, else why not."""
    if encoding is None or encoding.strip().lower() != "aes128gcm":
        return "a payload needs Content-Encoding: aes128gcm"
    if len(body) < 86 + 17:
        return "aes128gcm body shorter than header and one record"
    record_size, id_length = struct.unpack("!IB", body[16:21])
    if id_length != 65 or body[21] != 0x04:
        return "aes128gcm keyid must be a 65-byte uncompressed P-256 key"
    if record_size < 18 or len(body) - 86 > record_size:
        return "aes128gcm record size does not hold the single record"
    return None
