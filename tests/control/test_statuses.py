"""The forward-only status state machine and the one-second spacing of published statuses (tack_control.engine.statuses)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tack_control.engine.statuses import StatusBook, pipeline_uri, status_record
from tests.support.samples import (
    KNOT,
    PIPELINE_RKEY,
    RFC3339_SECONDS_Z,
    STATUS_EXAMPLE,
    add_workflow,
    epoch_s,
    published,
)


# statuses and the event log


def test_status_record_matches_the_doc_example() -> None:
    """A failed status record has the doc's fields; `$type` names the collection."""
    second = epoch_s("2025-12-03T09:21:51Z")
    record = status_record(KNOT, PIPELINE_RKEY, "build.yml", "failed", second, "workflow failed", None)
    expected = json.loads(STATUS_EXAMPLE)
    expected["$type"] = STATUS_NSID
    assert record == expected


@pytest.mark.parametrize("status", ["pending", "running", "success", "timeout", "cancelled"])
def test_error_and_exit_code_only_on_failed(status: str) -> None:
    """Statuses other than failed carry neither `error` nor `exitCode`, even when given them."""
    record = status_record(KNOT, PIPELINE_RKEY, "build.yml", status, 0, "boom", 3)
    assert "error" not in record and "exitCode" not in record
    failed = status_record(KNOT, PIPELINE_RKEY, "build.yml", "failed", 0, "", 3)
    assert (failed["error"], failed["exitCode"]) == ("workflow failed", 3)


def test_pipeline_uri_keeps_the_knot_verbatim() -> None:
    """The pipeline AT-URI is at://did:web:<knot>/… with the knot, port included, not encoded."""
    assert pipeline_uri("localhost:6444", PIPELINE_RKEY) == (
        "at://did:web:localhost:6444/sh.tangled.pipeline/3m7abcxyz2k22"
    )
    assert pipeline_uri(KNOT, PIPELINE_RKEY) == json.loads(STATUS_EXAMPLE)["pipeline"]


def test_statuses_only_move_forward(conn: sqlite3.Connection, book: StatusBook, events: EventLog) -> None:
    """Duplicates and regressions are dropped, and a terminal status is final."""
    wf = add_workflow(conn, "build.yml")
    steps = [
        ("pending", True),
        ("pending", False),
        ("running", True),
        ("running", False),
        ("pending", False),
        ("failed", True),
        ("success", False),
        ("running", False),
        ("failed", False),
    ]
    for status, accepted in steps:
        with book.transaction() as c:
            assert book.record(c, wf, status, "boom") is accepted, status
    assert conn.execute("SELECT status, error FROM workflows WHERE id=?", (wf,)).fetchone() == (
        "failed",
        "boom",
    )
    held = conn.execute("SELECT status FROM status_queue ORDER BY id").fetchall()
    assert [r["status"] for r in published(events)] + [h[0] for h in held] == ["pending", "running", "failed"]


def test_status_for_an_unknown_workflow_is_dropped(book: StatusBook, events: EventLog) -> None:
    """A status for a workflow id that does not exist is dropped."""
    with book.transaction() as c:
        assert book.record(c, 12345, "running") is False
    assert published(events) == []


def test_first_status_is_published_at_once(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """A workflow's first status is published immediately with createdAt in whole seconds, `Z`, not in the future."""
    wf = add_workflow(conn, "build.yml", knot="localhost:6444")
    before = time.time_ns() // 1_000_000_000
    with book.transaction() as c:
        book.record(c, wf, "pending")
    [record] = published(events)
    assert before <= epoch_s(record["createdAt"]) <= time.time()
    assert record == {
        "$type": STATUS_NSID,
        "createdAt": record["createdAt"],
        "pipeline": "at://did:web:localhost:6444/sh.tangled.pipeline/3m7abcxyz2k22",
        "status": "pending",
        "workflow": "build.yml",
    }
    assert book.held() == 0


def _early_in_a_second() -> int:
    """Sleep, if need be, until early in a wall-clock second; returns that second."""
    fraction = time.time() % 1
    if fraction > 0.25:
        time.sleep(1.005 - fraction)
    return int(time.time())


def test_second_status_within_a_second_is_held_until_its_second(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """A second status of one workflow in the same second waits in status_queue; other workflows do not."""
    a = add_workflow(conn, "a.yml")
    b = add_workflow(conn, "b.yml")
    second = _early_in_a_second()
    with book.transaction() as c:
        book.record(c, a, "pending")
    with book.transaction() as c:
        assert book.record(c, a, "running")
        assert book.record(c, b, "pending")
    assert int(time.time()) == second, "the machine stalled across a second boundary; timing is void"
    assert book.held() == 1
    assert [(r["workflow"], r["status"]) for r in published(events)] == [
        ("a.yml", "pending"),
        ("b.yml", "pending"),
    ]
    assert conn.execute("SELECT status FROM workflows WHERE id=?", (a,)).fetchone() == ("running",)
    due = book.release_due()
    assert due == float(second + 1)
    assert book.held() == 1
    with book.transaction() as c:
        assert book.record(c, a, "success")
    assert book.held() == 2

    time.sleep(max(0.0, due - time.time()) + 0.02)
    assert book.release_due() == float(second + 2)
    assert book.held() == 1
    records = [r for r in published(events) if r["workflow"] == "a.yml"]
    assert [r["status"] for r in records] == ["pending", "running"]
    assert [epoch_s(r["createdAt"]) for r in records] == [second, second + 1]
    assert all(RFC3339_SECONDS_Z.fullmatch(r["createdAt"]) for r in published(events))
    assert all("error" not in r and "exitCode" not in r for r in published(events))


def test_failed_status_carries_error_and_exit_code(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """A failed status publishes its error and exit code; -1 when the exit code is unknown."""
    a = add_workflow(conn, "a.yml")
    b = add_workflow(conn, "b.yml")
    with book.transaction() as c:
        book.record(c, a, "failed", "unknown provider", None)
        book.record(c, b, "failed", "exit 2", 2)
    assert [(r["error"], r["exitCode"]) for r in published(events)] == [
        ("unknown provider", -1),
        ("exit 2", 2),
    ]


def test_rolled_back_statuses_are_not_published(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """Statuses recorded in a transaction that fails are neither stored nor served."""
    wf = add_workflow(conn, "a.yml")

    def fail_after_recording() -> None:
        with book.transaction() as c:
            book.record(c, wf, "pending")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_after_recording()
    assert published(events) == []
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    assert conn.execute("SELECT status FROM workflows WHERE id=?", (wf,)).fetchone() == ("",)
