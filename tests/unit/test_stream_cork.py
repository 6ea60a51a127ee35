"""Corking: what one driver step sends over a byte stream leaves in one write."""

from __future__ import annotations

import asyncio

from sipwake.transport.common import FlowTable, LocalAddr, TransportLimits
from sipwake.transport.tcp import StreamFlow

LOCAL = LocalAddr(transport="tcp", host="127.0.0.1", port=5060)


class RecordingTransport(asyncio.Transport):
    """Keeps each ``write`` call (a stand-in for the socket)."""

    def __init__(self) -> None:
        super().__init__(extra={"peername": ("127.0.0.1", 40000)})
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def _flow(table: FlowTable) -> tuple[StreamFlow, RecordingTransport]:
    flow = StreamFlow(table, LOCAL, inbound=True)
    transport = RecordingTransport()
    flow.connection_made(transport)
    return flow, transport


def _table() -> FlowTable:
    return FlowTable(TransportLimits(), lambda data, peer, local: None, None)


async def test_messages_of_one_step_leave_in_one_write_per_flow() -> None:
    table = _table()
    (a, ta), (b, tb) = _flow(table), _flow(table)
    table.cork()
    assert a.send(b"200 OK;")
    assert b.send(b"OPTIONS;")
    assert a.send(b"INVITE;")
    assert ta.writes == []
    assert tb.writes == []
    table.uncork()
    assert ta.writes == [b"200 OK;INVITE;"]
    assert tb.writes == [b"OPTIONS;"]
    assert a.send(b"BYE;")  # uncorked: at once
    assert ta.writes[-1] == b"BYE;"


async def test_closing_a_corked_flow_writes_what_it_held_first() -> None:
    table = _table()
    flow, transport = _flow(table)
    table.cork()
    assert flow.send(b"403 Forbidden;")
    flow.close()
    assert transport.writes == [b"403 Forbidden;"]
    assert transport.closed
    table.uncork()
    assert transport.writes == [b"403 Forbidden;"]
    assert not flow.send(b"late;")


async def test_an_aborted_flow_drops_what_it_held() -> None:
    table = _table()
    flow, transport = _flow(table)
    table.cork()
    assert flow.send(b"lost;")
    flow.abort()
    table.uncork()
    assert transport.writes == []
    assert transport.aborted
