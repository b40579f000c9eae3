"""Work queues kept in SQLite: a worker does what is due, then sleeps until the next row is due or it is poked."""

from __future__ import annotations

import abc
import sqlite3
import time
from collections.abc import Awaitable, Callable

from tack_common.notify import Notifier


IDLE_S = 30.0
"""The longest a worker sleeps: a row made due by another process (or a clock jump) waits no longer."""


def seconds_until(conn: sqlite3.Connection, earliest_sql: str, longest_s: float = IDLE_S) -> float:
    """Seconds until the time (ns since the epoch) that ``earliest_sql`` selects, within [0, ``longest_s``].

    The query selects one value, typically ``MIN(next_attempt_ns)`` over the waiting rows; NULL (none
    waiting) gives ``longest_s``.
    """
    row = conn.execute(earliest_sql).fetchone()
    if row is None or row[0] is None:
        return longest_s
    return max(0.0, min(longest_s, (int(row[0]) - time.time_ns()) / 1e9))


async def work_forever(
    work_due: Callable[[], Awaitable[int]], seconds_to_next: Callable[[], float], wake: Notifier
) -> None:
    """Call ``work_due`` until it finds nothing, then sleep until the next row is due or ``wake`` is notified."""
    while True:
        if not await work_due():
            await wake.wait(seconds_to_next())


class QueueWorker(abc.ABC):
    """The worker of one queue: :meth:`run` does what is due, then sleeps until the next row is due or
    :meth:`poke` says something was queued."""

    def __init__(self, conn: sqlite3.Connection, earliest_sql: str) -> None:
        self._conn = conn
        self._earliest_sql = earliest_sql
        """Selects when the next waiting row is due (ns since the epoch), NULL when none waits."""
        self.wake = Notifier()

    def poke(self) -> None:
        """Work was queued (or became due)."""
        self.wake.notify()

    async def run(self) -> None:
        """Work forever."""
        await work_forever(self.work_due, self.seconds_to_next, self.wake)

    def seconds_to_next(self) -> float:
        """Seconds until the next waiting row is due (at most :data:`IDLE_S`)."""
        return seconds_until(self._conn, self._earliest_sql)

    @abc.abstractmethod
    async def work_due(self) -> int:
        """Do every row that is due now (or a batch of them); returns how many were done."""
