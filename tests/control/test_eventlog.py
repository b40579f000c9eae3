"""The /events log: strictly increasing cursors, TID rkeys across restarts, ring and SQLite pages (tack_control.engine.eventlog)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from pathlib import Path

from tack_common.sqlite import Transaction
from tack_common.tid import is_tid, parse_tid, tid_from_time_us
from tack_control.engine.db import open_db
from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tests.support.samples import (
    EVENTS_FRAME,
)


def _insert(conn: sqlite3.Connection, log: EventLog, count: int) -> list[tuple[int, str]]:
    with Transaction(conn) as c:
        keys = [log.insert(c, STATUS_NSID, {"n": i}) for i in range(count)]
    log.flush()
    return keys


def test_created_strictly_increases_and_rkeys_are_increasing_tids(
    conn: sqlite3.Connection, events: EventLog
) -> None:
    """Each event gets a created later than the last and a fresh TID rkey, in order, never repeated."""
    keys = _insert(conn, events, 300) + _insert(conn, events, 5)
    created = [k[0] for k in keys]
    rkeys = [k[1] for k in keys]
    assert all(b > a for a, b in itertools.pairwise(created))
    assert all(is_tid(r) for r in rkeys)
    assert rkeys == sorted(rkeys) and len(set(rkeys)) == len(rkeys)
    assert conn.execute("SELECT created, rkey FROM events ORDER BY created").fetchall() == keys
    assert created[-1] - time.time_ns() < 1_000_000_000


def test_envelope_key_order_and_nsid(conn: sqlite3.Connection, events: EventLog) -> None:
    """Each stored frame has the 2025 keys plus created, in current spindles' order: {"rkey","nsid","event","created"}."""
    [(_, rkey)] = _insert(conn, events, 1)
    [(_, frame)] = events.after(0)
    assert list(json.loads(EVENTS_FRAME)) == ["event", "nsid", "rkey"]
    # The current envelope: the 2025 keys, and created (the cursor), in stock spindles' order.
    assert list(json.loads(frame)) == ["rkey", "nsid", "event", "created"]
    assert json.loads(frame)["nsid"] == STATUS_NSID and json.loads(frame)["rkey"] == rkey


def test_rkeys_and_created_keep_increasing_across_reopen_with_clock_behind(tmp_path: Path) -> None:
    """After reopening, new rkeys and created values exceed stored ones even if those are ahead of the clock."""
    path = str(tmp_path / "tack.db")
    conn = open_db(path)
    _insert(conn, EventLog(conn), 3)
    ahead_us = time.time_ns() // 1000 + 3_600_000_000
    ahead_tid = tid_from_time_us(ahead_us, 0)
    ahead_created = time.time_ns() + 3_600_000_000_000
    conn.execute(
        "INSERT INTO events (created, rkey, nsid, frame) VALUES (?, ?, ?, '{}')",
        (ahead_created, ahead_tid, STATUS_NSID),
    )
    conn.close()
    for _ in range(2):
        conn = open_db(path)
        log = EventLog(conn)
        assert log.head() == ahead_created
        keys = _insert(conn, log, 3)
        conn.close()
        assert all(is_tid(r) for _, r in keys)
        assert keys[0][1] > ahead_tid and keys[0][0] > ahead_created
        assert parse_tid(keys[0][1])[0] > ahead_us
        ahead_tid, ahead_created = keys[-1][1], keys[-1][0]


def _all_pages(log: EventLog, cursor: int, limit: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    while page := log.after(cursor, limit):
        assert len(page) <= limit
        out.extend(page)
        cursor = page[-1][0]
    return out


def test_after_serves_ring_and_sqlite_identically_in_pages(tmp_path: Path) -> None:
    """after() pages give the same events whether served from the in-memory ring or from SQLite."""
    path = str(tmp_path / "tack.db")
    conn = open_db(path)
    log = EventLog(conn, ring_size=8)
    for _ in range(10):
        _insert(conn, log, 5)
    stored = [(int(c), str(f)) for c, f in conn.execute("SELECT created, frame FROM events ORDER BY created")]
    assert len(stored) == 50
    assert 0 < log.ring_floor < stored[-1][0], "the ring should have been trimmed"
    other = open_db(path)
    cold = EventLog(other)
    assert cold.head() == log.head() == stored[-1][0]
    for limit in (1, 7, 1000):
        assert _all_pages(log, 0, limit) == _all_pages(cold, 0, limit) == stored
    ring_cursors = 0
    for i, (created, _) in enumerate(stored):
        ring_cursors += created >= log.ring_floor
        for cursor in (created, created - 1):
            expected = [e for e in stored if e[0] > cursor][:5]
            assert log.after(cursor, 5) == cold.after(cursor, 5) == expected, i
    assert ring_cursors >= 8
    assert log.after(log.head()) == cold.after(cold.head()) == []
    other.close()
    conn.close()
