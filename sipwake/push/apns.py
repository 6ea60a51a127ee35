"""APNs HTTP/2 client with provider-token (JWT) authentication (PROTOCOLS.md §3).

Theory of operation: one ``httpx.AsyncClient`` per provider holds one HTTP/2 connection
per origin, so concurrent ``send`` calls become concurrent streams. The provider token
is an ES256 JWT (header ``kid``, claims ``iss``/``iat``) minted from the ``.p8`` key and
shared by every request; it is re-minted when older than ``refresh_after_s`` (50 min by
default, inside Apple's 20 to 60 min window, §3.3), never per request. Wall time for ``iat``
comes from an injected clock. Requests and answers go through the pure builder and
classifier in ``sipwake.push.payload``.

Secrets stay out of logs: the key and JWTs are never logged; device tokens only masked.
httpx logs each request URL (which carries the device token) at INFO and hpack logs whole
header blocks (path and ``authorization``) at DEBUG, so the provider attaches a filter to
those library loggers that masks ``/3/device/<token>`` and anything shaped like a JWT.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable

import httpx
import jwt

from sipwake.errors import PushError
from sipwake.push.base import PushOutcome, PushRequest
from sipwake.push.payload import (
    APNS_HOSTS,
    ApnsSettings,
    build_apns_request,
    classify_apns_response,
)
from sipwake.sip.pushtarget import mask_token

__all__ = ["MIN_REFRESH_S", "ApnsProvider", "ProviderToken"]

logger = logging.getLogger(__name__)

#: PROTOCOLS.md §3.3: changing the token more often than this gets 429 from APNs.
MIN_REFRESH_S = 20 * 60
#: PROTOCOLS.md §3.3: APNs rejects tokens older than this (403 ExpiredProviderToken).
MAX_TOKEN_AGE_S = 60 * 60

_DEVICE_PATH_RE = re.compile(r"(/3/device/)([0-9A-Fa-f]+)")
_JWT_RE = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]+")
#: Libraries that log request URLs (httpx, INFO) or header blocks (hpack, DEBUG).
_LIBRARY_LOGGERS = ("httpx", "httpcore.http2", "httpcore.connection", "hpack.hpack", "hpack.table")


def _mask_secrets(text: str) -> str:
    text = _DEVICE_PATH_RE.sub(lambda m: m.group(1) + mask_token(m.group(2)), text)
    return _JWT_RE.sub(lambda m: mask_token(m.group(0)), text)


class _MaskPushSecrets(logging.Filter):
    """Masks APNs device tokens in request paths, and JWTs, in library log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _guard_library_loggers() -> None:
    """Attach ``_MaskPushSecrets`` once to each library logger that may see secrets."""
    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, _MaskPushSecrets) for f in library_logger.filters):
            library_logger.addFilter(_MaskPushSecrets())


class ProviderToken:
    """The shared APNs provider token of one (team, key): minted lazily, cached, refreshed.

    Pure apart from signing: the caller passes wall time (UNIX seconds) to ``get``.
    """

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str | bytes,
        refresh_after_s: float = 50 * 60,
    ) -> None:
        if not MIN_REFRESH_S <= refresh_after_s < MAX_TOKEN_AGE_S:
            raise ValueError(
                f"refresh_after_s must be in [{MIN_REFRESH_S}, {MAX_TOKEN_AGE_S}), "
                f"got {refresh_after_s}"
            )
        self._team_id = team_id
        self._key_id = key_id
        self._private_key = private_key
        self._refresh_after_s = refresh_after_s
        self._token: str | None = None
        self._issued_at = 0
        self.minted = 0
        """How many tokens have been minted (for metrics and tests)."""

    def __repr__(self) -> str:
        return (
            f"ProviderToken(team_id={self._team_id!r}, key_id={self._key_id!r}, "
            f"minted={self.minted})"
        )

    def get(self, wall_now: float) -> str:
        """The current token, minted anew when missing or older than ``refresh_after_s``."""
        if self._token is None or wall_now - self._issued_at >= self._refresh_after_s:
            self._mint(wall_now)
        assert self._token is not None
        return self._token

    def expire(self, wall_now: float) -> bool:
        """APNs called the token expired: drop it if Apple lets us mint again (≥ 20 min).

        Returns whether the next ``get`` will mint a new token.
        """
        if self._token is not None and wall_now - self._issued_at >= MIN_REFRESH_S:
            self._token = None
            return True
        return False

    def _mint(self, wall_now: float) -> None:
        issued_at = int(wall_now)
        try:
            token = jwt.encode(
                {"iss": self._team_id, "iat": issued_at},
                self._private_key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # Never echo the key: name only the failure's type.
            raise PushError(
                "apns", f"cannot sign provider token: {type(exc).__name__}", retryable=False
            ) from None
        self._token, self._issued_at = token, issued_at
        self.minted += 1
        logger.info("apns: minted provider token kid=%s iss=%s", self._key_id, self._team_id)


class ApnsProvider:
    """Sends pushes to APNs over one persistent HTTP/2 client (a ``PushProvider``)."""

    def __init__(
        self,
        settings: ApnsSettings,
        *,
        private_key: str | bytes,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        refresh_after_s: float = 50 * 60,
    ) -> None:
        """``private_key`` is the ``.p8`` PEM text; ``base_url`` defaults to the host of
        ``settings.environment``; ``clock`` gives wall seconds (JWT ``iat``), ``timer``
        monotonic seconds (latency); ``ssl_context`` overrides the system trust store."""
        self.settings = settings
        self.base_url = base_url or APNS_HOSTS[settings.environment]
        self._clock = clock
        self._timer = timer
        self._token = ProviderToken(
            team_id=settings.team_id,
            key_id=settings.key_id,
            private_key=private_key,
            refresh_after_s=refresh_after_s,
        )
        _guard_library_loggers()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            http1=False,
            http2=True,
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"ApnsProvider(base_url={self.base_url!r}, settings={self.settings!r})"

    @property
    def tokens_minted(self) -> int:
        return self._token.minted

    async def send(self, request: PushRequest) -> PushOutcome:
        try:
            outcome = await self._send_once(request)
            if outcome.reason == "ExpiredProviderToken" and self._token.expire(self._clock()):
                outcome = await self._send_once(request)
        except PushError as exc:
            outcome = PushOutcome(
                status="invalid_target" if exc.reason.startswith("BadDeviceToken") else "error",
                provider="apns",
                reason=exc.reason,
            )
        logger.info(
            "apns: %s push to %s: %s%s (%.0f ms)",
            request.kind,
            request.target.masked(),
            outcome.status,
            f" {outcome.http_status} {outcome.reason}" if outcome.http_status != 200 else "",
            outcome.latency * 1000,
        )
        return outcome

    async def _send_once(self, request: PushRequest) -> PushOutcome:
        wall_now = self._clock()
        built = build_apns_request(request, self.settings, wall_now=wall_now)
        headers = dict(built.headers)
        headers["authorization"] = f"bearer {self._token.get(wall_now)}"
        started = self._timer()
        try:
            response = await self._client.request(
                built.method, built.path, headers=headers, content=built.body
            )
        except httpx.TimeoutException as exc:
            return self._unanswered(f"timeout: {type(exc).__name__}", started)
        except httpx.TransportError as exc:
            return self._unanswered(f"transport: {type(exc).__name__}", started)
        return classify_apns_response(
            response.status_code,
            response.content,
            response.headers,
            latency=self._timer() - started,
            wall_now=wall_now,
        )

    def _unanswered(self, reason: str, started: float) -> PushOutcome:
        """No answer from APNs (timeout, connection lost): the push may be retried."""
        return PushOutcome(
            status="retry",
            provider="apns",
            reason=reason,
            latency=self._timer() - started,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ApnsProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
