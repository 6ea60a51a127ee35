"""Which provider sends a push: routes by push service, a fallback for the rest.

``PushProviders`` maps a ``PushTarget`` to a provider by its ``base_provider``
(``apns``, ``fcm``, ``webpush``) and its ``sandbox`` flag: a sandbox target (Linphone's
``apns.dev``) looks up ``"<base>.dev"``, any other ``"<base>"``. A target whose route is
not configured goes to the fallback provider: the sandbox by default, or a webhook
configured for ``"all"``. A sandbox target never falls back to a production route: APNs
would answer BadDeviceToken.

``send`` never raises for a provider's failure: an exception becomes an ``error``
outcome carrying the exception's message (the device token masked in it), and is
logged likewise. It measures each push's latency and, when given a ``PushLog``,
records every attempt there (token masked); a failing log is logged, not raised.
A private push (``calls.encrypt_push``) to a device without a push key (it registered
without TLS) goes without call details; that is logged once per device.

It knows nothing of configuration files: ``build_push_providers`` composes one from
providers already built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Literal

from sipwake.errors import cut
from sipwake.push.base import PushOutcome, PushProvider, PushRecord, PushRequest
from sipwake.push.sandbox import SandboxProvider
from sipwake.sip.pushtarget import PushTarget, mask_token
from sipwake.store.base import PushLog

__all__ = ["PushProviders", "build_push_providers"]

logger = logging.getLogger(__name__)

#: Devices remembered as reported keyless (then the memory starts over).
_KEYLESS_REMEMBERED = 10_000


def route_key(target: PushTarget) -> str:
    """The route a target takes: ``apns``, ``fcm``, ``webpush``, or ``apns.dev`` for a
    sandbox target."""
    base = target.base_provider
    return f"{base}.dev" if target.sandbox else base


def _name(provider: PushProvider, default: str) -> str:
    name = getattr(provider, "name", None)
    return name if isinstance(name, str) else default


class PushProviders:
    """Routes pushes to providers (a ``PushProvider`` itself; see the module text)."""

    def __init__(
        self,
        routes: Mapping[str, PushProvider],
        *,
        fallback: PushProvider,
        log: PushLog | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``routes`` maps route keys (``apns``, ``apns.dev``, ``fcm``, ``webpush``) to
        providers; ``clock`` gives wall seconds for records, ``timer`` monotonic
        seconds for latency."""
        self.routes = dict(routes)
        self.fallback = fallback
        self._log = log
        self._clock = clock
        self._timer = timer
        self._keyless: set[str] = set()
        """Devices already reported as lacking a push key (logged once each)."""

    def __repr__(self) -> str:
        routes = ", ".join(f"{k}={_name(p, type(p).__name__)}" for k, p in self.routes.items())
        return f"PushProviders({routes}; fallback={_name(self.fallback, 'fallback')})"

    def provider_for(self, target: PushTarget) -> tuple[str, PushProvider]:
        """The provider a push to ``target`` goes to, and its name for outcomes."""
        key = route_key(target)
        provider = self.routes.get(key)
        if provider is not None:
            return _name(provider, target.base_provider), provider
        return _name(self.fallback, "fallback"), self.fallback

    async def send(
        self,
        request: PushRequest,
        *,
        binding_id: str | None = None,
        aor: str | None = None,
    ) -> PushOutcome:
        """Send ``request`` through its provider; ``binding_id`` and ``aor`` only label
        the record kept in the log."""
        name, provider = self.provider_for(request.target)
        if request.private and request.seal_key is None:
            self._note_keyless(request, binding_id, aor)
        wall = self._clock()
        started = self._timer()
        try:
            outcome = await provider.send(request)
        except Exception as exc:  # a provider's bug or an unforeseen failure: an outcome
            message = _masked_message(exc, request.target.prid)
            logger.warning(
                "push: %s failed on %s push to %s: %s",
                name,
                request.kind,
                request.target.masked(),
                message,
            )
            outcome = PushOutcome(status="error", provider=name, reason=message)
        outcome = replace(outcome, latency=self._timer() - started)
        if self._log is not None:
            self._record(PushRecord.of(request, outcome, wall=wall, binding_id=binding_id, aor=aor))
        return outcome

    def _note_keyless(self, request: PushRequest, binding_id: str | None, aor: str | None) -> None:
        """Say once per device that its pushes go without call details."""
        device = binding_id or request.target.masked()
        if device in self._keyless:
            return
        if len(self._keyless) >= _KEYLESS_REMEMBERED:
            self._keyless.clear()
        self._keyless.add(device)
        logger.warning(
            "push: %s device %s (%s) registered without TLS, so it has no push key: "
            "its pushes carry no call details (calls.encrypt_push)",
            aor or "a",
            binding_id or "?",
            request.target.masked(),
        )

    def _record(self, record: PushRecord) -> None:
        assert self._log is not None
        try:
            self._log.record_push(record)
        except Exception as exc:  # a full disk must not fail the call the push is for
            logger.warning(
                "push: cannot record push to %s: %s", record.token, _masked_message(exc, "")
            )

    async def close(self) -> None:
        """Close every provider once (several routes may share one)."""
        seen: set[int] = set()
        for provider in [*self.routes.values(), self.fallback]:
            if id(provider) in seen:
                continue
            seen.add(id(provider))
            try:
                await provider.close()
            except Exception as exc:
                logger.warning(
                    "push: closing %s failed: %s",
                    _name(provider, type(provider).__name__),
                    type(exc).__name__,
                )


def _masked_message(exc: BaseException, prid: str) -> str:
    """The exception's message for a reason or a log line, the device token masked."""
    message = str(exc) or type(exc).__name__
    if prid:
        message = message.replace(prid, mask_token(prid))
    return cut(message)


def build_push_providers(
    *,
    apns: PushProvider | None = None,
    apns_sandbox: PushProvider | None = None,
    fcm: PushProvider | None = None,
    webpush: PushProvider | None = None,
    webhook: PushProvider | None = None,
    webhook_for: Literal["all"] | Iterable[str] = "all",
    sandbox: PushProvider | None = None,
    log: PushLog | None = None,
    clock: Callable[[], float] = time.time,
) -> PushProviders:
    """A ``PushProviders`` from providers already built.

    Each given service provider gets its route (``apns_sandbox`` serves ``apns.dev``
    targets). A ``webhook`` with ``webhook_for="all"`` is the fallback for every other
    target; with a list of route keys (``["fcm", "apns.dev"]``) it takes those routes,
    which must not also have a provider. Without a webhook for ``"all"``, the fallback
    is ``sandbox`` (a new ``SandboxProvider`` when None).
    """
    routes: dict[str, PushProvider] = {}
    for key, provider in (
        ("apns", apns),
        ("apns.dev", apns_sandbox),
        ("fcm", fcm),
        ("webpush", webpush),
    ):
        if provider is not None:
            routes[key] = provider
    fallback: PushProvider | None = None
    if webhook is not None:
        if webhook_for == "all":
            fallback = webhook
        else:
            for key in [webhook_for] if isinstance(webhook_for, str) else webhook_for:
                if key in routes:
                    raise ValueError(f"push route {key!r} has a provider and the webhook both")
                routes[key] = webhook
    if fallback is None:
        fallback = sandbox if sandbox is not None else SandboxProvider(clock=clock)
    return PushProviders(routes, fallback=fallback, log=log, clock=clock)
