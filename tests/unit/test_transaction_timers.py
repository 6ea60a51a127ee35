"""TimerConfig: RFC 3261 Table 4 values, RFC 6026 L/M, and zero wait timers over reliable links."""

from __future__ import annotations

import pytest

from sipwake.transaction import TimerConfig


def test_defaults_follow_table_4() -> None:
    t = TimerConfig()
    assert (t.T1, t.T2, t.T4) == (0.5, 4.0, 5.0)
    assert (t.timer_a, t.timer_e, t.timer_g) == (0.5, 0.5, 0.5)
    assert (t.timer_b, t.timer_f, t.timer_h, t.timer_l, t.timer_m) == (32.0,) * 5
    assert (t.timer_d(False), t.timer_i(False), t.timer_j(False), t.timer_k(False)) == (
        32.0,
        5.0,
        32.0,
        5.0,
    )
    assert (t.timer_d(True), t.timer_i(True), t.timer_j(True), t.timer_k(True)) == (0.0,) * 4
    assert t.trying_delay == 0.2


def test_derived_values_follow_t1_and_t4() -> None:
    t = TimerConfig(T1=0.1, T2=2.0, T4=3.0)
    assert (t.timer_b, t.timer_j(False), t.timer_k(False), t.timer_i(False)) == (6.4, 6.4, 3.0, 3.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"T1": 0}, "T1: expected a positive number"),
        ({"T1": 1.0, "T2": 0.5}, "T2: expected >= T1"),
        ({"T4": -1}, "T4: expected >= 0"),
        ({"trying_delay": -0.1}, "trying_delay: expected >= 0"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimerConfig(**kwargs)
