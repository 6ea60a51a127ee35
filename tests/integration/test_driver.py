"""The driver on the running loop, around a stand-in node: what it hands the node and the
order in which it performs the node's outputs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from sipwake.node import Dropped, NodeOutput, PersistChanges, SendBytes
from sipwake.proxy.routing import LocalAddress
from sipwake.registrar.events import RegistrarEvent
from sipwake.sip.grammar import COMPILED
from sipwake.sip.peer import Peer
from sipwake.transport.common import LocalAddr
from sipwake.transport.driver import Driver

# The driver is handed a stand-in node: the compiled driver checks that it is a Node, so
# these run on the interpreted source (the compiled build is made from the same source;
# the server tests exercise the compiled driver with a real node).
pytestmark = [
    pytest.mark.timeout(5),
    pytest.mark.skipif(COMPILED, reason="a stand-in node is refused when compiled"),
]

PHONE = Peer(transport="udp", host="127.0.0.1", port=5070)
UDP = LocalAddr(transport="udp", host="127.0.0.1", port=5060)
TCP = LocalAddr(transport="tcp", host="127.0.0.1", port=5060)


@dataclass
class Layer:
    """What the driver reads of the transaction layer (its early endings, for the log)."""

    ended_early: int = 0
    pending: int = 0

    def __len__(self) -> int:
        return 0


@dataclass
class StandIn:
    """Answers each message with the outputs queued for it; records what it was given."""

    load: None = None
    layer: Layer = field(default_factory=Layer)
    answers: list[list[NodeOutput]] = field(default_factory=list)
    stored: dict[int, list[NodeOutput]] = field(default_factory=dict)
    listeners: list[LocalAddress] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def receive(
        self, data: bytes, source: Peer, listener: LocalAddress, now: float
    ) -> list[NodeOutput]:
        self.listeners.append(listener)
        return self.answers.pop(0) if self.answers else []

    def changes_stored(self, token: int, ok: bool, now: float) -> list[NodeOutput]:
        self.log.append(f"stored {token} {ok}")
        return self.stored.pop(token, [])

    deadlines: list[float] = field(default_factory=list)  # pending, earliest first
    timeouts: list[float] = field(default_factory=list)  # when handle_timeout ran

    def next_deadline(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None

    def handle_timeout(self, now: float) -> list[NodeOutput]:
        self.timeouts.append(now)
        self.deadlines = [d for d in self.deadlines if d > now]
        return []


@dataclass
class Recorder:
    log: list[str]

    def send(self, data: bytes, peer: Peer) -> bool:
        self.log.append(f"send {data.decode()}")
        return True

    def cork(self) -> None:
        self.log.append("cork")

    def uncork(self) -> None:
        self.log.append("uncork")

    def apply(self, events: tuple[RegistrarEvent, ...], now: float) -> None:
        self.log.append("apply")


async def test_each_message_names_the_listener_it_arrived_on() -> None:
    node = StandIn()
    driver = Driver(node, shed_load=False)  # type: ignore[arg-type]
    equal_udp = LocalAddr(transport="udp", host="127.0.0.1", port=5060)  # another object
    arrivals = [UDP, UDP, TCP, UDP, equal_udp, equal_udp, TCP]
    for local in arrivals:
        driver.on_bytes(b"x", PHONE, local)
    assert node.listeners == [
        LocalAddress(transport=a.transport, host=a.host, port=a.port) for a in arrivals
    ]
    assert node.listeners[0] is node.listeners[4]  # one LocalAddress per listener
    driver.close()


async def test_outputs_are_performed_in_order_inside_one_cork() -> None:
    node = StandIn()
    recorder = Recorder(node.log)
    driver = Driver(node, sink=recorder, shed_load=False)  # type: ignore[arg-type]
    driver.sender = recorder
    node.answers.append(
        [
            SendBytes(data=b"1", peer=PHONE),
            PersistChanges(events=(), token=7),
            Dropped(reason="test"),
            SendBytes(data=b"3", peer=PHONE),
        ]
    )
    node.stored[7] = [SendBytes(data=b"2", peer=PHONE)]
    driver.on_bytes(b"x", PHONE, UDP)
    assert node.log == ["cork", "send 1", "apply", "stored 7 True", "send 2", "send 3", "uncork"]
    assert driver.dropped == 1
    driver.close()


async def message_then(driver: Driver, node: StandIn, deadlines: list[float]) -> None:
    """One message after which the node's pending deadlines are ``deadlines``; then the
    loop turns once, as after a batch of datagrams."""
    node.deadlines = deadlines
    driver.on_bytes(b"x", PHONE, UDP)
    await asyncio.sleep(0)


async def test_a_deadline_moving_later_keeps_the_armed_wake_up() -> None:
    """A deadline that moves later (a busy layer ending its oldest settled transaction on
    each message) keeps the timer armed; an earlier one re-arms it; every deadline is
    handled when due, none before."""
    loop = asyncio.get_running_loop()
    node = StandIn()
    driver = Driver(node, shed_load=False)  # type: ignore[arg-type]
    start = loop.time()
    await message_then(driver, node, [start + 0.05])
    armed = driver._timer
    assert armed is not None
    for k in range(1, 20):  # the earliest deadline moves later on every message
        await message_then(driver, node, [start + 0.05 + k * 0.01])
        assert driver._timer is armed
    await message_then(driver, node, [start + 0.02, start + 0.25])  # an earlier one re-arms
    assert driver._timer is not armed
    assert armed.cancelled()
    await asyncio.sleep(0.4)
    assert node.deadlines == []
    assert len(node.timeouts) == 2
    assert start + 0.02 <= node.timeouts[0] < start + 0.2
    assert start + 0.25 <= node.timeouts[1] < start + 0.4
    driver.close()


async def test_an_early_wake_up_finds_nothing_due_and_arms_the_next() -> None:
    loop = asyncio.get_running_loop()
    node = StandIn()
    driver = Driver(node, shed_load=False)  # type: ignore[arg-type]
    start = loop.time()
    await message_then(driver, node, [start + 0.02])
    # Moved later: the wake-up at +0.02 comes early.
    await message_then(driver, node, [start + 0.1])
    await asyncio.sleep(0.06)
    assert len(node.timeouts) == 1
    assert node.deadlines == [start + 0.1]  # nothing was due
    assert driver._timer is not None  # armed for the next
    await asyncio.sleep(0.1)
    assert len(node.timeouts) == 2
    assert node.timeouts[1] >= start + 0.1
    assert node.deadlines == []
    driver.close()


async def test_the_timer_is_set_once_after_the_messages_of_a_loop_iteration() -> None:
    loop = asyncio.get_running_loop()
    node = StandIn()
    asked = 0

    def next_deadline() -> float | None:
        nonlocal asked
        asked += 1
        return start + 0.05

    node.next_deadline = next_deadline  # type: ignore[method-assign]
    driver = Driver(node, shed_load=False)  # type: ignore[arg-type]
    start = loop.time()
    for _ in range(10):  # one batch of datagrams
        driver.on_bytes(b"x", PHONE, UDP)
    assert driver._timer is None
    assert asked == 0
    await asyncio.sleep(0)
    assert asked == 1
    timer = driver._timer
    assert timer is not None
    assert timer.when() == start + 0.05
    driver.close()
    assert timer.cancelled()
