"""The driver on the running loop, around a stand-in node: what it hands the node and the
order in which it performs the node's outputs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
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

    def changes_stored(
        self, token: int, ok: bool, now: float, *, busy: bool = False
    ) -> list[NodeOutput]:
        self.log.append(f"stored {token} {ok}" + (" busy" if busy else ""))
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


@dataclass
class HeldSink:
    """A pipelined sink whose commits finish when the test says: each batch waits in a
    thread on its own ``threading.Event``, then ``done`` is called on the loop's thread."""

    log: list[str]
    loop: asyncio.AbstractEventLoop
    fail: set[int] = field(default_factory=set)  # batch numbers (from 1) that fail
    batches: list[tuple[RegistrarEvent, ...]] = field(default_factory=list)
    releases: list[threading.Event] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def submit(
        self, events: tuple[RegistrarEvent, ...], now: float, done: Callable[[bool], None]
    ) -> None:
        self.batches.append(events)
        number = len(self.batches)
        self.log.append(f"submit {number}: {len(events)}")
        release = threading.Event()
        self.releases.append(release)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

        def commit() -> None:
            release.wait(5)
            self.loop.call_soon_threadsafe(self._finish, number, done)

        threading.Thread(target=commit, daemon=True).start()

    def _finish(self, number: int, done: Callable[[bool], None]) -> None:
        self.in_flight -= 1
        ok = number not in self.fail
        self.log.append(f"committed {number} {ok}")
        done(ok)

    async def release(self, number: int) -> None:
        """Let batch ``number`` finish, and wait until the loop heard of it."""
        self.releases[number - 1].set()
        for _ in range(500):
            if any(line.startswith(f"committed {number} ") for line in self.log):
                return
            await asyncio.sleep(0.002)
        raise AssertionError(f"batch {number} did not finish")


def register_turn(driver: Driver, node: StandIn, tokens: range) -> None:
    """REGISTERs read in one loop turn, each answered ``200 for N`` once stored."""
    for token in tokens:
        node.answers.append([PersistChanges(events=registered(f"u{token}"), token=token)])
        node.stored[token] = [SendBytes(data=f"200 for {token}".encode(), peer=PHONE)]
        driver.on_bytes(b"REGISTER", PHONE, UDP)


def lines(log: list[str], *prefixes: str) -> list[str]:
    return [line for line in log if line.startswith(prefixes)]


async def test_a_pipelined_commit_holds_the_200s_and_later_turns_ride_the_next_batch() -> None:
    """RFC 3261 §10.3: no 200 before its batch is durable. While one batch commits the
    loop goes on: the REGISTERs of the next turns gather into one next batch, handed over
    when the first is committed; batches commit in order, one at a time."""
    loop = asyncio.get_running_loop()
    node = StandIn()
    sink = HeldSink(node.log, loop)
    driver = Driver(node, sink=sink, shed_load=False)  # type: ignore[arg-type]
    driver.sender = Recorder(node.log)
    assert driver.pipelined
    register_turn(driver, node, range(1, 4))
    await asyncio.sleep(0)
    assert lines(node.log, "submit") == ["submit 1: 3"]
    for first in (4, 6):  # two more turns while batch 1 commits
        register_turn(driver, node, range(first, first + 2))
        await asyncio.sleep(0.01)
    assert lines(node.log, "submit", "stored", "send") == ["submit 1: 3"]
    assert driver.backlog == 3 + 4
    await sink.release(1)
    # Batch 2 (the two turns) went to the sink before batch 1's 200s went out.
    assert lines(node.log, "submit", "committed", "stored", "send") == [
        "submit 1: 3",
        "committed 1 True",
        "submit 2: 4",
        *[f"stored {t} True" for t in (1, 2, 3)],
        *[f"send 200 for {t}" for t in (1, 2, 3)],
    ]
    assert [e.binding.aor for e in sink.batches[1]] == [f"u{t}" for t in range(4, 8)]
    await sink.release(2)
    assert lines(node.log, "stored") == [f"stored {t} True" for t in range(1, 8)]
    assert lines(node.log, "send") == [f"send 200 for {t}" for t in range(1, 8)]
    assert sink.most_in_flight == 1
    assert driver.commits == 2
    assert driver.backlog == 0
    driver.close()


async def test_a_failed_pipelined_batch_fails_those_gathered_behind_it_newest_first() -> None:
    """The registrar already holds the changes of the REGISTERs gathered behind a batch
    (they may have built on it): when it fails, they are undone too, from the last one
    back, and then the failed batch's (RFC 3261 §10.3 step 7: all or nothing)."""
    loop = asyncio.get_running_loop()
    node = StandIn()
    sink = HeldSink(node.log, loop, fail={1})
    driver = Driver(node, sink=sink, shed_load=False)  # type: ignore[arg-type]
    register_turn(driver, node, range(1, 3))
    await asyncio.sleep(0)
    register_turn(driver, node, range(3, 5))
    await asyncio.sleep(0)
    await sink.release(1)
    assert lines(node.log, "submit", "committed", "stored") == [
        "submit 1: 2",
        "committed 1 False",
        "stored 4 False",
        "stored 3 False",
        "stored 2 False",
        "stored 1 False",
    ]
    assert driver.backlog == 0
    # The next REGISTER gets a batch of its own, and its 200.
    register_turn(driver, node, range(5, 6))
    await asyncio.sleep(0)
    await sink.release(2)
    assert lines(node.log, "submit", "stored")[-2:] == ["submit 2: 1", "stored 5 True"]
    driver.close()


async def test_a_full_backlog_answers_new_registers_503_and_keeps_expiries() -> None:
    """Memory stays bounded when the disk falls behind: with ``max_backlog`` changes
    waiting, a new REGISTER is undone and answered 503 at once; a change nobody waits
    for (an expiry) still gathers; once the commit is done, REGISTERs are taken again."""
    loop = asyncio.get_running_loop()
    node = StandIn()
    sink = HeldSink(node.log, loop)
    driver = Driver(node, sink=sink, shed_load=False, max_backlog=2)  # type: ignore[arg-type]
    register_turn(driver, node, range(1, 2))
    await asyncio.sleep(0)  # batch 1 in flight
    register_turn(driver, node, range(2, 5))
    node.answers.append([PersistChanges(events=registered("expiring"), token=None)])
    driver.on_bytes(b"timer", PHONE, UDP)
    await asyncio.sleep(0)
    assert lines(node.log, "stored") == ["stored 4 False busy"]
    assert driver.refused == 1
    assert driver.backlog == 1 + 3
    await sink.release(1)
    assert [len(b) for b in sink.batches] == [1, 3]
    register_turn(driver, node, range(5, 6))  # room again
    await sink.release(2)
    await asyncio.sleep(0)
    await sink.release(3)
    assert lines(node.log, "stored") == [
        "stored 4 False busy",
        "stored 1 True",
        "stored 2 True",
        "stored 3 True",
        "stored 5 True",
    ]
    driver.close()


async def test_drain_answers_what_gathers_and_what_is_in_flight() -> None:
    loop = asyncio.get_running_loop()
    node = StandIn()
    sink = HeldSink(node.log, loop)
    driver = Driver(node, sink=sink, shed_load=False)  # type: ignore[arg-type]
    register_turn(driver, node, range(1, 2))
    await asyncio.sleep(0)
    register_turn(driver, node, range(2, 3))
    drained = asyncio.ensure_future(driver.drain())
    await asyncio.sleep(0.02)
    assert not drained.done()
    await sink.release(1)
    await sink.release(2)
    assert await drained
    assert lines(node.log, "stored") == ["stored 1 True", "stored 2 True"]
    driver.close()
