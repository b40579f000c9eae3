"""Whether a process's database can be written: a real write probe, a metric, and one log line per interval.

``SELECT 1`` answers on a database that cannot take a single write (a full
disk, a read-only file, a transaction left open). The probe commits a
transaction that needs a new page (:data:`PROBE_BYTES`), so it fails as soon
as the database could not grow. It costs about 12 KB of WAL, so it runs every
10 s, and readiness reuses a result younger than 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge

from tack_common.sqlite import Transaction
from tack_common.throttle import LogThrottle


log = logging.getLogger(__name__)

DATABASE_WRITABLE = Gauge("tack_database_writable", "1 when the last write probe of the database succeeded.")

PROBE_BYTES = 4 << 10
# Every database probed has ``write_probe (id INTEGER PRIMARY KEY, data BLOB NOT NULL)`` (a migration).


def probe_write(conn: sqlite3.Connection, size: int = PROBE_BYTES) -> None:
    """Commit a transaction that writes ``size`` bytes (then frees them); raises sqlite3.Error when it cannot."""
    with Transaction(conn):
        conn.execute("INSERT OR REPLACE INTO write_probe (id, data) VALUES (1, zeroblob(?))", (size,))
        conn.execute("DELETE FROM write_probe WHERE id = 1")


class WriteProbe:
    """Probes ``conn`` now and then; readiness asks :meth:`check`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        interval: float = 10.0,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.interval = interval
        self.clock = clock
        self.writable = True
        self.error = ""
        self.checked_at: float | None = None
        self.failing_since: float | None = None
        self._throttle = LogThrottle(log_every, clock)

    def check(self, max_age: float = 0.0) -> bool:
        """Whether the database took the probe; probes again unless the last probe is younger than ``max_age``."""
        now = self.clock()
        if self.checked_at is not None and now - self.checked_at < max_age:
            return self.writable
        self.checked_at = now
        try:
            probe_write(self.conn)
        except sqlite3.Error as exc:
            self._failed(exc, now)
        else:
            self._succeeded(now)
        DATABASE_WRITABLE.set(1 if self.writable else 0)
        return self.writable

    def _failed(self, exc: sqlite3.Error, now: float) -> None:
        self.error = f"{getattr(exc, 'sqlite_errorname', type(exc).__name__)}: {exc}"
        if self.writable:
            self.failing_since = now
        self.writable = False
        held = self._throttle.allow("failing")
        if held is not None:
            log.error(
                "database cannot be written",
                extra={
                    "error": self.error,
                    "failing_for_s": round(now - (self.failing_since or now)),
                    "failed_probes_not_logged": held,
                },
            )

    def _succeeded(self, now: float) -> None:
        if not self.writable:
            held = self._throttle.reset("failing")
            log.warning(
                "database writable again",
                extra={"was_failing_for_s": round(now - (self.failing_since or now)), "failed_probes": held},
            )
        self.writable, self.error, self.failing_since = True, "", None

    async def run(self) -> None:
        """Probe every ``interval`` seconds, for the metric and the logs (run it supervised)."""
        while True:
            self.check()
            await asyncio.sleep(self.interval)

    def problems(self) -> list[str]:
        """One line when the database cannot be written (as last probed)."""
        return [] if self.writable else [f"database cannot be written ({self.error})"]

    def as_json(self) -> dict[str, Any]:
        """The probe as the health report shows it."""
        out: dict[str, Any] = {"writable": self.writable}
        if self.error:
            out["error"] = self.error
        if self.checked_at is not None:
            out["checked_s_ago"] = round(self.clock() - self.checked_at, 3)
        return out
