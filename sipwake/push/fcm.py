"""FCM HTTP v1 client with OAuth 2.0 service-account authentication (PROTOCOLS.md §5).

Theory of operation: one ``httpx.AsyncClient`` per provider holds one HTTP/2 connection
per origin (FCM, and Google's token endpoint), so concurrent ``send`` calls become
concurrent streams. Every send carries ``Authorization: Bearer <access token>``; the
token comes from an ``AccessTokenCache``, which asks the token endpoint with a signed
JWT assertion only when it has no token or the token is within ``refresh_margin_s``
(5 min) of expiry, never per request. Concurrent sends that find the token missing
share one in-flight fetch. A failed fetch is remembered for ``fetch_retry_s`` so a dead
token endpoint is not asked once per push; meanwhile a still-unexpired token is used.

A 401 ``UNAUTHENTICATED`` answer drops the token it rejected (unless that token is
younger than ``refresh_holdoff_s``, so a server that refuses every token costs at most
one fetch a minute) and the push is sent once more with a fresh one. Wall time (JWT
``iat``, token expiry) comes from an injected clock. Requests and answers go through the
pure builders and classifiers in ``sipwake.push.fcm_payload``.

Secrets stay out of logs: the private key, assertions and access tokens are never
logged, registration tokens only masked. hpack logs whole header blocks at DEBUG
(``authorization`` included), so the provider attaches a filter to the library loggers
that masks bearer tokens, JWTs and form-encoded assertions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from sipwake.errors import ConfigError, PushError
from sipwake.push.base import PushOutcome, PushRequest
from sipwake.push.fcm_payload import (
    FCM_HOST,
    AccessToken,
    FcmHttpRequest,
    FcmSettings,
    ServiceAccount,
    build_fcm_request,
    build_token_request,
    classify_fcm_response,
    outcome_for_build_error,
    parse_token_response,
    wants_new_access_token,
)
from sipwake.push.logmask import guard_library_loggers, mask_jwts
from sipwake.sip.pushtarget import mask_token

__all__ = ["AccessTokenCache", "FcmProvider", "load_service_account"]

logger = logging.getLogger(__name__)

_PROVIDER = "fcm"
_BEARER_RE = re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=\-]+)")
_ASSERTION_RE = re.compile(r"(assertion=)([A-Za-z0-9._%\-]+)")


def _mask_secrets(text: str) -> str:
    """Bearer tokens, OAuth assertions and JWTs."""
    text = _BEARER_RE.sub(lambda m: m.group(1) + mask_token(m.group(2)), text)
    text = _ASSERTION_RE.sub(lambda m: m.group(1) + mask_token(m.group(2)), text)
    return mask_jwts(text)


def load_service_account(source: ServiceAccount | Mapping[str, Any] | str | Path) -> ServiceAccount:
    """A ``ServiceAccount`` from a JSON key file path, its parsed JSON, or as is.

    Raises ``ConfigError`` naming the file and key when the file cannot be used.
    """
    if isinstance(source, ServiceAccount):
        return source
    if isinstance(source, Mapping):
        return ServiceAccount.from_mapping(source)
    path = str(source)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or type(exc).__name__}", path=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not JSON: {type(exc).__name__}", path=path) from None
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object", path=path)
    return ServiceAccount.from_mapping(doc, source=path)


class AccessTokenCache:
    """The OAuth access token of one service account: fetched lazily, shared, refreshed.

    ``get`` returns a token valid for a while yet; ``invalidate`` drops one FCM refused.
    """

    def __init__(
        self,
        account: ServiceAccount,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float],
        token_uri: str | None = None,
        refresh_margin_s: float = 300.0,
        refresh_holdoff_s: float = 60.0,
        fetch_retry_s: float = 10.0,
    ) -> None:
        self._account = account
        self._client = client
        self._clock = clock
        self._token_uri = token_uri
        self._refresh_margin_s = refresh_margin_s
        self._refresh_holdoff_s = refresh_holdoff_s
        self._fetch_retry_s = fetch_retry_s
        self._current: AccessToken | None = None
        self._inflight: asyncio.Task[AccessToken] | None = None
        self._failure: tuple[PushError, float] | None = None
        self.fetches = 0
        """Token requests sent (for metrics and tests)."""
        self.refreshes_on_401 = 0

    def __repr__(self) -> str:
        return f"AccessTokenCache(account={self._account!r}, fetches={self.fetches})"

    async def get(self) -> str:
        """A usable access token: the cached one, or one fetched (once for all callers)."""
        now = self._clock()
        current = self._current
        if current is not None and now < current.refresh_at:
            return current.value
        if self._inflight is None:
            if self._failure is not None and now < self._failure[1]:
                if current is not None and now < current.expires_at:
                    return current.value
                error = self._failure[0]
                raise PushError(error.provider, error.reason, retryable=error.retryable)
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(self._fetched)
        try:
            token = await asyncio.shield(self._inflight)
        except PushError as exc:
            if current is not None and self._clock() < current.expires_at:
                return current.value
            # Every waiter gets its own exception (the task's is shared).
            raise PushError(exc.provider, exc.reason, retryable=exc.retryable) from None
        return token.value

    def invalidate(self, value: str) -> bool:
        """FCM refused ``value``: drop it so the next ``get`` fetches a new token.

        Returns whether sending again may help: True when ``value`` is no longer the
        cached token (someone replaced it already) or was dropped now; False when it
        was fetched less than ``refresh_holdoff_s`` ago and is kept.
        """
        current = self._current
        if current is None or current.value != value:
            return True
        if self._clock() - current.issued_at < self._refresh_holdoff_s:
            return False
        self._current = None
        self.refreshes_on_401 += 1
        return True

    async def _fetch(self) -> AccessToken:
        wall_now = self._clock()
        built = build_token_request(self._account, wall_now=wall_now, token_uri=self._token_uri)
        self.fetches += 1
        try:
            try:
                response = await self._client.post(
                    built.url, headers=dict(built.headers), content=built.body
                )
            except httpx.TransportError as exc:
                raise PushError(
                    _PROVIDER,
                    f"oauth: token endpoint unreachable: {type(exc).__name__}",
                    retryable=True,
                ) from None
            token = parse_token_response(
                response.status_code,
                response.content,
                wall_now=wall_now,
                refresh_margin_s=self._refresh_margin_s,
            )
        except PushError as exc:
            self._failure = (exc, self._clock() + self._fetch_retry_s)
            logger.warning("fcm: access token for %s: %s", self._account.client_email, exc.reason)
            raise
        self._current, self._failure = token, None
        logger.info(
            "fcm: access token for %s fetched, expires in %.0f s",
            self._account.client_email,
            token.expires_at - wall_now,
        )
        return token

    def _fetched(self, task: asyncio.Task[AccessToken]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)


class FcmProvider:
    """Sends pushes to FCM HTTP v1 over one persistent HTTP/2 client (a ``PushProvider``)."""

    def __init__(
        self,
        service_account: ServiceAccount | Mapping[str, Any] | str | Path,
        settings: FcmSettings | None = None,
        *,
        base_url: str | None = None,
        token_uri: str | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        refresh_margin_s: float = 300.0,
        refresh_holdoff_s: float = 60.0,
        fetch_retry_s: float = 10.0,
    ) -> None:
        """``service_account`` is the JSON key file (path or parsed); ``base_url``
        defaults to fcm.googleapis.com and ``token_uri`` to the account's; ``clock``
        gives wall seconds (JWT ``iat``, token expiry), ``timer`` monotonic seconds
        (latency); ``ssl_context`` overrides the system trust store."""
        self.account = load_service_account(service_account)
        self.settings = settings if settings is not None else FcmSettings()
        self.base_url = base_url or FCM_HOST
        self._clock = clock
        self._timer = timer
        guard_library_loggers("fcm", _mask_secrets)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            http1=False,
            http2=True,
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout,
        )
        self.tokens = AccessTokenCache(
            self.account,
            self._client,
            clock=clock,
            token_uri=token_uri,
            refresh_margin_s=refresh_margin_s,
            refresh_holdoff_s=refresh_holdoff_s,
            fetch_retry_s=fetch_retry_s,
        )

    def __repr__(self) -> str:
        return (
            f"FcmProvider(base_url={self.base_url!r}, account={self.account!r}, "
            f"settings={self.settings!r})"
        )

    async def send(self, request: PushRequest) -> PushOutcome:
        try:
            built = build_fcm_request(
                request, self.settings, default_project=self.account.project_id
            )
        except PushError as exc:
            outcome = outcome_for_build_error(exc)
        else:
            outcome = await self._send_built(built)
        logger.info(
            "fcm: %s push to %s: %s%s (%.0f ms)",
            request.kind,
            request.target.masked(),
            outcome.status,
            f" {outcome.http_status or ''} {outcome.reason}"
            if outcome.status != "delivered"
            else "",
            outcome.latency * 1000,
        )
        return outcome

    async def _send_built(self, built: FcmHttpRequest) -> PushOutcome:
        """Send with the cached access token; once more with a new one if FCM refused it."""
        try:
            access_token = await self.tokens.get()
            outcome = await self._post(built, access_token)
            if wants_new_access_token(outcome) and self.tokens.invalidate(access_token):
                outcome = await self._post(built, await self.tokens.get())
        except PushError as exc:  # no access token to be had
            return PushOutcome(
                status="retry" if exc.retryable else "error", provider=_PROVIDER, reason=exc.reason
            )
        return outcome

    async def _post(self, built: FcmHttpRequest, access_token: str) -> PushOutcome:
        headers = dict(built.headers)
        headers["authorization"] = f"Bearer {access_token}"
        started = self._timer()
        try:
            response = await self._client.request(
                built.method, built.path, headers=headers, content=built.body
            )
        except httpx.TimeoutException as exc:
            return self._unanswered(f"timeout: {type(exc).__name__}", started)
        except httpx.TransportError as exc:
            return self._unanswered(f"transport: {type(exc).__name__}", started)
        return classify_fcm_response(
            response.status_code,
            response.content,
            response.headers,
            latency=self._timer() - started,
            wall_now=self._clock(),
        )

    def _unanswered(self, reason: str, started: float) -> PushOutcome:
        """No answer from FCM (timeout, connection lost): the push may be retried."""
        return PushOutcome(
            status="retry", provider=_PROVIDER, reason=reason, latency=self._timer() - started
        )

    async def close(self) -> None:
        await self.tokens.close()
        await self._client.aclose()

    async def __aenter__(self) -> FcmProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
