"""Every (state, input) pair of every transaction table (h2's test_state_machines.py).

A pair in the table moves the machine to the table's next state (or on to
Terminated when that state's wait timer is zero over a reliable transport); a
missing pair either raises ``LocalProtocolError`` (local inputs) or is absorbed
(remote inputs), leaving the state as it was. Nothing else may be raised.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.errors import LocalProtocolError
from sipwake.ids import SeededIds
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction import Timer, TimerConfig, add_via, build_ack, build_cancel
from sipwake.transaction.client import (
    ICT_REMOTE_INPUTS,
    ICT_TABLE,
    NICT_REMOTE_INPUTS,
    NICT_TABLE,
    IctInput,
    IctState,
    InviteClientTransaction,
    NictInput,
    NictState,
    NonInviteClientTransaction,
)
from sipwake.transaction.keys import client_key, server_key
from sipwake.transaction.server import (
    IST_REMOTE_INPUTS,
    IST_TABLE,
    NIST_REMOTE_INPUTS,
    NIST_TABLE,
    InviteServerTransaction,
    IstInput,
    IstState,
    NistInput,
    NistState,
    NonInviteServerTransaction,
)

UDP = Peer(transport="udp", host="192.0.2.20", port=5060)
TCP = Peer(transport="tcp", host="192.0.2.20", port=5060, flow=1)

REQUEST = (
    b"METHOD sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKtable;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@biloxi.example.com>\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=a\r\n"
    b"Call-ID: table@198.51.100.7\r\n"
    b"CSeq: 1 METHOD\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def request(method: str) -> Request:
    msg = parse_message(REQUEST.replace(b"METHOD", method.encode()))
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag="t")


@dataclass(frozen=True)
class Machine:
    """One table under test: how to build the machine and what message each input carries."""

    name: str
    table: Mapping[tuple[Any, Any], tuple[Callable[..., Any], Any]]
    states: type[enum.Enum]
    inputs: type[enum.Enum]
    remote: frozenset[Any]
    terminated: enum.Enum
    #: The state whose wait timer (D, K, I, J) is zero over a reliable transport.
    waiting: enum.Enum
    build: Callable[[Peer], Any]
    message: Callable[[Any, enum.Enum], Request | Response | None]


def build_ict(peer: Peer) -> InviteClientTransaction:
    req = request("INVITE")
    add_via(req, transport=peer.transport, host="192.0.2.1", port=5060, ids=SeededIds(0))
    return InviteClientTransaction(
        key=client_key(req), request=req, peer=peer, config=TimerConfig()
    )


def build_nict(peer: Peer) -> NonInviteClientTransaction:
    req = request("OPTIONS")
    add_via(req, transport=peer.transport, host="192.0.2.1", port=5060, ids=SeededIds(0))
    return NonInviteClientTransaction(
        key=client_key(req), request=req, peer=peer, config=TimerConfig()
    )


def build_ist(peer: Peer) -> InviteServerTransaction:
    req = request("INVITE")
    return InviteServerTransaction(
        key=server_key(req), request=req, source=peer, config=TimerConfig()
    )


def build_nist(peer: Peer) -> NonInviteServerTransaction:
    req = request("REGISTER")
    return NonInviteServerTransaction(
        key=server_key(req), request=req, source=peer, config=TimerConfig()
    )


def ict_message(txn: InviteClientTransaction, input_: enum.Enum) -> Request | Response | None:
    statuses = {IctInput.RECV_1XX: 180, IctInput.RECV_2XX: 200, IctInput.RECV_300_699: 486}
    # txn.request is released once a final response arrives; this is the same request.
    invite = txn.request or request("INVITE")
    if input_ is IctInput.CANCEL:
        return build_cancel(invite)
    return response(invite, statuses[input_]) if input_ in statuses else None


def nict_message(txn: NonInviteClientTransaction, input_: enum.Enum) -> Request | Response | None:
    statuses = {NictInput.RECV_1XX: 100, NictInput.RECV_200_699: 200}
    req = txn.request or request("OPTIONS")  # released once a final response arrives
    return response(req, statuses[input_]) if input_ in statuses else None


def ist_message(txn: InviteServerTransaction, input_: enum.Enum) -> Request | Response | None:
    statuses = {IstInput.SEND_1XX: 180, IstInput.SEND_2XX: 200, IstInput.SEND_300_699: 486}
    # txn.request is released once a final response is sent; this is the same request.
    invite = request("INVITE")
    if input_ is IstInput.RECV_INVITE:
        return invite
    if input_ is IstInput.RECV_ACK:
        return build_ack(invite, response(invite, 486))
    return response(invite, statuses[input_]) if input_ in statuses else None


def nist_message(txn: NonInviteServerTransaction, input_: enum.Enum) -> Request | Response | None:
    statuses = {NistInput.SEND_1XX: 180, NistInput.SEND_200_699: 200}
    if input_ is NistInput.RECV_REQUEST:
        return request("REGISTER")
    # txn.request is released once a final response is sent; this is the same request.
    return response(request("REGISTER"), statuses[input_]) if input_ in statuses else None


MACHINES = [
    Machine(
        "ICT",
        ICT_TABLE,
        IctState,
        IctInput,
        ICT_REMOTE_INPUTS,
        IctState.TERMINATED,
        IctState.COMPLETED,
        build_ict,
        ict_message,
    ),
    Machine(
        "NICT",
        NICT_TABLE,
        NictState,
        NictInput,
        NICT_REMOTE_INPUTS,
        NictState.TERMINATED,
        NictState.COMPLETED,
        build_nict,
        nict_message,
    ),
    Machine(
        "IST",
        IST_TABLE,
        IstState,
        IstInput,
        IST_REMOTE_INPUTS,
        IstState.TERMINATED,
        IstState.CONFIRMED,
        build_ist,
        ist_message,
    ),
    Machine(
        "NIST",
        NIST_TABLE,
        NistState,
        NistInput,
        NIST_REMOTE_INPUTS,
        NistState.TERMINATED,
        NistState.COMPLETED,
        build_nist,
        nist_message,
    ),
]

PAIRS = [
    pytest.param(machine, state, input_, peer, id=f"{machine.name}-{state.name}-{input_.name}-{p}")
    for machine in MACHINES
    for state, input_ in itertools.product(machine.states, machine.inputs)
    for p, peer in (("udp", UDP), ("tcp", TCP))
]


def expected_state(machine: Machine, state: enum.Enum, input_: enum.Enum, peer: Peer) -> Any:
    _, next_state = machine.table[(state, input_)]
    if peer.reliable and next_state is machine.waiting and state is not machine.waiting:
        return machine.terminated  # the zero wait timer fired in the same call
    return next_state


def check_step(machine: Machine, txn: Any, input_: enum.Enum, peer: Peer, now: float) -> None:
    """Apply one input to ``txn`` and hold it to the table."""
    state = txn.state
    message = machine.message(txn, input_)
    try:
        outputs = txn.process(input_, now, message)
    except LocalProtocolError:
        assert (state, input_) not in machine.table
        assert input_ not in machine.remote
        assert txn.state is state
        return
    assert isinstance(outputs, list)
    if (state, input_) in machine.table:
        assert txn.state is expected_state(machine, state, input_, peer)
    else:
        assert input_ in machine.remote
        assert outputs == []
        assert txn.state is state
    if txn.state is machine.terminated:
        assert txn.next_deadline() is None


@pytest.mark.parametrize(("machine", "state", "input_", "peer"), PAIRS)
def test_every_pair_transitions_or_raises(
    machine: Machine, state: enum.Enum, input_: enum.Enum, peer: Peer
) -> None:
    txn = machine.build(peer)
    txn.state = state
    check_step(machine, txn, input_, peer, 1.0)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_terminated_has_no_way_out(machine: Machine) -> None:
    assert not [pair for pair in machine.table if pair[0] is machine.terminated]


TICK = "tick"


@settings(max_examples=300, deadline=None)
@given(machine=st.sampled_from(MACHINES), reliable=st.booleans(), data=st.data())
def test_random_runs_follow_the_table(
    machine: Machine, reliable: bool, data: st.DataObject
) -> None:
    """Messages and TU calls in any order, with time moved to each next deadline: every
    step follows the table, and an armed timer always has an entry in the current state."""
    peer = TCP if reliable else UDP
    txn = machine.build(peer)
    now = 0.0
    txn.start(now)
    actions: list[enum.Enum | str] = [i for i in machine.inputs if not i.name.startswith("TIMER_")]
    for action in data.draw(st.lists(st.sampled_from([*actions, TICK]), max_size=16)):
        if isinstance(action, enum.Enum):
            now += 0.01
            check_step(machine, txn, action, peer, now)
            continue
        deadline = txn.next_deadline()
        if deadline is None:
            continue
        now = max(now, deadline)
        state = txn.state
        deadlines = txn.deadlines
        timer = min(deadlines, key=lambda t: (deadlines[t], list(Timer).index(t)))
        input_ = machine.inputs[f"TIMER_{timer.name}"]
        txn.on_timer(now)  # never a LocalProtocolError: an armed timer belongs to the state
        assert txn.state is expected_state(machine, state, input_, peer)
    if txn.state is machine.terminated:
        assert txn.next_deadline() is None
