"""The control plane database: a database of the first release migrates to the current schema without loss."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tack_common.sqlite import SchemaTooNew, schema_version
from tack_control.engine.db import SCHEMA, V1, V_CI_COUNTS, V_PULL_OCCASIONS, open_db
from tests.support.samples import PUSH_FRAME


def _first_release_database(path: Path) -> None:
    """A database as the first release left it: no schema version, two pipelines received in the same ns."""
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    push = json.loads(PUSH_FRAME)["event"]
    manual = {"triggerMetadata": {"kind": "manual", "manual": {}, "repo": push["triggerMetadata"]["repo"]}}
    rows = [
        ("knot1.tangled.sh", "3m7a", json.dumps(push), 1_000),
        ("knot1.tangled.sh", "3m7b", json.dumps(manual), 1_000),
    ]
    conn.executemany("INSERT INTO pipelines (knot, rkey, record, received_ns) VALUES (?, ?, ?, ?)", rows)
    conn.execute(
        "INSERT INTO workflows (knot, rkey, name, status, dispatch, created_ns, updated_ns)"
        " VALUES ('knot1.tangled.sh', '3m7a', 'build.yml', 'success', 'accepted', 1, 2)"
    )
    conn.execute(
        "INSERT INTO events (created, rkey, nsid, frame) VALUES (5, '3m7c', 'sh.tangled.pipeline.status', '{}')"
    )
    conn.execute(
        "INSERT INTO repos (did, rkey, name, knot, spindle) VALUES ('did:plc:o', 'r', 'hello', 'k', 's')"
    )
    conn.commit()
    conn.close()


def test_a_first_release_database_migrates_without_loss(tmp_path: Path) -> None:
    """Every row survives; pipelines get unique increasing created_ns, their kind and commit; repos stay legacy."""
    path = tmp_path / "tack.db"
    _first_release_database(path)
    conn = open_db(str(path))
    try:
        assert schema_version(conn) == SCHEMA.version
        pipelines = conn.execute(
            "SELECT rkey, created_ns, kind, commit_sha, origin FROM pipelines ORDER BY rkey"
        ).fetchall()
        assert pipelines == [
            ("3m7a", 1_000, "push", "9f2c1e0d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392", "knot"),
            ("3m7b", 1_001, "manual", "", "knot"),
        ]
        assert conn.execute("SELECT name, status, started_s, finished_s FROM workflows").fetchall() == [
            ("build.yml", "success", 0, 0)
        ]
        assert conn.execute("SELECT created, rkey FROM events").fetchall() == [(5, "3m7c")]
        assert conn.execute("SELECT name, repo_did, state FROM repos").fetchall() == [("hello", "", "legacy")]
    finally:
        conn.close()
    reopened = open_db(str(path))
    assert reopened.execute("SELECT COUNT(*) FROM pipelines").fetchone() == (2,)
    reopened.close()


def test_a_database_from_a_newer_tack_is_refused(tmp_path: Path) -> None:
    """A database migrated past this code's schema is not opened (and not touched)."""
    path = tmp_path / "tack.db"
    open_db(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA.version + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        open_db(str(path))


def _counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {(r, k): n for r, k, n in conn.execute("SELECT repo_did, kind, n FROM pipeline_counts") if n}


def _true_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        "SELECT repo_did, kind, COUNT(*) FROM pipelines WHERE repo_did <> '' GROUP BY repo_did, kind"
    )
    return {(r, k): n for r, k, n in rows}


def test_pipeline_counts_are_backfilled_then_kept_by_every_write(tmp_path: Path) -> None:
    """Counts per repo and kind match the rows after the migration and after inserts, updates and prunes."""
    path = tmp_path / "tack.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in SCHEMA.migrations[: SCHEMA.migrations.index(V_CI_COUNTS)]:
        if callable(step):
            step(conn)
        else:
            conn.executescript(step)
    conn.execute(f"PRAGMA user_version={SCHEMA.migrations.index(V_CI_COUNTS)}")

    def add(rkey: str, repo_did: str, kind: str) -> None:
        conn.execute(
            "INSERT INTO pipelines (knot, rkey, record, received_ns, created_ns, repo_did, kind)"
            " VALUES ('k', ?, '{}', 1, ?, ?, ?)",
            (rkey, int(rkey[1:]), repo_did, kind),
        )

    add("p1", "did:plc:a", "push")
    add("p2", "did:plc:a", "manual")
    add("p3", "", "push")
    conn.close()
    conn = open_db(str(path))
    try:
        assert _counts(conn) == _true_counts(conn) == {("did:plc:a", "push"): 1, ("did:plc:a", "manual"): 1}
        for i in range(4, 10):
            add(f"p{i}", "did:plc:b" if i % 2 else "did:plc:a", "pull_request" if i % 3 else "push")
        conn.execute("UPDATE pipelines SET repo_did='did:plc:c' WHERE rkey='p3'")
        conn.execute("UPDATE pipelines SET kind='push' WHERE rkey='p2'")
        conn.execute("UPDATE pipelines SET received_ns=2 WHERE rkey='p4'")
        conn.execute("DELETE FROM pipelines WHERE rkey IN ('p1', 'p5')")
        assert _counts(conn) == _true_counts(conn)
        assert sum(_counts(conn).values()) == 7
    finally:
        conn.close()


def test_pull_runs_remembered_before_occasions_are_kept(tmp_path: Path) -> None:
    """Runs remembered by (pull, commit, action) survive the move to (pull, occasion, commit), action as occasion."""
    path = tmp_path / "tack.db"
    conn = sqlite3.connect(path, isolation_level=None)
    version = SCHEMA.migrations.index(V_PULL_OCCASIONS)
    for step in SCHEMA.migrations[:version]:
        if callable(step):
            step(conn)
        else:
            conn.executescript(step)
    conn.execute(f"PRAGMA user_version={version}")
    conn.execute(
        "INSERT INTO pull_runs (uri, sha, action, pipeline_rkey, received_ns) VALUES ('u', 's', 'opened', 'p', 7)"
    )
    conn.close()
    migrated = open_db(str(path))
    assert migrated.execute(
        "SELECT uri, occasion, sha, action, pipeline_rkey, received_ns FROM pull_runs"
    ).fetchall() == [("u", "opened", "s", "opened", "p", 7)]
    assert [r[1] for r in migrated.execute("PRAGMA table_info(pull_events)")][-2:] == [
        "event_rkey",
        "outcome",
    ]
    migrated.close()
