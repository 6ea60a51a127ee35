"""Load shedding: answer some new requests 503 before a UDP server falls over.

Above its capacity a UDP proxy does not slow down gracefully: requests queue in
the socket buffer, their retransmissions add to the queue, and every call
fails. The driver samples a load figure every quarter second: how full the
UDP receive queue is (Linux), where it can read it, else the share of a core
the process used. ``LoadMeter`` keeps a *shed fraction*: it rises by
``step_up`` for every sample above ``high`` (once ``sustain`` such samples came
in a row, so a burst is not overload) and falls by ``step_down`` for every
sample below ``low``. The node answers that fraction of *new* initial requests
with ``503 Service Unavailable`` and ``Retry-After`` (RFC 3261 §21.5.4),
statelessly (a parse and a write), while transactions and dialogs under way go
on; the rest are served, so the server stays near its capacity instead of
collapsing.

Pure: the caller passes the figures it measured.
"""

from __future__ import annotations

__all__ = ["LoadMeter"]


class LoadMeter:
    """Turns load samples (0..1) into the share of new requests to refuse."""

    def __init__(
        self,
        *,
        high: float,
        low: float,
        sustain: int = 2,
        step_up: float = 0.2,
        step_down: float = 0.1,
    ) -> None:
        if not 0 <= low < high <= 1:
            raise ValueError(f"need 0 <= low ({low}) < high ({high}) <= 1")
        self.high = high
        self.low = low
        self.sustain = sustain
        self.step_up = step_up
        self.step_down = step_down
        self.load = 0.0
        self.shed_fraction = 0.0
        self._high_samples = 0
        self._debt = 0.0

    @property
    def overloaded(self) -> bool:
        return self.shed_fraction > 0

    def observe(self, load: float) -> None:
        """One sample of the load (queue fill or CPU share, 0..1)."""
        self.load = load
        if load > self.high:
            self._high_samples += 1
            if self._high_samples >= self.sustain or self.overloaded:
                self.shed_fraction = min(1.0, round(self.shed_fraction + self.step_up, 6))
        else:
            self._high_samples = 0
            if load < self.low:
                self.shed_fraction = max(0.0, round(self.shed_fraction - self.step_down, 6))

    def admit(self) -> bool:
        """Whether to serve the next new request (deterministic: sheds every 1/fraction-th)."""
        if self.shed_fraction <= 0:
            return True
        self._debt += self.shed_fraction
        if self._debt >= 1.0:
            self._debt -= 1.0
            return False
        return True
