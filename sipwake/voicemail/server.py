"""The asyncio shell around ``VoicemailCore``: one SIP socket, one RTP socket per call.

It reads the loop's clock, feeds the core, performs its outputs in order and
re-arms one timer for the core's next deadline (as ``transport/driver.py``
does for the node). Messages are written to disk in a worker thread; the
monotonic time a message started is turned into wall-clock time here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sipwake.ids import Ids, SystemIds
from sipwake.sip.peer import Peer
from sipwake.transaction import TimerConfig
from sipwake.voicemail.core import VoicemailCore
from sipwake.voicemail.events import (
    CallLogged,
    CloseMedia,
    Dropped,
    OpenMedia,
    SendDatagram,
    StoreMessage,
    VoicemailMessage,
    VoicemailOutput,
)
from sipwake.voicemail.shell import CoreTimer, Datagrams
from sipwake.voicemail.store import SavedMessage, save_message

__all__ = ["DEFAULT_DIRECTORY", "DEFAULT_PORT", "VoicemailServer"]

logger = logging.getLogger("sipwake.voicemail")

DEFAULT_PORT = 5090
DEFAULT_DIRECTORY = "sipwake-voicemail"
#: How long ``close`` waits for messages still being written.
_SAVE_GRACE_S = 5.0


class VoicemailServer:
    """The built-in voicemail: a UAS on ``host:port`` (UDP) that records messages to
    ``directory``/<user>/ as WAV files with JSON sidecars.

    ``port`` 0 picks a free port (read ``.port`` after ``start``). ``advertise`` is the
    address put in Contact, Via and the SDP (default: ``host``, or 127.0.0.1 when ``host``
    is a wildcard). ``on_message`` is called with each message once it is on disk.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        *,
        max_message_s: float = 120.0,
        ids: Ids | None = None,
        timers: TimerConfig | None = None,
        on_message: Callable[[SavedMessage], None] | None = None,
        advertise: str | None = None,
    ) -> None:
        if not max_message_s > 0:
            raise ValueError(f"max_message_s: expected a positive number, got {max_message_s!r}")
        self.host = host
        self.advertise = advertise or ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host)
        self.directory = Path(directory)
        self.max_message_s = max_message_s
        self.on_message = on_message
        self._port = port
        self._ids = ids if ids is not None else SystemIds()
        self._timers = timers
        self._core: VoicemailCore | None = None
        self._sip: asyncio.DatagramTransport | None = None
        self._media: dict[str, asyncio.DatagramTransport] = {}
        self._opening: dict[str, asyncio.Task[None]] = {}
        self._saving: set[asyncio.Task[None]] = set()
        self._timer: CoreTimer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.saved = 0
        self.dropped = 0

    # -- public --------------------------------------------------------------------
    @property
    def core(self) -> VoicemailCore:
        if self._core is None:
            raise RuntimeError("VoicemailServer not started")
        return self._core

    @property
    def port(self) -> int:
        """The bound SIP port (the one asked for before ``start``)."""
        return self._port

    @property
    def uri(self) -> str:
        """Where to divert calls: ``sip:vm@host:port``."""
        host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
        return f"sip:vm@{host}:{self.port}"

    async def start(self) -> None:
        """Bind the SIP socket."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._timer = CoreTimer(loop, self._on_timer)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(self._on_sip, logger), local_addr=(self.host, self._port)
        )
        self._sip = transport
        port = self._port = int(transport.get_extra_info("sockname")[1])
        self._core = VoicemailCore(
            host=self.advertise,
            port=port,
            ids=self._ids,
            max_message_s=self.max_message_s,
            timers=self._timers,
        )
        logger.info(
            "voicemail listening on udp %s:%d, messages in %s", self.host, port, self.directory
        )

    async def close(self) -> None:
        """Hang up every call (storing what was recorded), then close every socket."""
        if self._core is None or self._loop is None:
            return
        self._perform(self._safe(lambda now: self.core.close(now)))
        for task in list(self._opening.values()):
            task.cancel()
        if self._saving:
            await asyncio.wait(list(self._saving), timeout=_SAVE_GRACE_S)
        if self._timer is not None:
            self._timer.cancel()
        for transport in self._media.values():
            transport.close()
        self._media.clear()
        if self._sip is not None:
            self._sip.close()
            self._sip = None
        self._core = None

    # -- inputs --------------------------------------------------------------------
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _safe(self, step: Callable[[float], list[VoicemailOutput]]) -> list[VoicemailOutput]:
        try:
            return step(self._now())
        except Exception:  # a bug must not take the voicemail down with it
            logger.exception("voicemail: internal error")
            return []

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._core is None or not data.strip(b"\r\n"):
            return
        peer = Peer(transport="udp", host=addr[0], port=addr[1])
        self._perform(self._safe(lambda now: self.core.receive(data, peer, now)))

    def _on_rtp(self, call_ref: str, data: bytes) -> None:
        if self._core is not None:
            self._perform(self._safe(lambda now: self.core.rtp_received(call_ref, data, now)))

    # -- outputs -------------------------------------------------------------------
    def _perform(self, outputs: list[VoicemailOutput]) -> None:
        for output in outputs:
            match output:
                case SendDatagram(data=data, peer=peer):
                    if self._sip is not None and not self._sip.is_closing():
                        try:
                            self._sip.sendto(data, (peer.host, peer.port))
                        except OSError as exc:
                            logger.info("voicemail: could not send to %s: %s", peer, exc)
                case OpenMedia(call_ref=ref):
                    assert self._loop is not None
                    task = self._loop.create_task(self._open_media(ref))
                    self._opening[ref] = task
                    task.add_done_callback(self._opened)
                case CloseMedia(call_ref=ref):
                    transport = self._media.pop(ref, None)
                    if transport is not None:
                        transport.close()
                case StoreMessage(message=message, pcm=pcm):
                    wall = time.time() - (self._now() - message.started)
                    assert self._loop is not None
                    saving = self._loop.create_task(self._save(message, pcm, wall))
                    self._saving.add(saving)
                    saving.add_done_callback(self._saving.discard)
                case CallLogged(call_ref=ref, step=step, detail=detail):
                    logger.info("voicemail call %s: %s %s", ref, step, detail)
                case Dropped(reason=reason, peer=peer):
                    self.dropped += 1
                    logger.debug("voicemail dropped a message from %s: %s", peer, reason)
        self._rearm()

    def _opened(self, task: asyncio.Task[None]) -> None:
        for ref, pending in list(self._opening.items()):
            if pending is task:
                del self._opening[ref]

    async def _open_media(self, ref: str) -> None:
        assert self._loop is not None
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: Datagrams(lambda data, _addr: self._on_rtp(ref, data), logger),
                local_addr=(self.host, 0),
            )
        except OSError as exc:
            reason = str(exc)
            self._perform(self._safe(lambda now: self.core.media_failed(ref, reason, now)))
            return
        if self._core is None:
            transport.close()
            return
        self._media[ref] = transport
        port = int(transport.get_extra_info("sockname")[1])
        self._perform(self._safe(lambda now: self.core.media_ready(ref, port, now)))

    async def _save(self, message: VoicemailMessage, pcm: bytes, wall: float) -> None:
        try:
            saved = await asyncio.to_thread(save_message, self.directory, message, pcm, wall)
        except Exception:
            logger.exception("voicemail: could not write a message to %s", self.directory)
            return
        self.saved += 1
        logger.info(
            "voicemail for %s from %s: %.1f s in %s",
            saved.user,
            saved.caller,
            saved.duration,
            saved.path,
        )
        if self.on_message is not None:
            try:
                self.on_message(saved)
            except Exception:
                logger.exception("voicemail: on_message failed")

    # -- timer ---------------------------------------------------------------------
    def _rearm(self) -> None:
        if self._core is not None and self._timer is not None:
            self._timer.rearm(self._core)

    def _on_timer(self, _now: float) -> None:
        if self._core is not None:
            self._perform(self._safe(self.core.handle_timeout))
