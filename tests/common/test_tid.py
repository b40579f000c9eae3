"""TIDs: syntax, ordering and a clock that never repeats (tack_common.tid)."""

from __future__ import annotations

import time

import pytest

from tack_common.tid import MAX_CLOCK_ID, MAX_TIME_US, TidClock, is_tid, parse_tid, tid_from_time_us


# TIDs


def test_tid_encodes_time_and_clock_id() -> None:
    """A TID is 13 base32-sortable chars that decode back to (microseconds, clock id)."""
    assert tid_from_time_us(0, 0) == "2222222222222"
    assert tid_from_time_us(MAX_TIME_US, MAX_CLOCK_ID) == "bzzzzzzzzzzzz"
    us = 1_764_753_711_123_456
    tid = tid_from_time_us(us, 7)
    assert is_tid(tid)
    assert parse_tid(tid) == (us, 7)


def test_tid_rejects_out_of_range_inputs() -> None:
    """Timestamps beyond 53 bits, clock ids beyond 10 bits and non-TID strings are refused."""
    with pytest.raises(ValueError, match="timestamp"):
        tid_from_time_us(MAX_TIME_US + 1, 0)
    with pytest.raises(ValueError, match="clock id"):
        tid_from_time_us(0, MAX_CLOCK_ID + 1)
    with pytest.raises(ValueError, match="not a TID"):
        parse_tid("3m7abcxyz2k2")


def test_tid_clock_is_strictly_increasing_when_the_clock_stalls_or_steps_back() -> None:
    """TidClock never repeats or goes backwards, and its TIDs sort in issue order."""
    readings = iter([1_000, 1_000, 999, 5_000, 4_000])
    clock = TidClock(clock_id=3, now_us=lambda: next(readings))
    tids = [clock.next() for _ in range(5)]
    assert [parse_tid(tid)[0] for tid in tids] == [1_000, 1_001, 1_002, 5_000, 5_001]
    assert sorted(tids) == tids
    assert len(set(tids)) == 5


def test_tid_clock_follows_the_wall_clock() -> None:
    """A default TidClock stamps TIDs with the current time in microseconds."""
    before = time.time_ns() // 1000
    us, clock_id = parse_tid(TidClock().next())
    assert before <= us <= time.time_ns() // 1000
    assert clock_id == 0
