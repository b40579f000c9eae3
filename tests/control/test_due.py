"""Work queues in SQLite: how long a worker sleeps, and that it works until nothing is due."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from tack_common.notify import Notifier
from tack_control.engine.due import IDLE_S, QueueWorker, seconds_until, work_forever


EARLIEST = "SELECT MIN(next_ns) FROM queue"


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "queue.db")
    db.execute("CREATE TABLE queue (next_ns INTEGER NOT NULL)")
    return db


def test_an_empty_queue_sleeps_the_longest(conn: sqlite3.Connection) -> None:
    """No row waiting: the worker sleeps IDLE_S (or the limit it was given)."""
    assert seconds_until(conn, EARLIEST) == IDLE_S
    assert seconds_until(conn, EARLIEST, longest_s=5.0) == 5.0


def test_the_sleep_ends_when_the_earliest_row_is_due(conn: sqlite3.Connection) -> None:
    """A row due in 2 s gives about 2 s; an overdue row 0; one due in an hour is cut to the limit."""
    now = time.time_ns()
    conn.execute("INSERT INTO queue VALUES (?)", (now + 2_000_000_000,))
    assert 1.5 < seconds_until(conn, EARLIEST) <= 2.0
    conn.execute("INSERT INTO queue VALUES (?)", (now + 3600 * 10**9,))
    assert 1.5 < seconds_until(conn, EARLIEST) <= 2.0
    assert seconds_until(conn, "SELECT MAX(next_ns) FROM queue") == IDLE_S
    conn.execute("INSERT INTO queue VALUES (?)", (now - 10**9,))
    assert seconds_until(conn, EARLIEST) == 0.0


async def test_the_worker_works_until_nothing_is_due_then_waits_for_a_poke() -> None:
    """Batches are taken while any are found; after an empty pass it sleeps until notified."""
    batches = [3, 1, 0, 2, 0]
    calls: list[int] = []
    wake = Notifier()
    slept = asyncio.Event()

    async def work_due() -> int:
        calls.append(batches[len(calls)] if len(calls) < len(batches) else 0)
        return calls[-1]

    def seconds_to_next() -> float:
        slept.set()
        return 60.0

    worker = asyncio.create_task(work_forever(work_due, seconds_to_next, wake))
    try:
        await asyncio.wait_for(slept.wait(), 5)
        assert calls == [3, 1, 0]
        slept.clear()
        await asyncio.sleep(0)
        wake.notify()
        await asyncio.wait_for(slept.wait(), 5)
        assert calls == [3, 1, 0, 2, 0]
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker


class _Drainer(QueueWorker):
    """Deletes the rows that are due; remembers how many each pass found."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn, EARLIEST)
        self.passes: list[int] = []

    async def work_due(self) -> int:
        done = self._conn.execute("DELETE FROM queue WHERE next_ns <= ?", (time.time_ns(),)).rowcount
        self.passes.append(done)
        return done


async def test_a_queue_worker_does_a_poked_row_at_once_and_a_later_one_when_it_is_due(
    conn: sqlite3.Connection,
) -> None:
    """A row queued with poke() is done without waiting; a row due in 0.3 s is done then, unpoked."""
    worker = _Drainer(conn)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.05)
        conn.execute("INSERT INTO queue VALUES (?)", (time.time_ns(),))
        conn.execute("INSERT INTO queue VALUES (?)", (time.time_ns() + 300_000_000,))
        worker.poke()
        for _ in range(100):
            if conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0:
                break
            await asyncio.sleep(0.05)
        assert conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
        assert sum(worker.passes) == 2
        assert worker.seconds_to_next() == IDLE_S
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
