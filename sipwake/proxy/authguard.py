"""Failed authentications: a growing delay, then a temporary ban (what fail2ban does, built in).

A password guesser (SIPVicious ``svcrack``, toll-fraud bots) sends REGISTER after
REGISTER with a new guess each time; a digest challenge costs it nothing. The guard
counts failed authentications (wrong credentials, an unknown user, a digest ``uri`` that
is not the Request-URI; not the first request without credentials, not a stale nonce)
over a sliding window:

* per source address: after ``delay_after`` failures in ``window_s``, each further
  answer to that source is held back, 1 s doubling per failure up to ``max_delay_s``
  (the request's transaction stays open meanwhile, so retransmissions are absorbed);
  after ``ban_after`` failures the source is banned for ``ban_s``: every request from it
  is dropped unanswered (``ban: drop``, the default: a scanner learns nothing) or
  answered 403 (``ban: reject``);
* per user, whatever the source (guesses spread over many addresses): the same growing
  delay, never a ban (a ban by user name would let anyone lock a user out).

A successful authentication clears the user's count, not the source's (one valid
account must not reset the count while its owner guesses others'). Trusted sources
(``limits.trusted_sources``) are not counted. Pure: time is an argument, and the tables
are bounded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

__all__ = ["AuthGuard", "GuardSettings", "Strike"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardSettings:
    window_s: float = 600.0
    delay_after: int = 3
    max_delay_s: float = 8.0
    ban_after: int = 10
    ban_s: float = 900.0
    ban: Literal["drop", "reject"] = "drop"


@dataclass(frozen=True, slots=True, kw_only=True)
class Strike:
    """What one failure leads to: how long to hold the answer back, whether it banned the
    source, and the counts behind it (for the log line)."""

    delay_s: float
    banned: bool
    source_failures: int
    user_failures: int


class AuthGuard:
    """Counts failures by source and by user; see the module text."""

    def __init__(self, settings: GuardSettings, *, max_keys: int = 50_000) -> None:
        self.settings = settings
        self.max_keys = max_keys
        self._sources: dict[str, deque[float]] = {}
        self._users: dict[str, deque[float]] = {}
        self._bans: dict[str, float] = {}
        """Source host → time its ban ends."""
        self.failures = 0
        self.bans = 0

    def banned(self, host: str, now: float) -> bool:
        """Whether requests from ``host`` are to be refused (its ban has not ended)."""
        until = self._bans.get(host)
        if until is None:
            return False
        if now < until:
            return True
        del self._bans[host]
        return False

    def failed(self, host: str, user: str, now: float) -> Strike:
        """One failed authentication from ``host`` for ``user`` at ``now``."""
        self.failures += 1
        at_source = self._count(self._sources, host, now)
        at_user = self._count(self._users, user, now) if user else 0
        s = self.settings
        banned = at_source >= s.ban_after and not self.banned(host, now)
        if banned:
            self._bans[host] = now + s.ban_s
            self.bans += 1
            self._sources.pop(host, None)  # counted again from zero after the ban
        worst = max(at_source, at_user)
        delay = 0.0
        if worst > s.delay_after:
            delay = min(s.max_delay_s, 2.0 ** (worst - s.delay_after - 1))
        return Strike(
            delay_s=0.0 if banned else delay,
            banned=banned,
            source_failures=at_source,
            user_failures=at_user,
        )

    def succeeded(self, user: str) -> None:
        """``user`` authenticated: its own count starts over (the source's does not)."""
        self._users.pop(user, None)

    def active_bans(self, now: float) -> dict[str, float]:
        """Banned source → seconds left."""
        return {h: round(t - now, 1) for h, t in self._bans.items() if t > now}

    def _count(self, table: dict[str, deque[float]], key: str, now: float) -> int:
        times = table.get(key)
        if times is None:
            if len(table) >= self.max_keys:
                self._prune(table, now)
            times = table[key] = deque(maxlen=max(self.settings.ban_after, 64))
        horizon = now - self.settings.window_s
        while times and times[0] <= horizon:
            times.popleft()
        times.append(now)
        return len(times)

    def _prune(self, table: dict[str, deque[float]], now: float) -> None:
        """Drop keys whose failures all left the window; if none did, the oldest half."""
        horizon = now - self.settings.window_s
        stale = [k for k, t in table.items() if not t or t[-1] <= horizon]
        if not stale:
            ordered = sorted(table.items(), key=lambda item: item[1][-1])
            stale = [k for k, _ in ordered[: len(ordered) // 2]]
        for key in stale:
            del table[key]
