"""Logging a recurring failure once per interval (tack_common.throttle)."""

from __future__ import annotations

from tack_common.throttle import LogThrottle


def test_one_occurrence_per_key_and_interval_passes_with_the_count_held_back() -> None:
    """The first occurrence passes; repeats within the interval are held and counted into the next one."""
    now = [0.0]
    throttle = LogThrottle(60.0, clock=lambda: now[0])
    assert throttle.allow("full") == 0
    assert [throttle.allow("full") for _ in range(3)] == [None, None, None]
    assert throttle.allow("other") == 0
    now[0] = 61.0
    assert throttle.allow("full") == 3
    assert throttle.reset("full") == 0
    assert throttle.allow("full") == 0
