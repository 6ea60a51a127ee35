"""The asyncio side the built-in user agent servers share (the voicemail, the mobile):
a datagram protocol that hands each datagram to a callback, and the one timer that
keeps a sans-IO core's ``next_deadline`` armed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

__all__ = ["CoreTimer", "Datagrams"]


class Datagrams(asyncio.DatagramProtocol):
    """Hands every datagram of one socket to ``deliver(data, (host, port))``."""

    def __init__(
        self, deliver: Callable[[bytes, tuple[str, int]], None], logger: logging.Logger
    ) -> None:
        self._deliver = deliver
        self._logger = logger
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._deliver(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self._logger.debug("socket: %s", exc)


class _Timed(Protocol):
    def next_deadline(self) -> float | None: ...


class CoreTimer:
    """One loop timer at the core's next deadline; ``fire(now)`` runs when it is due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[float], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def rearm(self, core: _Timed) -> None:
        deadline = core.next_deadline()
        if deadline == self._deadline and self._timer is not None:
            return
        self.cancel()
        self._deadline = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._due)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = None

    def _due(self) -> None:
        self._timer = None
        self._deadline = None
        self._fire(self._loop.time())
