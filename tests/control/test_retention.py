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


def test_prune_forgets_decided_pull_events_and_old_runs(tmp_path: Path) -> None:
    """Pull events decided before the cutoff and runs remembered before it go; a queued event stays."""
    conn = open_db(str(tmp_path / "tack.db"))
    events = EventLog(conn)
    book = StatusBook(conn, events)
    old, new = time.time_ns() - 10**12, time.time_ns()
    with book.transaction() as tx:
        for state, received in (("done", old), ("rejected", old), ("queued", old), ("done", new)):
            tx.execute(
                "INSERT INTO pull_events (uri, collection, actor, action, record, state, received_ns)"
                " VALUES ('at://did:plc:a/sh.tangled.repo.pull/x', 'sh.tangled.repo.pull', 'did:plc:a', 'opened', '', ?, ?)",
                (state, received),
            )
        for occasion, received in (("round 1", old), ("round 2", new)):
            tx.execute(
                "INSERT INTO pull_runs (uri, occasion, sha, action, received_ns) VALUES ('u', ?, 's', 'opened', ?)",
                (occasion, received),
            )
    pruned = prune(book, events, old + 1)
    assert (pruned.pull_events, pruned.pull_runs) == (2, 1)
    assert conn.execute("SELECT state FROM pull_events ORDER BY id").fetchall() == [("queued",), ("done",)]
    assert conn.execute("SELECT occasion FROM pull_runs").fetchall() == [("round 2",)]
