"""The workflow status state machine and the publication of statuses to /events.

Per workflow, only forward moves are accepted (pending → running → one terminal
status); anything else is a duplicate or a regression and is dropped.

The appview orders a workflow's statuses by their ``createdAt`` in whole
seconds and ingests concurrently, so two statuses of one workflow inside the
same second can be shown in the wrong order. Each accepted status is therefore
published with a ``createdAt`` at least one second after the previous one of
that workflow; ``createdAt`` is never later than real time, so a status that
comes too soon waits (durably, in ``status_queue``) until its second begins.
Other workflows are not held up.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from tack_common import sqlite as kit_sqlite, status as st
from tack_common.notify import Notifier
from tack_common.timefmt import NS_PER_SECOND, rfc3339_seconds
from tack_control.engine.eventlog import STATUS_NSID, EventLog


def pipeline_uri(knot: str, rkey: str) -> str:
    """The AT-URI Tangled uses for a knot's pipeline: the knot verbatim after ``did:web:``."""
    return f"at://did:web:{knot}/sh.tangled.pipeline/{rkey}"


def status_record(
    knot: str, rkey: str, workflow: str, status: str, created_s: int, error: str, exit_code: int | None
) -> dict[str, Any]:
    """The ``sh.tangled.pipeline.status`` record; ``error``/``exitCode`` only on failed."""
    record: dict[str, Any] = {"$type": STATUS_NSID, "createdAt": rfc3339_seconds(created_s * NS_PER_SECOND)}
    if status == "failed":
        record["error"] = error or "workflow failed"
        record["exitCode"] = -1 if exit_code is None else exit_code
    record["pipeline"] = pipeline_uri(knot, rkey)
    record["status"] = status
    record["workflow"] = workflow
    return record


class StatusBook:
    """Applies status changes to the ``workflows`` table and publishes them through the event log."""

    def __init__(self, conn: sqlite3.Connection, events: EventLog) -> None:
        self.conn = conn
        self.events = events
        self.held_changed = Notifier()
        self._held_added = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; on commit, published events reach subscribers."""
        try:
            with kit_sqlite.Transaction(self.conn) as conn:
                yield conn
        except BaseException:
            self.events.discard()
            self._held_added = False
            raise
        self.events.flush()
        if self._held_added:
            self._held_added = False
            self.held_changed.notify()

    def record(
        self,
        conn: sqlite3.Connection,
        workflow_id: int,
        status: str,
        error: str = "",
        exit_code: int | None = None,
    ) -> bool:
        """Accept ``status`` for a workflow if it moves forward; False when dropped. Call inside :meth:`transaction`."""
        row = conn.execute("SELECT status, last_event_s FROM workflows WHERE id=?", (workflow_id,)).fetchone()
        if row is None:
            return False
        current = None if row[0] == "" else st.from_name(row[0])
        if not st.advances(current, st.from_name(status)):
            return False
        now_ns = time.time_ns()
        conn.execute(
            "UPDATE workflows SET status=?, error=?, exit_code=?, updated_ns=? WHERE id=?",
            (status, error, exit_code, now_ns, workflow_id),
        )
        waiting = conn.execute(
            "SELECT 1 FROM status_queue WHERE workflow_id=? LIMIT 1", (workflow_id,)
        ).fetchone()
        if waiting is None and now_ns // NS_PER_SECOND > row[1]:
            self._publish(conn, workflow_id, status, error, exit_code, now_ns // NS_PER_SECOND)
        else:
            conn.execute(
                "INSERT INTO status_queue (workflow_id, status, error, exit_code) VALUES (?, ?, ?, ?)",
                (workflow_id, status, error, exit_code),
            )
            self._held_added = True
        return True

    def _publish(
        self,
        conn: sqlite3.Connection,
        workflow_id: int,
        status: str,
        error: str,
        exit_code: int | None,
        second: int,
    ) -> None:
        knot, rkey, name = conn.execute(
            "SELECT knot, rkey, name FROM workflows WHERE id=?", (workflow_id,)
        ).fetchone()
        record = status_record(knot, rkey, name, status, second, error, exit_code)
        self.events.insert(conn, STATUS_NSID, record)
        # The CI API's startedAt and finishedAt are the createdAt of these statuses, as stock spindles report.
        conn.execute(
            "UPDATE workflows SET last_event_s=?1,"
            " started_s=CASE WHEN ?2 = 'running' AND started_s = 0 THEN ?1 ELSE started_s END,"
            " finished_s=CASE WHEN ?2 IN ('success', 'failed', 'timeout', 'cancelled') THEN ?1 ELSE finished_s END"
            " WHERE id=?3",
            (second, status, workflow_id),
        )

    def release_due(self) -> float | None:
        """Publish every held status whose second has come; returns when the next one is due (epoch s)."""
        with self.transaction() as conn:
            while True:
                now_s = time.time_ns() // NS_PER_SECOND
                rows = conn.execute(
                    "SELECT q.id, q.workflow_id, q.status, q.error, q.exit_code, w.last_event_s"
                    " FROM status_queue q JOIN workflows w ON w.id = q.workflow_id"
                    " WHERE q.id IN (SELECT MIN(id) FROM status_queue GROUP BY workflow_id)"
                ).fetchall()
                if not rows:
                    return None
                due = [r for r in rows if now_s > r[5]]
                if not due:
                    return float(min(r[5] for r in rows) + 1)
                for queue_id, workflow_id, status, error, exit_code, _ in due:
                    self._publish(conn, workflow_id, status, error, exit_code, now_s)
                    conn.execute("DELETE FROM status_queue WHERE id=?", (queue_id,))

    def held(self) -> int:
        """How many statuses wait for their second."""
        return int(self.conn.execute("SELECT COUNT(*) FROM status_queue").fetchone()[0])
