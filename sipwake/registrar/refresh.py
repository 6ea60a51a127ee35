"""Refresh pushes: when to wake a suspended device so it re-registers in time.

Theory of operation
-------------------
A binding with push parameters may live long (``RegistrarConfig.max_push_expires``,
7 days by default) because a suspended app cannot refresh it by itself. Before it
expires the node sends one ``refresh`` push (RFC 8599 §5.5, OpenSIPS
``pn_trigger_interval``, Flexisip ``register-wakeup-*``): the app wakes in the
background and re-registers, which renews the binding and schedules the next one.

When (``refresh_at``), for a binding of lifetime ``L`` (from its REGISTER to its
expiry):

* the earlier of 90 % of ``L`` and 10 minutes before expiry: the lead is
  ``max(L / 10, 600 s)`` — a day-long binding is refreshed 2.4 h early, an hour-long
  one 10 minutes early, leaving room for a push the service holds back (Doze, iOS
  background budget);
* a device whose Contact carried ``+sip.pnsreg`` (it can wake itself, and the 200
  told it to refresh ``pnsreg`` seconds before expiry) is pushed only as RFC 8599
  §5.5 allows: when no refresh came by 120 s before expiry;
* never sooner than 60 s after the REGISTER (a 180 s binding, the push minimum,
  is refreshed at 120 s before expiry, the RFC's recommended lead).

``RefreshSchedule`` holds one deadline per pushable binding, keyed by binding id and
the binding's ``expires_at`` (a refresh or a new REGISTER replaces it; a removal or
expiry forgets it). ``due(now)`` hands out each binding id once, in (deadline,
creation) order; the node decides then whether the device is suspended (only those
are pushed) and may ask to look again later (``later``). Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq

from sipwake.registrar.bindings import Binding

__all__ = [
    "PNSREG_LEAD_S",
    "REFRESH_LEAD_MIN_S",
    "REFRESH_LEAD_SHARE",
    "RefreshSchedule",
    "refresh_at",
]

#: The refresh push goes at least this long before expiry (10 minutes)…
REFRESH_LEAD_MIN_S = 600.0
#: …or this share of the binding's lifetime before it, whichever is earlier (90 % point).
REFRESH_LEAD_SHARE = 0.1
#: RFC 8599 §5.5: a device that refreshes itself (``+sip.pnsreg``) is pushed only when
#: no refresh came by this long before expiry.
PNSREG_LEAD_S = 120.0
#: Never push for a refresh sooner than this after the REGISTER.
_MIN_AGE_S = 60.0


def refresh_at(binding: Binding) -> float | None:
    """When a refresh push for ``binding`` is due; None when it has no push target or
    lives too briefly for one."""
    if binding.push is None:
        return None
    life = binding.expires_at - binding.registered_at
    lead = PNSREG_LEAD_S if binding.pnsreg else max(REFRESH_LEAD_SHARE * life, REFRESH_LEAD_MIN_S)
    lead = min(lead, life - _MIN_AGE_S)
    if lead <= 0:
        return None
    return binding.expires_at - lead


class RefreshSchedule:
    """Refresh-push deadlines of the pushable bindings (see the module text)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        """Binding id → its current deadline (heap entries with another one are stale)."""
        self._seq = 0

    def __len__(self) -> int:
        return len(self._due)

    def track(self, binding: Binding) -> None:
        """``binding`` was added or refreshed (or lost a push token): (re)schedule it."""
        at = refresh_at(binding)
        if at is None:
            self.forget(binding.binding_id)
        else:
            self._arm(binding.binding_id, at)

    def later(self, binding_id: str, at: float) -> None:
        """Look at ``binding_id`` again at ``at`` (it was not suspended when due)."""
        self._arm(binding_id, at)

    def forget(self, binding_id: str) -> None:
        self._due.pop(binding_id, None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[str]:
        """The binding ids whose refresh time is ≤ ``now``, each handed out once."""
        out: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, binding_id = heapq.heappop(heap)
            if self._due.get(binding_id) == at:
                del self._due[binding_id]
                out.append(binding_id)
        return out

    def _arm(self, binding_id: str, at: float) -> None:
        self._due[binding_id] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, binding_id))
        if len(self._heap) > 2 * len(self._due) + 64:  # drop stale entries now and then
            self._heap = [e for e in self._heap if self._due.get(e[2]) == e[0]]
            heapq.heapify(self._heap)
