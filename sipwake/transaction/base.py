"""What the four transaction machines share: a key, armed timers and the table lookup.

Each machine (``client.py``, ``server.py``) is a table ``(state, input) ->
(handler, next_state)``. ``process`` looks the pair up (``lookup``), runs the
handler (which returns outputs and arms or disarms timers), then enters the
next state; entering Terminated disarms every timer. A timer armed with a zero
delay (D, I, J, K over reliable transports) fires in the same call, so the
transaction terminates at once as RFC 3261 §17 says.

A pair missing from a table is a local error (``LocalProtocolError``: the
layer or the TU asked for something the RFC does not allow) unless the input
comes from the network: those are absorbed, since peer errors never raise.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from sipwake.errors import LocalProtocolError
from sipwake.sip.message import Request, Response
from sipwake.transaction.keys import TransactionKey
from sipwake.transaction.timers import Timer, TimerConfig

__all__ = ["Transaction", "lookup", "need_request", "need_response"]

StateT = TypeVar("StateT", bound=enum.Enum)
InputT = TypeVar("InputT", bound=enum.Enum)
EntryT = TypeVar("EntryT")

_TIMER_ORDER = {timer: index for index, timer in enumerate(Timer)}


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


class Transaction:
    """A transaction's identity and timers; the state and table live in the subclasses.

    ``deadlines`` maps each armed timer to its absolute deadline. ``order`` is
    the creation order the layer assigns, used to break deadline ties.
    """

    kind = "transaction"

    def __init__(self, *, key: TransactionKey, config: TimerConfig, reliable: bool) -> None:
        self.key = key
        self.config = config
        self.reliable = reliable
        self.order = 0
        self.deadlines: dict[Timer, float] = {}
        self._immediate: list[Timer] = []

    def __repr__(self) -> str:
        return f"<{self.kind} {self.key}>"

    #: The states in which the final response has been sent or received: the transaction
    #: only lingers to absorb retransmissions (it no longer counts as pending).
    settled_states: frozenset[enum.Enum] = frozenset()

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or ``None`` when no timer runs."""
        return min(self.deadlines.values(), default=None)

    def _arm(self, timer: Timer, delay: float, now: float) -> None:
        """Start ``timer`` to fire ``delay`` seconds after ``now`` (at once if zero)."""
        if delay <= 0:
            self.deadlines.pop(timer, None)
            self._immediate.append(timer)
        else:
            self.deadlines[timer] = now + delay

    def _disarm(self, *timers: Timer) -> None:
        for timer in timers:
            self.deadlines.pop(timer, None)

    def _clear_timers(self) -> None:
        self.deadlines.clear()
        self._immediate.clear()

    def _pop_due(self, now: float) -> Timer | None:
        """Remove and return the earliest timer due at ``now`` (ties in ``Timer`` order)."""
        due = [(d, _TIMER_ORDER[t], t) for t, d in self.deadlines.items() if d <= now]
        if not due:
            return None
        timer = min(due)[2]
        del self.deadlines[timer]
        return timer

    def _pop_immediate(self) -> Timer | None:
        return self._immediate.pop(0) if self._immediate else None
