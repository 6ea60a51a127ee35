"""Load shedding: answer some new requests 503 before a UDP server falls over.

Above its capacity a UDP proxy does not slow down gracefully: requests queue in
the socket buffer, their retransmissions add to the queue, and every call
fails. ``LoadMeter`` tracks the fraction of wall time the event loop spends
handling messages, window by window, and keeps a *shed fraction*: it rises by
``step_up`` for every window above ``high`` (once ``sustain`` such windows came
in a row, so a burst is not overload) and falls by ``step_down`` for every
window below ``low``. The node answers that fraction of *new* initial requests
with ``503 Service Unavailable`` and ``Retry-After`` (RFC 3261 §21.5.4),
statelessly (a parse and a write), while transactions and dialogs under way go
on; the rest are served, so the server stays near its capacity instead of
collapsing.

Pure: the caller passes the times it measured.
"""

from __future__ import annotations

__all__ = ["LoadMeter"]


class LoadMeter:
    """Busy fraction of the event loop over windows of ``window`` seconds."""

    def __init__(
        self,
        *,
        window: float = 0.5,
        high: float = 0.93,
        low: float = 0.8,
        sustain: int = 2,
        step_up: float = 0.2,
        step_down: float = 0.1,
    ) -> None:
        if not 0 < low < high <= 1:
            raise ValueError(f"need 0 < low ({low}) < high ({high}) <= 1")
        self.window = window
        self.high = high
        self.low = low
        self.sustain = sustain
        self.step_up = step_up
        self.step_down = step_down
        self.load = 0.0
        self.shed_fraction = 0.0
        self._high_windows = 0
        self._start: float | None = None
        self._busy = 0.0
        self._debt = 0.0

    @property
    def overloaded(self) -> bool:
        return self.shed_fraction > 0

    def record(self, now: float, busy: float) -> None:
        """``busy`` seconds of work ended at ``now`` (monotonic)."""
        if self._start is None:
            self._start = now - busy
        self._busy += busy
        elapsed = now - self._start
        if elapsed + 1e-9 < self.window:  # (the epsilon absorbs float sums of ticks)
            return
        self.load = min(self._busy / elapsed, 1.0)
        if self.load > self.high:
            self._high_windows += 1
            if self._high_windows >= self.sustain or self.overloaded:
                self.shed_fraction = min(1.0, round(self.shed_fraction + self.step_up, 6))
        else:
            self._high_windows = 0
            if self.load < self.low:
                self.shed_fraction = max(0.0, round(self.shed_fraction - self.step_down, 6))
        self._start = now
        self._busy = 0.0

    def admit(self) -> bool:
        """Whether to serve the next new request (deterministic: sheds every 1/fraction-th)."""
        if self.shed_fraction <= 0:
            return True
        self._debt += self.shed_fraction
        if self._debt >= 1.0:
            self._debt -= 1.0
            return False
        return True
