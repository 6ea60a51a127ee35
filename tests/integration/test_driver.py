"""The driver on the running loop, around a stand-in node: what it hands the node and the
order in which it performs the node's outputs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from sipwake.node import Dropped, NodeOutput, PersistChanges, SendBytes
from sipwake.proxy.routing import LocalAddress
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import BindingAdded, RegistrarEvent
from sipwake.sip.grammar import COMPILED
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri
from sipwake.store.base import StoreError
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
    """What a message asks for is performed in order; the response that waits for stored
    changes (RFC 3261 §10.3) goes out once they are stored, after the loop's turn."""
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
    assert node.log == ["cork", "send 1", "send 3", "uncork"]
    assert driver.dropped == 1
    await asyncio.sleep(0)
    assert node.log[4:] == ["apply", "stored 7 True", "cork", "send 2", "uncork"]
    driver.close()


def registered(aor: str) -> tuple[RegistrarEvent, ...]:
    binding = Binding(
        binding_id=f"b-{aor}",
        aor=aor,
        contact=SipUri(user="u", host="127.0.0.1", port=5070),
        expires_at=3600.0,
        registered_at=0.0,
        call_id=f"c-{aor}",
        cseq=1,
        source=PHONE,
    )
    return (BindingAdded(binding=binding),)


@dataclass
class CountingSink:
    """Counts transactions; ``fail`` makes the next ones fail."""

    log: list[str]
    fail: bool = False
    batches: list[tuple[RegistrarEvent, ...]] = field(default_factory=list)

    def apply(self, events: tuple[RegistrarEvent, ...], now: float) -> None:
        self.log.append(f"apply {len(events)}")
        if self.fail:
            raise StoreError("disk full")
        self.batches.append(events)


async def test_the_registers_of_one_loop_turn_share_one_commit() -> None:
    """Ten REGISTERs read in one batch: one transaction holding all their changes, and
    each 200 only after it (RFC 3261 §10.3), in the order they came."""
    node = StandIn()
    sink = CountingSink(node.log)
    recorder = Recorder(node.log)
    driver = Driver(node, sink=sink, shed_load=False)  # type: ignore[arg-type]
    driver.sender = recorder
    for token in range(1, 11):
        node.answers.append([PersistChanges(events=registered(f"u{token}"), token=token)])
        node.stored[token] = [SendBytes(data=f"200 for {token}".encode(), peer=PHONE)]
        driver.on_bytes(b"REGISTER", PHONE, UDP)
    assert not any(line.startswith(("apply", "send", "stored")) for line in node.log)
    await asyncio.sleep(0)
    applies = [line for line in node.log if line.startswith("apply")]
    assert applies == ["apply 10"]
    assert driver.commits == 1
    [batch] = sink.batches
    assert [e.binding.aor for e in batch] == [f"u{t}" for t in range(1, 11)]
    after = node.log[node.log.index("apply 10") + 1 :]
    assert [line for line in after if line.startswith("stored")] == [
        f"stored {t} True" for t in range(1, 11)
    ]
    assert [line for line in after if line.startswith("send")] == [
        f"send 200 for {t}" for t in range(1, 11)
    ]
    # The next turn's REGISTER gets a transaction of its own.
    node.answers.append([PersistChanges(events=registered("u11"), token=11)])
    driver.on_bytes(b"REGISTER", PHONE, UDP)
    await asyncio.sleep(0)
    assert driver.commits == 2
    driver.close()


async def test_a_failed_batch_commit_answers_each_register_and_undoes_newest_first() -> None:
    node = StandIn()
    sink = CountingSink(node.log, fail=True)
    driver = Driver(node, sink=sink, shed_load=False)  # type: ignore[arg-type]
    for token in (1, 2, 3):
        node.answers.append([PersistChanges(events=registered(f"u{token}"), token=token)])
        driver.on_bytes(b"REGISTER", PHONE, UDP)
    await asyncio.sleep(0)
    assert node.log == ["apply 3", "stored 3 False", "stored 2 False", "stored 1 False"]
    driver.close()


async def test_close_stores_and_answers_what_is_gathering() -> None:
    node = StandIn()
    sink = CountingSink(node.log)
    driver = Driver(node, sink=sink, shed_load=False)  # type: ignore[arg-type]
    node.answers.append([PersistChanges(events=registered("u1"), token=1)])
    driver.on_bytes(b"REGISTER", PHONE, UDP)
    driver.close()
    assert node.log == ["apply 1", "stored 1 True"]
    await asyncio.sleep(0)
    assert driver.commits == 1


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
