"""UDP listener: one datagram carries one SIP message (RFC 3261 §18.3).

Datagrams made only of CR and LF are keep-alives and are ignored (RFC 5626
§3.5.1 allows CRLF on any transport). Datagrams over the size limit are
dropped. Responses and requests leave from the listener socket, so a client's
NAT binding (RFC 3581 §4) sees the address it sent to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any, cast

from sipwake.sip.peer import Peer
from sipwake.transport.common import FlowTable, ListenerConfig, LocalAddr

__all__ = ["UdpEndpoint", "open_udp"]

logger = logging.getLogger("sipwake.transport")

#: Bytes asked for each UDP socket's receive and send buffers.
SOCKET_BUFFER = 4 * 1024 * 1024


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket."""

    def __init__(self, table: FlowTable) -> None:
        self._table = table
        self._transport: asyncio.DatagramTransport | None = None
        self.local = LocalAddr(transport="udp", host="", port=0)
        self.family = socket.AF_INET
        self._inode = 0
        self._rcvbuf = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self.family = sock.family
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # Bursts (a registration storm, a benchmark) must queue, not drop: ask for 4 MiB;
            # the kernel caps it at net.core.rmem_max / wmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        try:
            self._inode = os.fstat(sock.fileno()).st_ino
            self._rcvbuf = max(int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)), 1)
        except OSError:
            self._inode = 0
        host, port = sock.getsockname()[:2]
        self.local = LocalAddr(transport="udp", host=host, port=port)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        peer = Peer(transport="udp", host=str(addr[0]), port=int(addr[1]))
        if len(data) > self._table.limits.max_message:
            self._table.count_dropped()
            logger.warning("dropped a %d-byte datagram from %s: over the limit", len(data), peer)
            return
        if not data.strip(b"\r\n"):
            return  # CRLF keep-alive
        self._table.deliver(data, peer, self.local)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier datagrams (port unreachable, …): nothing to do.
        logger.debug("UDP %s: %s", self.local, exc)

    def send(self, data: bytes, host: str, port: int) -> bool:
        if self._transport is None or self._transport.is_closing():
            return False
        self._transport.sendto(data, (host, port))
        return True

    def backlog(self) -> float | None:
        """How full the socket's receive queue is (0..1), from Linux's /proc/net/udp; None
        where that cannot be read. A queue filling up means the server is falling behind."""
        if not self._inode:
            return None
        table = "/proc/net/udp6" if self.family == socket.AF_INET6 else "/proc/net/udp"
        inode = str(self._inode)
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] == inode:
                        rx_queue = int(fields[4].partition(":")[2], 16)
                        return min(rx_queue / self._rcvbuf, 1.0)
        except (OSError, ValueError, StopIteration):
            return None
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_udp(config: ListenerConfig, table: FlowTable) -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(table), local_addr=(config.host, config.port)
    )
    return endpoint
