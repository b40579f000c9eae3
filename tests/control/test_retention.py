"""Retention: old events and finished workflows are pruned without breaking cursors inside the window."""

from __future__ import annotations

import time
from pathlib import Path

from tack_control.engine.db import open_db
from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tack_control.engine.retention import prune
from tack_control.engine.statuses import StatusBook


def test_prune_keeps_the_window_and_cursors_inside_it_resume_exactly(tmp_path: Path) -> None:
    """Events before the cutoff go; a cursor inside the window gets exactly the events after it."""
    conn = open_db(str(tmp_path / "tack.db"))
    events = EventLog(conn)
    book = StatusBook(conn, events)
    created = []
    with book.transaction() as tx:
        for i in range(10):
            created.append(events.insert(tx, STATUS_NSID, {"n": i})[0])
    cutoff = created[4]
    cursor_inside = created[6]
    before = events.after(cursor_inside)
    assert prune(book, events, cutoff).events == 4
    reopened = EventLog(conn)
    assert reopened.after(cursor_inside) == before
    assert [c for c, _ in reopened.after(0)] == created[4:]


def test_prune_forgets_finished_workflows_but_keeps_unfinished_ones(tmp_path: Path) -> None:
    """Finished workflows (and their pipelines) older than the window go; pending and running ones stay."""
    conn = open_db(str(tmp_path / "tack.db"))
    events = EventLog(conn)
    book = StatusBook(conn, events)
    old = time.time_ns() - 10**12
    with book.transaction() as tx:
        for i, (rkey, status) in enumerate(
            (("a", "success"), ("b", "running"), ("c", "pending"), ("d", "failed"))
        ):
            tx.execute(
                "INSERT INTO pipelines (knot, rkey, record, received_ns, created_ns) VALUES ('k', ?, '{}', ?, ?)",
                (rkey, old, old + i),
            )
            tx.execute(
                "INSERT INTO workflows (knot, rkey, name, status, dispatch, created_ns, updated_ns)"
                " VALUES ('k', ?, 'w.yml', ?, 'accepted', ?, ?)",
                (rkey, status, old, old),
            )
        for state in ("done", "queued", "skipped"):
            tx.execute(
                "INSERT INTO pushes (repo, ref, new_sha, knot, state, received_ns) VALUES ('r', 'refs/heads/x', ?, 'k', ?, ?)",
                (state, state, old),
            )
    pruned = prune(book, events, old + 1)
    assert (pruned.workflows, pruned.pipelines, pruned.pushes) == (2, 2, 2)
    assert [r[0] for r in conn.execute("SELECT state FROM pushes")] == ["queued"]
    left = {r[0] for r in conn.execute("SELECT rkey FROM workflows")}
    assert left == {"b", "c"}
    assert {r[0] for r in conn.execute("SELECT rkey FROM pipelines")} == {"b", "c"}
