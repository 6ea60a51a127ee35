"""The asyncio shell around ``MobileCore``: one SIP socket and one RTP sink socket.

It reads the loop's clock, feeds the core, sends what it says and re-arms one
timer for its next deadline (as ``transport/driver.py`` does for the node).
RTP sent to the mobile is read and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sipwake.ids import Ids, SystemIds
from sipwake.mobile.core import MobileCore, MobileOutput
from sipwake.sip.peer import Peer
from sipwake.voicemail.events import CallLogged, Dropped, SendDatagram
from sipwake.voicemail.shell import CoreTimer, Datagrams

__all__ = ["MobileServer"]

logger = logging.getLogger("sipwake.mobile")


class MobileServer:
    """The built-in mobile on ``host:port`` (UDP; 0 picks a free port).

    ``answer_after(number)`` is how many seconds a call to ``number`` rings before the
    mobile answers by itself (``None``: never; ``answer`` picks it up).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        answer_after: Callable[[str], float | None] = lambda _number: None,
        ids: Ids | None = None,
    ) -> None:
        self.host = host
        self.advertise = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        self._port = port
        self._answer_after = answer_after
        self._ids = ids if ids is not None else SystemIds()
        self._core: MobileCore | None = None
        self._sip: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._timer: CoreTimer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def core(self) -> MobileCore:
        if self._core is None:
            raise RuntimeError("MobileServer not started")
        return self._core

    @property
    def port(self) -> int:
        return self._port

    def uri(self, number: str) -> str:
        """Where the twin branch for ``number`` goes."""
        host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
        return f"sip:{number}@{host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._timer = CoreTimer(loop, self._on_timer)
        sip, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(self._on_sip, logger), local_addr=(self.host, self._port)
        )
        rtp, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(lambda _data, _addr: None, logger), local_addr=(self.host, 0)
        )
        self._sip = sip
        self._rtp = rtp
        self._port = int(sip.get_extra_info("sockname")[1])
        self._core = MobileCore(
            host=self.advertise,
            port=self._port,
            media_port=int(rtp.get_extra_info("sockname")[1]),
            ids=self._ids,
            answer_after=self._answer_after,
        )
        logger.info("built-in mobile on udp %s:%d", self.host, self._port)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for transport in (self._sip, self._rtp):
            if transport is not None:
                transport.close()
        self._sip = self._rtp = None
        self._core = None

    # -- commands (the admin endpoint) ----------------------------------------------
    def answer(self, number: str) -> int:
        """Answer the calls ringing on ``number``; how many there were."""
        return self._command(lambda now: self.core.answer(number, now))

    def reject(self, number: str) -> int:
        """Decline the calls ringing on ``number`` (486); how many there were."""
        return self._command(lambda now: self.core.reject(number, now))

    def hang_up(self, number: str) -> int:
        """End the answered calls on ``number`` (BYE); how many there were."""
        return self._command(lambda now: self.core.hang_up(number, now))

    def status(self) -> list[dict[str, object]]:
        if self._core is None:
            return []
        return [
            {"number": c.number, "caller": c.caller, "state": c.state.value}
            for c in self._core.calls()
        ]

    def _command(self, step: Callable[[float], list[MobileOutput]]) -> int:
        if self._core is None or self._loop is None:
            return 0
        outputs = step(self._loop.time())
        self._perform(outputs)
        return sum(1 for o in outputs if isinstance(o, CallLogged))

    # -- I/O ------------------------------------------------------------------------
    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._core is None or self._loop is None or not data.strip(b"\r\n"):
            return
        peer = Peer(transport="udp", host=addr[0], port=addr[1])
        try:
            outputs = self._core.receive(data, peer, self._loop.time())
        except Exception:  # a bug must not take the mobile down with it
            logger.exception("mobile: internal error")
            return
        self._perform(outputs)

    def _perform(self, outputs: list[MobileOutput]) -> None:
        for output in outputs:
            match output:
                case SendDatagram(data=data, peer=peer):
                    if self._sip is not None and not self._sip.is_closing():
                        try:
                            self._sip.sendto(data, (peer.host, peer.port))
                        except OSError as exc:
                            logger.info("mobile: could not send to %s: %s", peer, exc)
                case CallLogged(call_ref=ref, step=step, detail=detail):
                    logger.info("mobile call %s: %s %s", ref, step, detail)
                case Dropped(reason=reason, peer=peer):
                    logger.debug("mobile dropped a message from %s: %s", peer, reason)
        self._rearm()

    def _rearm(self) -> None:
        if self._core is not None and self._timer is not None:
            self._timer.rearm(self._core)

    def _on_timer(self, now: float) -> None:
        if self._core is None:
            return
        try:
            outputs = self._core.handle_timeout(now)
        except Exception:
            logger.exception("mobile: internal error in a timer")
            outputs = []
        self._perform(outputs)
