"""Sandbox push provider: pushes that go nowhere, kept so a user sees what would be sent.

The default for ``sipwake serve`` without push credentials. No network: ``send``
records the push (the last ``maxlen``, 10,000 by default) and answers ``delivered``.

For labs and tests it can be told otherwise, and it can wake a simulated device:

* ``fail(prid, status, reason)`` makes every push to that token answer ``invalid_target``,
  ``retry`` or ``error`` until ``heal(prid)``; such pushes are recorded but reach no one.
* ``subscribe()`` returns an ``asyncio.Queue`` that receives each delivered
  ``PushRequest``; ``add_listener(callback)`` calls ``callback(request)`` for each.
  A simulated softphone waits on either and re-registers when woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sipwake.push.base import PushOutcome, PushRequest, PushStatus

__all__ = ["SandboxProvider", "SandboxPush"]

logger = logging.getLogger(__name__)

_PROVIDER = "sandbox"
_FAULTS: frozenset[PushStatus] = frozenset({"invalid_target", "retry", "error"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxPush:
    """One push the sandbox was given, and what it answered."""

    wall: float
    """When it was given (UNIX seconds)."""
    request: PushRequest
    outcome: PushOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fault:
    status: PushStatus
    reason: str | None
    retry_after: float | None


class SandboxProvider:
    """An in-process ``PushProvider`` that records pushes (see the module text)."""

    name = _PROVIDER

    def __init__(
        self,
        *,
        maxlen: int = 10_000,
        clock: Callable[[], float] = time.time,
        queue_size: int = 1_000,
    ) -> None:
        if maxlen <= 0:
            raise ValueError(f"sandbox maxlen must be > 0, got {maxlen}")
        self._clock = clock
        self._queue_size = queue_size
        self._pushes: deque[SandboxPush] = deque(maxlen=maxlen)
        self._faults: dict[str, _Fault] = {}
        self._queues: list[asyncio.Queue[PushRequest]] = []
        self._listeners: list[Callable[[PushRequest], object]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"SandboxProvider(pushes={len(self._pushes)}, faults={len(self._faults)})"

    # -- what was sent ----------------------------------------------------
    @property
    def pushes(self) -> list[SandboxPush]:
        """Every push kept, oldest first."""
        return list(self._pushes)

    def pushes_to(self, prid: str) -> list[SandboxPush]:
        """The pushes kept for one device token, oldest first."""
        return [p for p in self._pushes if p.request.target.prid == prid]

    def clear(self) -> None:
        """Forget the pushes kept (faults and subscribers stay)."""
        self._pushes.clear()

    # -- faults -----------------------------------------------------------
    def fail(
        self,
        prid: str,
        status: PushStatus = "invalid_target",
        reason: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Make pushes to ``prid`` answer ``status`` (not ``delivered``) until ``heal``."""
        if status not in _FAULTS:
            raise ValueError(
                f"sandbox fault status must be one of {sorted(_FAULTS)}, got {status!r}"
            )
        self._faults[prid] = _Fault(status=status, reason=reason, retry_after=retry_after)

    def heal(self, prid: str | None = None) -> None:
        """Deliver to ``prid`` again (every token when None)."""
        if prid is None:
            self._faults.clear()
        else:
            self._faults.pop(prid, None)

    # -- waking simulated devices -------------------------------------------
    def subscribe(self) -> asyncio.Queue[PushRequest]:
        """A queue that receives every push delivered from now on."""
        queue: asyncio.Queue[PushRequest] = asyncio.Queue(maxsize=self._queue_size)
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PushRequest]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)

    def add_listener(self, callback: Callable[[PushRequest], object]) -> None:
        """Call ``callback(request)`` for every push delivered (exceptions are logged)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[PushRequest], object]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    # -- PushProvider -------------------------------------------------------
    async def send(self, request: PushRequest) -> PushOutcome:
        fault = self._faults.get(request.target.prid)
        if self._closed:
            outcome = PushOutcome(status="error", provider=_PROVIDER, reason="sandbox closed")
        elif fault is not None:
            outcome = PushOutcome(
                status=fault.status,
                provider=_PROVIDER,
                reason=fault.reason or f"sandbox fault: {fault.status}",
                retry_after=fault.retry_after if fault.status == "retry" else None,
            )
        else:
            outcome = PushOutcome(status="delivered", provider=_PROVIDER, apns_id=request.apns_id)
        self._pushes.append(SandboxPush(wall=self._clock(), request=request, outcome=outcome))
        logger.info(
            "sandbox: %s push to %s (call %s): %s%s",
            request.kind,
            request.target.masked(),
            request.call_id,
            outcome.status,
            f" ({outcome.reason})" if outcome.reason else "",
        )
        if outcome.status == "delivered":
            self._wake(request)
        return outcome

    def _wake(self, request: PushRequest) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(request)
            except asyncio.QueueFull:
                logger.warning(
                    "sandbox: subscriber queue full, push to %s dropped", request.target.masked()
                )
        for callback in list(self._listeners):
            try:
                callback(request)
            except Exception as exc:  # a listener's bug must not fail the push
                logger.warning(
                    "sandbox: listener %r failed on push to %s: %s",
                    getattr(callback, "__qualname__", callback),
                    request.target.masked(),
                    type(exc).__name__,
                )

    async def close(self) -> None:
        self._closed = True
        self._queues.clear()
        self._listeners.clear()
