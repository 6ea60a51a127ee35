"""The brute-force guard on hand-moved time (sipwake.proxy.authguard)."""

from __future__ import annotations

from sipwake.proxy.authguard import AuthGuard, GuardSettings

SETTINGS = GuardSettings(window_s=60, delay_after=3, max_delay_s=8, ban_after=10, ban_s=300)


def test_delay_grows_after_a_few_failures_then_the_source_is_banned() -> None:
    guard = AuthGuard(SETTINGS)
    strikes = [guard.failed("198.51.100.9", "alice", float(n)) for n in range(10)]
    assert [s.delay_s for s in strikes[:9]] == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert [s.banned for s in strikes] == [False] * 9 + [True]
    assert strikes[-1].delay_s == 0  # banned: no answer at all, nothing to delay
    assert guard.banned("198.51.100.9", 10.0)
    assert not guard.banned("198.51.100.10", 10.0)
    assert guard.active_bans(10.0) == {"198.51.100.9": 299.0}
    assert not guard.banned("198.51.100.9", 309.0)  # the ban ends
    assert guard.failed("198.51.100.9", "alice", 310.0).source_failures == 1


def test_failures_leave_the_window() -> None:
    guard = AuthGuard(SETTINGS)
    for n in range(9):
        guard.failed("198.51.100.9", f"user{n}", n * 7.0)  # 9 failures over 56 s
    strike = guard.failed("198.51.100.9", "x", 71.0)  # those at 0 and 7 s are out of 60 s
    assert strike.source_failures == 8
    assert not strike.banned


def test_guesses_for_one_user_from_many_sources_are_slowed_never_banned() -> None:
    guard = AuthGuard(SETTINGS)
    strikes = [guard.failed(f"203.0.113.{n}", "alice", float(n)) for n in range(1, 30)]
    assert strikes[-1].delay_s == 8
    assert not any(s.banned for s in strikes)
    assert strikes[-1].source_failures == 1
    assert strikes[-1].user_failures == 29


def test_success_clears_the_user_not_the_source() -> None:
    guard = AuthGuard(SETTINGS)
    for n in range(5):
        guard.failed("198.51.100.9", "alice", float(n))
    guard.succeeded("alice")
    strike = guard.failed("198.51.100.9", "alice", 6.0)
    assert strike.user_failures == 1
    assert strike.source_failures == 6
    assert strike.delay_s == 4  # the source's count still decides


def test_tables_stay_bounded_under_spoofed_sources() -> None:
    guard = AuthGuard(SETTINGS, max_keys=100)
    for n in range(5_000):
        guard.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"u{n}", n * 0.01)
    assert len(guard._sources) <= 100
    assert len(guard._users) <= 100
