"""What the four transaction machines share: a key, armed timers and the table driver.

Each machine (``client.py``, ``server.py``) is a table ``(state, input) ->
(handler, next_state)`` and the inputs its timers and the network feed it;
``Transaction.process`` is the one driver for all four: it looks the pair up,
runs the handler (which returns outputs and arms or disarms timers), then
enters the next state; entering Terminated disarms every timer. A timer armed
with a zero delay (D, I, J, K over reliable transports) fires in the same
call, so the transaction terminates at once as RFC 3261 §17 says.

A pair missing from a table is a local error (``LocalProtocolError``: the
layer or the TU asked for something the RFC does not allow) unless the input
comes from the network: those are absorbed, since peer errors never raise.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from sipwake.errors import LocalProtocolError
from sipwake.sip.message import Request, Response
from sipwake.sip.peer import Peer
from sipwake.transaction.events import Output
from sipwake.transaction.keys import TransactionKey
from sipwake.transaction.timers import Timer, TimerConfig

__all__ = ["Handler", "Transaction", "lookup", "need_request", "need_response"]

StateT = TypeVar("StateT", bound=enum.Enum)
InputT = TypeVar("InputT", bound=enum.Enum)
EntryT = TypeVar("EntryT")

#: Timer name → the timer, and its place in ``Timer`` (ties between equal deadlines).
_TIMERS = {timer.name: timer for timer in Timer}
_TIMER_ORDER = {timer.name: index for index, timer in enumerate(Timer)}
#: Timer → its name (``Timer.name`` is a Python-level property: slow on every message).
_NAMES = {timer: timer.name for timer in Timer}

#: A table handler: ``(transaction, now, message, source) -> outputs`` (``source`` is the
#: peer a server transaction's request or ACK came from; client handlers ignore it).
Handler = Callable[[Any, float, Request | Response | None, Peer | None], list[Output]]


def lookup(
    table: Mapping[tuple[StateT, InputT], EntryT],
    state: StateT,
    input_: InputT,
    remote: frozenset[InputT],
    owner: object,
) -> EntryT | None:
    """The table entry for ``(state, input_)``; ``None`` when a remote input is absorbed.

    Raises ``LocalProtocolError`` for a local input the table does not allow.
    """
    entry = table.get((state, input_))
    if entry is None and input_ not in remote:
        raise LocalProtocolError(
            f"{owner!r}: input {input_.name} not allowed in state {state.name}"
        )
    return entry


def need_response(message: Request | Response | None, input_: enum.Enum) -> Response:
    """The response an input carries (a local error if the caller left it out)."""
    if not isinstance(message, Response):
        raise LocalProtocolError(f"input {input_.name} needs a Response, got {message!r}")
    return message


def need_request(message: Request | Response | None, input_: enum.Enum) -> Request:
    """The request an input carries (a local error if the caller left it out)."""
    if not isinstance(message, Request):
        raise LocalProtocolError(f"input {input_.name} needs a Request, got {message!r}")
    return message


class Transaction(Generic[StateT, InputT]):
    """A transaction's identity, timers and state, driven through its machine's table.

    Each machine sets the class attributes below. ``armed`` maps the name of each
    armed timer to its absolute deadline (``deadlines`` is the same keyed by
    ``Timer``). ``order`` is the creation order the layer assigns, used to break
    deadline ties; ``scheduled`` (the deadline the layer has queued), ``settled``
    and ``removed`` are the layer's bookkeeping.

    A settled transaction lingers up to 32 s (Timers D, J, L, M) to absorb
    retransmissions, tens of thousands of them under load, and every object it
    holds that the garbage collector tracks is walked by each full collection.
    So it keeps only what its state still reads: each machine drops the parsed
    messages it no longer needs, keeps what it may re-send as bytes, and the
    timers here are kept in containers of atomic values (a dict keyed by timer
    name, a tuple), which the collector does not track.
    """

    kind = "transaction"
    #: ``(state, input) -> (handler, next state)``: the RFC figure.
    table: ClassVar[Mapping[tuple[Any, Any], tuple[Handler, Any]]]
    #: Inputs that come from the network: a pair missing from the table absorbs them.
    remote_inputs: ClassVar[frozenset[Any]]
    #: The input each timer feeds the machine when it fires.
    timer_inputs: ClassVar[Mapping[Timer, Any]]
    terminated_state: ClassVar[Any]
    #: The states in which the final response has been sent or received: the transaction
    #: only lingers to absorb retransmissions (it no longer counts as pending).
    settled_states: ClassVar[frozenset[Any]] = frozenset()

    state: StateT

    def __init__(self, *, key: TransactionKey, config: TimerConfig, reliable: bool) -> None:
        self.key = key
        self.config = config
        self.reliable = reliable
        self.order = 0
        self.scheduled: float | None = None
        self.settled = False
        self.removed = False
        #: Armed timers: ``Timer.name`` → absolute deadline.
        self.armed: dict[str, float] = {}
        #: Timers armed with a zero delay, to fire before ``process`` returns.
        self._immediate: tuple[Timer, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.kind} {self.key}>"

    @property
    def terminated(self) -> bool:
        return self.state is self.terminated_state

    def process(
        self,
        input_: InputT,
        now: float,
        message: Request | Response | None = None,
        source: Peer | None = None,
    ) -> list[Output]:
        """Apply one input (see the machine's docstring); absorbed remote inputs give ``[]``."""
        entry = self.table.get((self.state, input_))
        if entry is None:
            # Raises for a local input; a remote one is absorbed.
            lookup(self.table, self.state, input_, self.remote_inputs, self)
            return []
        handler, next_state = entry
        outputs = handler(self, now, message, source)
        self.state = next_state
        if next_state is self.terminated_state:
            self._clear_timers()
        elif self._immediate:
            outputs += self._drain(now)
        return outputs

    def end(self) -> None:
        """Terminate now, with no output: the layer ends a settled transaction early."""
        self.state = self.terminated_state
        self._clear_timers()

    def on_timer(self, now: float) -> list[Output]:
        """Fire the earliest timer due at ``now``, if any."""
        timer = self._pop_due(now)
        return [] if timer is None else self.process(self.timer_inputs[timer], now)

    @property
    def deadlines(self) -> dict[Timer, float]:
        """Each armed timer and its absolute deadline (a new dict)."""
        return {_TIMERS[name]: deadline for name, deadline in self.armed.items()}

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or ``None`` when no timer runs."""
        return min(self.armed.values(), default=None)

    def _drain(self, now: float) -> list[Output]:
        """Fire the timers armed with a zero delay, in the order they were armed."""
        outputs: list[Output] = []
        while self._immediate:
            timer = self._immediate[0]
            self._immediate = self._immediate[1:]
            outputs += self.process(self.timer_inputs[timer], now)
        return outputs

    def _arm(self, timer: Timer, delay: float, now: float) -> None:
        """Start ``timer`` to fire ``delay`` seconds after ``now`` (at once if zero)."""
        if delay <= 0:
            self.armed.pop(_NAMES[timer], None)
            self._immediate += (timer,)
        else:
            self.armed[_NAMES[timer]] = now + delay

    def _disarm(self, *timers: Timer) -> None:
        for timer in timers:
            self.armed.pop(_NAMES[timer], None)

    def _clear_timers(self) -> None:
        self.armed.clear()
        self._immediate = ()

    def _pop_due(self, now: float) -> Timer | None:
        """Remove and return the earliest timer due at ``now`` (ties in ``Timer`` order)."""
        armed = self.armed
        if len(armed) == 1:  # the usual case: no tie to break
            ((name, deadline),) = armed.items()
        elif armed:
            deadline, _, name = min((d, _TIMER_ORDER[n], n) for n, d in armed.items())
        else:
            return None
        if deadline > now:
            return None
        del armed[name]
        return _TIMERS[name]

    def _absorb(
        self, now: float, message: Request | Response | None, source: Peer | None
    ) -> list[Output]:
        return []
