"""FCM HTTP v1 request builders and response classifiers: pure functions, no I/O.

Two exchanges make one FCM push (PROTOCOLS.md §5):

* the OAuth 2.0 service-account flow: ``build_token_request`` signs an RS256 JWT
  assertion with the service account's key and form-encodes it for the token endpoint;
  ``parse_token_response`` reads the access token and when to refresh it;
* the send itself: ``build_fcm_request`` turns a ``PushRequest`` into the JSON body of
  ``POST /v1/projects/{project}/messages:send``; ``classify_fcm_response`` turns FCM's
  answer (status, Google error JSON, headers) into a ``PushOutcome``.

Every push is a data message, so the app's messaging service runs and decides what to
show: ``call`` at ``HIGH`` priority with a TTL of the ring window (a late call push is
worthless), ``cancel`` (missed call) at ``HIGH`` too so a ringing screen stops at once,
``message`` at ``NORMAL``. All data values are strings, as FCM requires. A private
push (``calls.encrypt_push``) carries only ``type`` and the sealed details ``enc``, and
no ``collapse_key``. The ``authorization`` header is left to the caller, which owns the
access token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sipwake.errors import ConfigError, PushError
from sipwake.push.base import REFRESH_COLLAPSE_ID, PushOutcome, PushRequest, PushStatus
from sipwake.push.payload import parse_retry_after
from sipwake.push.seal import private_fields
from sipwake.sip.pushtarget import mask_token

__all__ = [
    "FCM_DATA_LIMIT",
    "FCM_ERROR_TYPE",
    "FCM_HOST",
    "FCM_SCOPE",
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER_GRANT",
    "AccessToken",
    "FcmHttpRequest",
    "FcmSettings",
    "ServiceAccount",
    "TokenHttpRequest",
    "build_fcm_request",
    "build_token_request",
    "classify_fcm_response",
    "data_size",
    "fcm_error_reason",
    "outcome_for_build_error",
    "parse_token_response",
    "wants_new_access_token",
]

FCM_HOST = "https://fcm.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
#: The OAuth scope that lets a service account send FCM messages.
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: RFC 7523 §2.1 grant type of the JWT assertion.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: ``@type`` of the error detail carrying FCM's own ``errorCode``.
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#: PROTOCOLS.md §5: maximum size of a message's data, in bytes (here: its compact JSON).
FCM_DATA_LIMIT = 4096
#: PROTOCOLS.md §5: Google refuses assertions valid for longer than an hour.
ASSERTION_LIFETIME_S = 3600
#: protobuf Duration bound for ``android.ttl`` (four weeks).
MAX_TTL_S = 2_419_200

_PROVIDER = "fcm"
_CALLER_LIMIT = 256
_COLLAPSE_LIMIT = 64
#: FCM registration tokens: base64url-ish text with ``:`` (e.g. ``abc:APA91b…``).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_:.\-]{8,1024}")
#: Google project ids (``my-app-1234``), also domain-scoped ones (``example.com:app``).
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9.:\-]{0,99}", re.IGNORECASE)
_REQUIRED_ACCOUNT_FIELDS = ("project_id", "private_key_id", "private_key", "client_email")

FcmPriority = Literal["HIGH", "NORMAL"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FcmSettings:
    """How long FCM may hold each kind of push for an offline device."""

    call_ttl_s: int = 30
    """TTL of ``call`` pushes: the ring window; a call push delivered later is useless."""
    alert_ttl_s: int = 3600
    """TTL of ``cancel`` (missed call) and ``message`` pushes."""

    def __post_init__(self) -> None:
        for name in ("call_ttl_s", "alert_ttl_s"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_TTL_S:
                raise ValueError(f"FcmSettings.{name} must be in [0, {MAX_TTL_S}], got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccount:
    """A Google service account, as read from its JSON key file (never shown in full)."""

    project_id: str
    private_key_id: str
    client_email: str
    token_uri: str
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"ServiceAccount(project_id={self.project_id!r}, "
            f"client_email={self.client_email!r}, private_key_id="
            f"{mask_token(self.private_key_id)!r}, token_uri={self.token_uri!r})"
        )

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, source: str = "<service account>") -> Self:
        """Read the fields sipwake needs; ``source`` names the file in errors.

        Raises ``ConfigError`` naming the key that is missing or unusable; the private
        key itself never appears in a message.
        """
        kind = doc.get("type", "service_account")
        if kind != "service_account":
            raise ConfigError(
                f"expected 'service_account', got {str(kind)[:40]!r}", path=source, key="type"
            )
        values: dict[str, str] = {}
        for key in (*_REQUIRED_ACCOUNT_FIELDS, "token_uri"):
            value = doc.get(key, GOOGLE_TOKEN_URI if key == "token_uri" else None)
            if not isinstance(value, str) or not value:
                raise ConfigError("missing or not a string", path=source, key=key)
            values[key] = value
        if not _PROJECT_RE.fullmatch(values["project_id"]):
            raise ConfigError(
                f"not a project id: {values['project_id'][:40]!r}", path=source, key="project_id"
            )
        if not values["token_uri"].startswith(("https://", "http://")):
            raise ConfigError("expected an http(s) URL", path=source, key="token_uri")
        try:
            loaded = serialization.load_pem_private_key(values["private_key"].encode(), None)
        except (ValueError, TypeError) as exc:
            # Never echo the key: name only the failure's type.
            raise ConfigError(
                f"not an unencrypted PEM private key ({type(exc).__name__})",
                path=source,
                key="private_key",
            ) from None
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ConfigError(
                f"expected an RSA key, got {type(loaded).__name__}", path=source, key="private_key"
            )
        return cls(
            project_id=values["project_id"],
            private_key_id=values["private_key_id"],
            client_email=values["client_email"],
            token_uri=values["token_uri"],
            private_key=loaded,
        )


# -- OAuth 2.0 service-account flow --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenHttpRequest:
    """One POST to the OAuth token endpoint (the body holds a signed assertion)."""

    url: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessToken:
    """An OAuth access token with its lifetime, in wall-clock UNIX seconds."""

    value: str = field(repr=False)
    issued_at: float
    """When it was asked for (the request's wall time, a little before Google made it)."""
    expires_at: float
    refresh_at: float
    """When to ask for the next one: ``refresh_margin_s`` before expiry, but never
    before half of the lifetime has passed (a short-lived token must not cause a fetch
    per request)."""

    def __repr__(self) -> str:
        return (
            f"AccessToken(value={mask_token(self.value)!r}, issued_at={self.issued_at}, "
            f"expires_at={self.expires_at}, refresh_at={self.refresh_at})"
        )


def build_token_request(
    account: ServiceAccount, *, wall_now: float, token_uri: str | None = None
) -> TokenHttpRequest:
    """The token request of Google's "OAuth 2.0 for Server to Server Applications".

    The assertion is an RS256 JWT (header ``kid`` = ``private_key_id``) with ``iss``
    (the client email), ``scope`` (firebase.messaging), ``aud`` (the token endpoint),
    ``iat`` and ``exp`` one hour later. ``token_uri`` overrides the account's endpoint
    (and so the audience).
    """
    url = token_uri or account.token_uri
    issued_at = int(wall_now)
    claims = {
        "iss": account.client_email,
        "scope": FCM_SCOPE,
        "aud": url,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFETIME_S,
    }
    try:
        assertion = jwt.encode(
            claims,
            account.private_key,
            algorithm="RS256",
            headers={"kid": account.private_key_id},
        )
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise PushError(
            _PROVIDER, f"cannot sign token assertion: {type(exc).__name__}", retryable=False
        ) from None
    body = urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": assertion}).encode()
    return TokenHttpRequest(
        url=url,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        body=body,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def parse_token_response(
    status: int, body: bytes, *, wall_now: float, refresh_margin_s: float = 300.0
) -> AccessToken:
    """The access token in the token endpoint's answer, asked for at ``wall_now``.

    Raises ``PushError`` otherwise: retryable for 408, 429 and 5xx, not for a refusal
    (``invalid_grant``: bad key, clock skew, disabled account) or a malformed answer.
    """
    doc = _json_object(body)
    if status != 200:
        error = doc.get("error") if doc is not None else None
        code = error if isinstance(error, str) else None
        if isinstance(error, dict):  # some Google front ends answer the RPC error shape
            code = str(error.get("status") or "") or None
        retryable = status in (408, 429) or status >= 500
        raise PushError(
            _PROVIDER,
            f"oauth: token endpoint answered {status} {(code or '')[:40]}".rstrip(),
            retryable=retryable,
        )
    value = doc.get("access_token") if doc is not None else None
    lifetime = doc.get("expires_in") if doc is not None else None
    token_type = doc.get("token_type", "Bearer") if doc is not None else None
    if (
        not isinstance(value, str)
        or not value
        or not isinstance(lifetime, int | float)
        or isinstance(lifetime, bool)
        or lifetime <= 0
        or not isinstance(token_type, str)
        or token_type.lower() != "bearer"
    ):
        raise PushError(
            _PROVIDER,
            "oauth: token endpoint answer lacks access_token, expires_in > 0 or token_type Bearer",
            retryable=False,
        )
    return AccessToken(
        value=value,
        issued_at=wall_now,
        expires_at=wall_now + lifetime,
        refresh_at=wall_now + max(lifetime - refresh_margin_s, lifetime / 2),
    )


# -- messages:send -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FcmHttpRequest:
    """One FCM v1 send request, without its ``authorization`` header."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    project: str
    priority: FcmPriority
    ttl_s: int

    def __repr__(self) -> str:
        return (
            f"FcmHttpRequest(method={self.method!r}, path={self.path!r}, "
            f"priority={self.priority!r}, ttl_s={self.ttl_s}, body_bytes={len(self.body)})"
        )


def _encode(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def data_size(data: Mapping[str, Any]) -> int:
    """The size FCM's data limit is checked against here: the data's compact JSON.

    Slightly more than the sum of keys and values that FCM counts, so a message this
    accepts is never refused as too big.
    """
    return len(_encode(data))


def _data(request: PushRequest) -> dict[str, str]:
    if request.kind == "refresh":  # re-register (RFC 8599 §5.5): no call, nothing to seal
        return {"type": "refresh"}
    if request.private:
        # Only the kind in clear; the details sealed for the device (sipwake.push.seal).
        return {"type": request.kind, **private_fields(request)}
    caller = (request.caller or "")[:_CALLER_LIMIT] or None
    data: dict[str, str] = {"type": request.kind, "call-id": request.call_id}
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


def _fit(data: dict[str, str]) -> dict[str, str]:
    """``data`` cut to ``FCM_DATA_LIMIT`` by shortening ``body``; refused if that fails."""
    text = data.get("body", "")
    if data_size(data) > FCM_DATA_LIMIT and text:
        # The longest prefix that fits, marked as cut; JSON escapes make sizes uneven,
        # so search for it rather than compute it.
        fits, too_long = 0, len(text)
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            data["body"] = text[:middle] + "…"
            if data_size(data) <= FCM_DATA_LIMIT:
                fits = middle
            else:
                too_long = middle
        data["body"] = text[:fits] + "…"
    size = data_size(data)
    if size > FCM_DATA_LIMIT:
        raise PushError(
            _PROVIDER, f"PayloadTooLarge: data {size} bytes > {FCM_DATA_LIMIT}", retryable=False
        )
    return data


def build_fcm_request(
    request: PushRequest, settings: FcmSettings, *, default_project: str
) -> FcmHttpRequest:
    """The FCM v1 request for ``request`` (PROTOCOLS.md §5).

    The project is the target's ``pn-param`` (RFC 8599 §10: the FCM project id) or
    ``default_project`` (the service account's). Raises ``PushError(retryable=False)``
    when the registration token or project id is malformed (reasons ``BadToken``,
    ``BadProject``: the target is unusable) or the data cannot fit (``PayloadTooLarge``).
    """
    token = request.target.prid
    if not _TOKEN_RE.fullmatch(token):
        raise PushError(
            _PROVIDER,
            f"BadToken: not an FCM registration token: {mask_token(token)!r}",
            retryable=False,
        )
    project = request.target.param or default_project
    if not _PROJECT_RE.fullmatch(project):
        raise PushError(_PROVIDER, f"BadProject: {project[:40]!r}", retryable=False)
    data = _fit(_data(request))
    # A refresh is a normal-priority data message: Android may defer it in Doze, and
    # the binding's remaining lifetime leaves room for that.
    priority: FcmPriority = "NORMAL" if request.kind in ("message", "refresh") else "HIGH"
    ttl_s = settings.call_ttl_s if request.kind == "call" else settings.alert_ttl_s
    android = {"priority": priority, "ttl": f"{ttl_s}s"}
    if request.kind == "refresh":
        android["collapse_key"] = REFRESH_COLLAPSE_ID
    elif not request.private:
        android["collapse_key"] = request.call_id.encode()[:_COLLAPSE_LIMIT].decode(errors="ignore")
    body = _encode({"message": {"token": token, "data": data, "android": android}})
    return FcmHttpRequest(
        method="POST",
        path=f"/v1/projects/{project}/messages:send",
        headers={"content-type": "application/json; charset=UTF-8"},
        body=body,
        project=project,
        priority=priority,
        ttl_s=ttl_s,
    )


def outcome_for_build_error(error: PushError) -> PushOutcome:
    """The outcome of a push the builder refused: a bad token or project dooms the target."""
    bad_target = error.reason.startswith(("BadToken", "BadProject"))
    return PushOutcome(
        status="invalid_target" if bad_target else "error",
        provider=_PROVIDER,
        reason=error.reason,
    )


def fcm_error_reason(body: bytes) -> tuple[str | None, bool]:
    """(FCM ``errorCode`` or Google ``error.status``, whether the error is about the token).

    The reason is the ``errorCode`` of the ``FcmError`` detail when there is one, else
    the RPC ``status`` (``UNAUTHENTICATED``, ``PERMISSION_DENIED``…). "About the token"
    means a ``BadRequest`` field violation on ``message.token`` or a message naming the
    registration token.
    """
    doc = _json_object(body)
    error = doc.get("error") if doc is not None else None
    if not isinstance(error, dict):
        return None, False
    reason: str | None = None
    about_token = False
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE and isinstance(detail.get("errorCode"), str):
            reason = reason or detail["errorCode"][:80]
        violations = detail.get("fieldViolations")
        for violation in violations if isinstance(violations, list) else ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                about_token = True
    status = error.get("status")
    if reason is None and isinstance(status, str):
        reason = status[:80]
    message = error.get("message")
    if isinstance(message, str) and "registration token" in message.lower():
        about_token = True
    return reason, about_token


_RETRY_STATUSES = frozenset({500, 502, 503, 504})


def classify_fcm_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    latency: float = 0.0,
    wall_now: float | None = None,
) -> PushOutcome:
    """A ``PushOutcome`` for FCM's answer (PROTOCOLS.md §5).

    200 → delivered; 404 ``UNREGISTERED`` and 400 ``INVALID_ARGUMENT`` about the token →
    invalid_target; 403 ``SENDER_ID_MISMATCH`` → error (the token belongs to another
    Firebase project: our ``project_id`` is wrong, the token is kept); 429 (``QUOTA_EXCEEDED``) and
    500/502/503/504 (``INTERNAL``, ``UNAVAILABLE``) → retry, honouring ``Retry-After``;
    anything else (other 400s, 401, 403) → error (the provider refreshes its access token
    on 401 ``UNAUTHENTICATED`` first). ``headers`` keys are lower case.
    """
    reason, about_token = fcm_error_reason(body) if status != 200 else (None, False)
    result: PushStatus
    if status == 200:
        result = "delivered"
    elif (status == 404 and reason == "UNREGISTERED") or (
        status == 400 and reason == "INVALID_ARGUMENT" and about_token
    ):
        result = "invalid_target"
    elif status == 429 or status in _RETRY_STATUSES:
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
        latency=latency,
    )


def wants_new_access_token(outcome: PushOutcome) -> bool:
    """Whether FCM refused our access token (401 ``UNAUTHENTICATED``): fetch a new one.

    ``THIRD_PARTY_AUTH_ERROR`` (also 401) is about the APNs certificate or Web Push key
    held by Firebase, which a new access token cannot fix: refreshing on it would cost a
    token fetch per push.
    """
    return outcome.http_status == 401 and outcome.reason in (None, "UNAUTHENTICATED")
