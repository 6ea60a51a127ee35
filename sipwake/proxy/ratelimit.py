"""Rate limits at the edge: requests per source address, wake pushes per caller and user.

In the spirit of Kamailio's ``pike`` and of what iOS asks of a VoIP push provider:

* **Requests per source** (``limits.requests_per_source``, default 300 per second): a
  source address sending more requests than that has the excess dropped unanswered (an
  answer would feed the flood); responses are never counted (they belong to sipwake's
  own transactions). Sources in ``limits.trusted_sources`` (loopback by default: a lab's
  own tools, SIPp benchmarks) are not limited.
* **Wake pushes per source and user** (``limits.wake_pushes_per_source``, default 5 per
  60 s): an INVITE or MESSAGE that would push a sleeping phone, from a source address
  that already made that user's phones wake that often, rings only the devices in the
  foreground and pushes nobody; the call goes on as if the sleeping devices could not
  be reached (voicemail, 480). Anyone on the network can otherwise make a phone ring
  and its app burn through the VoIP pushes iOS allows.
* **Wake pushes per user** (``limits.wake_pushes_per_user``, default 30 per 60 s),
  whatever the source: a flood from many addresses.

Each limit is a token bucket: ``count`` tokens, refilled at ``count / per_s`` a second;
a request takes one. Pure: time is an argument, and the buckets kept are bounded (idle
ones, which would be full again, are dropped first).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipwake.frozen import interpreted_init

__all__ = ["Rate", "RateLimiter", "parse_rate"]


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Rate:
    """At most ``count`` in any ``per_s`` seconds (a burst of ``count`` allowed)."""

    count: int
    per_s: float

    def __init__(self, *, count: int, per_s: float) -> None:  # written: sipwake/frozen.py
        self.count = count  # type: ignore[misc]
        self.per_s = per_s  # type: ignore[misc]

    def __str__(self) -> str:
        return f"{self.count}/{self.per_s:g}s"


interpreted_init(Rate)


def parse_rate(text: str) -> Rate:
    """``"5/60s"`` (or ``"5/60"``, ``"300/1s"``) → ``Rate``; ``ValueError`` saying what is
    expected otherwise."""
    count, sep, per = text.strip().partition("/")
    per = per.strip().removesuffix("s")
    try:
        rate = Rate(count=int(count), per_s=float(per))
    except ValueError:
        rate = None
    if not sep or rate is None or rate.count < 1 or not 0 < rate.per_s < 86_400:
        raise ValueError(f"expected COUNT/SECONDS like 5/60s, got {text[:40]!r}")
    return rate


class RateLimiter:
    """Token buckets by key (see the module text)."""

    def __init__(self, rate: Rate, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._refill = rate.count / rate.per_s
        self._buckets: dict[object, list[float]] = {}
        """key → [tokens left, time of the last update]."""
        self.refused = 0
        """Requests refused since the start."""
        self.refused_by: dict[object, int] = {}
        """key → refusals (the keys refused most are shown in ``sipwake status``)."""

    def allow(self, key: object, now: float) -> bool:
        """Take a token for ``key`` at ``now``; False (and counted) when there is none.
        After a refusal, ``should_report(key)`` tells whether to log it (the 1st, 10th,
        100th… refusal of that key: a flood does not flood the log)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            self._buckets[key] = [self.rate.count - 1.0, now]
            return True
        tokens = min(float(self.rate.count), bucket[0] + (now - bucket[1]) * self._refill)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self.refused += 1
        if key in self.refused_by or len(self.refused_by) < self.max_keys:
            self.refused_by[key] = self.refused_by.get(key, 0) + 1
        return False

    def _prune(self, now: float) -> None:
        """Drop the buckets that are full again (idle long enough); if none is, the
        oldest half: a flood of new keys must not grow the table without bound."""
        full_after = self.rate.per_s
        idle = [k for k, (_, last) in self._buckets.items() if now - last >= full_after]
        if not idle:
            ordered = sorted(self._buckets.items(), key=lambda item: item[1][1])
            idle = [k for k, _ in ordered[: len(ordered) // 2]]
        for key in idle:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def should_report(self, key: object) -> bool:
        count = self.refused_by.get(key, 0)
        while count >= 10 and count % 10 == 0:
            count //= 10
        return count == 1

    def top(self, n: int = 5) -> list[tuple[object, int]]:
        """The ``n`` keys refused most, with their counts."""
        return sorted(self.refused_by.items(), key=lambda item: -item[1])[:n]
