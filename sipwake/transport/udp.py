"""UDP listener: one datagram carries one SIP message (RFC 3261 §18.3).

Datagrams made only of CR and LF are keep-alives (RFC 5626 §3.5.1 allows CRLF
on any transport); STUN Binding requests are keep-alives too (RFC 5626 §4.4.2)
and get their Binding response (``stun``). Neither goes to the driver as a
message: each is reported to it as a sign of life of the peer
(``FlowTable.keepalive``, which the liveness pings of ``sipwake.proxy.qualify``
count). Datagrams over the size limit are dropped.

Responses and requests leave from the listener socket, so a client's
NAT binding (RFC 3581 §4) sees the address it sent to.

The socket is read directly from the event loop's reader callback rather than
through an asyncio datagram transport: each wake-up reads up to ``READ_BATCH``
datagrams, so under load one pass of the loop serves many messages instead of
one. The datagrams this listener sends while it hands on such a batch are held
and leave together once the batch is handled, each with one ``sendto``
(queued, in order, only when the kernel's buffer is full): the kernel's work
and the handling alternate per batch rather than per message, which under load
takes about half the system time and runs the Python code with warmer caches
(README, "Speed"). At low load a batch is one datagram and nothing waits.
A ``sendto`` that fails in the kernel after the batch is logged; the
transaction's retransmissions and timeouts cover it, as they cover a datagram
lost on the way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
from typing import Any

from sipwake.sip.peer import Peer
from sipwake.transport.common import FlowTable, ListenerConfig, LocalAddr
from sipwake.transport.stun import binding_request, binding_response

__all__ = ["UdpEndpoint", "open_udp"]

logger = logging.getLogger("sipwake.transport")

#: Bytes asked for each UDP socket's receive and send buffers.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Datagrams read per wake-up of the loop (then other sockets and timers get their turn).
READ_BATCH = 64
#: Largest datagram read whole (the IPv4 UDP payload limit is 65,507 bytes); anything
#: longer is over every size limit anyway.
_READ_SIZE = 65536
#: Datagrams waiting for room in the kernel's send buffer before new ones are dropped.
SEND_QUEUE_LIMIT = 10_000
#: Peers kept for source addresses seen (a datagram from a known address reuses its Peer).
_PEERS_KEPT = 4096


class UdpEndpoint:
    """One bound UDP socket, read and written from the event loop."""

    def __init__(self, table: FlowTable, sock: socket.socket) -> None:
        self._table = table
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self.family = sock.family
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._peers: dict[tuple[Any, ...], Peer] = {}
        self._queue: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self._closed = False
        #: While a batch is handled: the datagrams it sends, to leave after it.
        self._held: list[tuple[bytes, tuple[str, int]]] | None = None
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # Bursts (a registration storm, a benchmark) must queue, not drop: ask for 4 MiB;
            # the kernel caps it at net.core.rmem_max / wmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        try:
            self._inode = os.fstat(sock.fileno()).st_ino
            self._rcvbuf = max(int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)), 1)
        except OSError:
            self._inode, self._rcvbuf = 0, 1
        host, port = sock.getsockname()[:2]
        self.local = LocalAddr(transport="udp", host=host, port=port)
        self._loop.add_reader(sock.fileno(), self._read_ready)

    # -- receiving ------------------------------------------------------------------
    def _read_ready(self) -> None:
        batch = self._read_batch()
        if not batch:
            return
        held: list[tuple[bytes, tuple[str, int]]] = []
        self._held = held
        try:
            for data, addr in batch:
                if self._closed:
                    return
                self._datagram(data, addr)
        finally:
            self._held = None
            if held and not self._closed:
                self._send_held(held)

    def _read_batch(self) -> list[tuple[bytes, tuple[Any, ...]]]:
        """Up to ``READ_BATCH`` datagrams waiting in the socket, with their sources."""
        recv = self._sock.recvfrom_into
        view = self._view
        batch: list[tuple[bytes, tuple[Any, ...]]] = []
        for _ in range(READ_BATCH):
            try:
                size, addr = recv(view)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error for an earlier datagram: nothing to do
                logger.debug("UDP %s: %s", self.local, exc)
                continue
            batch.append((bytes(view[:size]), addr))
        return batch

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= _PEERS_KEPT:
                self._peers.clear()
            peer = Peer(transport="udp", host=str(addr[0]), port=int(addr[1]))
            self._peers[addr] = peer
        if len(data) > self._table.limits.max_message:
            self._table.count_dropped()
            logger.warning("dropped a %d-byte datagram from %s: over the limit", len(data), peer)
            return
        # A start line begins with a letter: anything lower may be a keep-alive.
        if (not data or data[0] < 0x40) and self._keepalive(data, peer):
            return
        self._table.deliver(data, peer, self.local)

    def _keepalive(self, data: bytes, peer: Peer) -> bool:
        """Whether ``data`` is a keep-alive: CRLF, or a STUN Binding request (answered)."""
        if not data.strip(b"\r\n"):
            self._table.keepalive(peer, self.local)
            return True
        transaction_id = binding_request(data)
        if transaction_id is None:
            return False  # the parser will say what is wrong with it
        response = binding_response(transaction_id, peer.host, peer.port)
        if response is not None:
            self.send(response, peer.host, peer.port)
        self._table.keepalive(peer, self.local)
        return True

    # -- sending --------------------------------------------------------------------
    def send(self, data: bytes, host: str, port: int) -> bool:
        """Send one datagram (False when the endpoint is closed or the kernel refuses it)."""
        if self._closed:
            return False
        held = self._held
        if held is not None:  # handling a batch: leave with the others after it
            if len(held) + len(self._queue) >= SEND_QUEUE_LIMIT:
                self._table.count_dropped()
                return False
            held.append((data, (host, port)))
            return True
        return self._send_now(data, (host, port))

    def _send_now(self, data: bytes, addr: tuple[str, int]) -> bool:
        if self._queue:  # keep the order: behind what already waits
            return self._enqueue(data, addr)
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._loop.add_writer(self._sock.fileno(), self._write_ready)
            return self._enqueue(data, addr)
        except OSError as exc:
            logger.debug("UDP %s: could not send to %s:%d: %s", self.local, *addr, exc)
            return False
        return True

    def _send_held(self, held: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Send what a batch produced, in order; nobody waits on the outcome, so a datagram
        the kernel refuses is logged here."""
        for data, addr in held:
            if not self._send_now(data, addr):
                logger.info("UDP %s: could not send to %s:%d", self.local, *addr)

    def _enqueue(self, data: bytes, addr: tuple[str, int]) -> bool:
        if len(self._queue) >= SEND_QUEUE_LIMIT:
            self._table.count_dropped()
            return False
        self._queue.append((data, addr))
        return True

    def _write_ready(self) -> None:
        queue = self._queue
        while queue:
            data, addr = queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("UDP %s: could not send to %s: %s", self.local, addr, exc)
            queue.popleft()
        self._loop.remove_writer(self._sock.fileno())

    # -- state ------------------------------------------------------------------------
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
        if self._closed:
            return
        self._closed = True
        fd = self._sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._queue.clear()
        self._sock.close()


async def open_udp(config: ListenerConfig, table: FlowTable) -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        config.host, config.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return UdpEndpoint(table, sock)
    raise error or OSError(f"cannot bind UDP {config.host}:{config.port}")
