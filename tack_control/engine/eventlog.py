"""The /events log: every published record, its cursor, and who is waiting for more.

``created`` is wall-clock Unix nanoseconds, strictly increasing, and is the
cursor of Tangled's event streams; each envelope carries it, as current
spindles' do (docs/tangled-current.md §2). Each row holds the frame exactly as it is
sent, so serving a subscriber never re-encodes. Recent rows are also kept in
memory, so a thousand live subscribers do not each query SQLite per event;
a subscriber further behind reads SQLite in pages.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import time
from typing import Any

from tack_common.notify import Notifier
from tack_common.tid import TidClock, is_tid, parse_tid
from tack_control import metrics


STATUS_NSID = "sh.tangled.pipeline.status"


class EventLog:
    """Appends frames to the ``events`` table and serves them by cursor."""

    def __init__(self, conn: sqlite3.Connection, ring_size: int = 20_000) -> None:
        self.conn = conn
        self.ring_size = ring_size
        self.changed = Notifier()
        row = conn.execute("SELECT created, rkey FROM events ORDER BY created DESC LIMIT 1").fetchone()
        self.last_created: int = row[0] if row else 0
        # Never reissue a stored rkey, even if the wall clock stepped back across a restart.
        self.tids = TidClock(last_us=parse_tid(row[1])[0] if row and is_tid(row[1]) else 0)
        # The ring holds every event with created > ring_floor.
        self.ring_floor = self.last_created
        self._created: list[int] = []
        self._frames: list[str] = []
        self._uncommitted: list[tuple[int, str]] = []

    def insert(
        self, conn: sqlite3.Connection, nsid: str, record: dict[str, Any], rkey: str | None = None
    ) -> tuple[int, str]:
        """Store a record inside the caller's transaction, under ``rkey`` or a fresh TID; returns (created, rkey).

        Call :meth:`flush` after the commit (or :meth:`discard` after a rollback).
        """
        created = max(time.time_ns(), self.last_created + 1)
        rkey = rkey or self.tids.next()
        # Current spindles' envelope, in their order; `created` is the cursor (a 2025 appview ignores it).
        frame = json.dumps(
            {"rkey": rkey, "nsid": nsid, "event": record, "created": created},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        conn.execute(
            "INSERT INTO events (created, rkey, nsid, frame) VALUES (?, ?, ?, ?)",
            (created, rkey, nsid, frame),
        )
        self.last_created = created
        self._uncommitted.append((created, frame))
        return created, rkey

    def flush(self) -> None:
        """Make committed inserts visible to subscribers and wake them."""
        if not self._uncommitted:
            return
        for created, frame in self._uncommitted:
            self._created.append(created)
            self._frames.append(frame)
        metrics.EVENTS_PUBLISHED.inc(len(self._uncommitted))
        self._uncommitted.clear()
        if len(self._created) > 2 * self.ring_size:
            cut = len(self._created) - self.ring_size
            self.ring_floor = self._created[cut - 1]
            del self._created[:cut], self._frames[:cut]
        self.changed.notify()

    def discard(self) -> None:
        """Forget inserts of a rolled-back transaction."""
        self._uncommitted.clear()

    def after(self, cursor: int, limit: int = 1000) -> list[tuple[int, str]]:
        """Up to ``limit`` committed (created, frame) pairs with created > ``cursor``, oldest first."""
        if cursor >= self.ring_floor:
            start = bisect.bisect_right(self._created, cursor)
            end = min(start + limit, len(self._created))
            return list(zip(self._created[start:end], self._frames[start:end], strict=True))
        rows = self.conn.execute(
            "SELECT created, frame FROM events WHERE created > ? ORDER BY created LIMIT ?", (cursor, limit)
        ).fetchall()
        return [(int(c), str(f)) for c, f in rows]

    def head(self) -> int:
        """The cursor of the newest committed event (0 when there is none)."""
        return self._created[-1] if self._created else self.ring_floor

    def prune(self, older_than_ns: int) -> int:
        """Delete stored events created before ``older_than_ns``; returns how many."""
        return self.conn.execute("DELETE FROM events WHERE created < ?", (older_than_ns,)).rowcount
