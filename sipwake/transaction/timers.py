"""RFC 3261 §17 transaction timers (Table 4), with RFC 6026's Timers L and M.

``TimerConfig`` holds the three base values (T1, T2, T4) and the IST's 100
Trying delay; every timer is derived from them. Timers that only absorb
retransmissions (D, I, J, K) are zero over reliable transports: the
transaction terminates at once. Retransmission timers (A, E, G) never run over
reliable transports; their first interval is T1.

    Timer  machine  default             purpose
    A      ICT      T1, doubling        INVITE retransmit (UDP only)
    B      ICT      64*T1               INVITE transaction timeout
    D      ICT      32 s UDP, 0 rel.    wait for 3xx-6xx retransmissions
    E      NICT     T1, doubling to T2  request retransmit (UDP only)
    F      NICT     64*T1               non-INVITE transaction timeout
    G      IST      T1, doubling to T2  3xx-6xx retransmit (UDP only)
    H      IST      64*T1               wait for ACK
    I      IST      T4 UDP, 0 rel.      wait for ACK retransmissions
    J      NIST     64*T1 UDP, 0 rel.   wait for request retransmissions
    K      NICT     T4 UDP, 0 rel.      wait for response retransmissions
    L      IST      64*T1               Accepted: absorb INVITE retransmissions (RFC 6026)
    M      ICT      64*T1               Accepted: pass 2xx retransmissions up (RFC 6026)
    TRYING IST      0.2 s               send 100 Trying unless the TU answered (§17.2.1)

Timer C (§16.8, > 3 min) belongs to the proxy core, not to this layer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["IdentityEnum", "Timer", "TimerConfig"]


class IdentityEnum(enum.Enum):
    """An enum hashed by identity, as it already compares: ``Enum.__hash__`` hashes the
    member's name in Python code, and the transaction tables, timers and state sets look
    their members up in dicts and sets on every message."""

    __hash__ = object.__hash__


class Timer(IdentityEnum):
    """The transaction timers; the order breaks ties between equal deadlines."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    TRYING = "TRYING"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerConfig:
    """Base timer values in seconds (RFC 3261 §17.1.1.1, Table 4).

    ``T1`` is the RTT estimate, ``T2`` the cap on non-INVITE and 3xx-6xx
    retransmission intervals, ``T4`` how long a message may stay in the
    network. ``timer_d_unreliable`` is Timer D over UDP (RFC: "> 32 s").
    ``trying_delay`` is how long the IST waits for the TU's first response
    before sending 100 Trying itself (RFC 3261 §17.2.1: 200 ms); 0 sends it
    at once.
    """

    T1: float = 0.5
    T2: float = 4.0
    T4: float = 5.0
    timer_d_unreliable: float = 32.0
    trying_delay: float = 0.2

    def __post_init__(self) -> None:
        if not self.T1 > 0:
            raise ValueError(f"TimerConfig.T1: expected a positive number, got {self.T1!r}")
        if not self.T2 >= self.T1:
            raise ValueError(f"TimerConfig.T2: expected >= T1 ({self.T1}), got {self.T2!r}")
        for name in ("T4", "timer_d_unreliable", "trying_delay"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"TimerConfig.{name}: expected >= 0, got {value!r}")

    # -- retransmission timers (first interval; unreliable transports only) --
    @property
    def timer_a(self) -> float:
        """Timer A's first interval: T1 (RFC 3261 §17.1.1.2)."""
        return self.T1

    @property
    def timer_e(self) -> float:
        """Timer E's first interval: T1 (RFC 3261 §17.1.2.2)."""
        return self.T1

    @property
    def timer_g(self) -> float:
        """Timer G's first interval: T1 (RFC 3261 §17.2.1)."""
        return self.T1

    # -- transaction timeouts ---------------------------------------------
    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout: 64*T1 (RFC 3261 §17.1.1.2)."""
        return 64 * self.T1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout: 64*T1 (RFC 3261 §17.1.2.2)."""
        return 64 * self.T1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt: 64*T1 (RFC 3261 §17.2.1)."""
        return 64 * self.T1

    @property
    def timer_l(self) -> float:
        """IST Accepted state lifetime: 64*T1 (RFC 6026 §8.7)."""
        return 64 * self.T1

    @property
    def timer_m(self) -> float:
        """ICT Accepted state lifetime: 64*T1 (RFC 6026 §8.4)."""
        return 64 * self.T1

    # -- wait timers (zero over reliable transports) -----------------------
    def timer_d(self, reliable: bool) -> float:
        """Wait for response retransmissions in ICT Completed (RFC 3261 §17.1.1.2)."""
        return 0.0 if reliable else self.timer_d_unreliable

    def timer_i(self, reliable: bool) -> float:
        """Wait for ACK retransmissions in IST Confirmed (RFC 3261 §17.2.1)."""
        return 0.0 if reliable else self.T4

    def timer_j(self, reliable: bool) -> float:
        """Wait for request retransmissions in NIST Completed (RFC 3261 §17.2.2)."""
        return 0.0 if reliable else 64 * self.T1

    def timer_k(self, reliable: bool) -> float:
        """Wait for response retransmissions in NICT Completed (RFC 3261 §17.1.2.2)."""
        return 0.0 if reliable else self.T4
