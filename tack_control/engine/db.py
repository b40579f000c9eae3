"""The control plane's SQLite database: its versioned schema and opening it."""

from __future__ import annotations

import sqlite3

from tack_common import sqlite as kit_sqlite


# Version 1: the schema of the first release (IF NOT EXISTS: databases made before versioning were at it).
V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Jetstream mirror, keyed by the record (author DID, rkey).
CREATE TABLE IF NOT EXISTS members (
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    subject TEXT NOT NULL,
    instance TEXT NOT NULL,
    PRIMARY KEY (did, rkey)
);
CREATE TABLE IF NOT EXISTS repos (
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    name TEXT NOT NULL,
    knot TEXT NOT NULL,
    spindle TEXT NOT NULL,
    PRIMARY KEY (did, rkey)
);
CREATE INDEX IF NOT EXISTS repos_by_name ON repos (knot, did, name);
CREATE TABLE IF NOT EXISTS collaborators (
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    subject TEXT NOT NULL,
    repo TEXT NOT NULL,
    PRIMARY KEY (did, rkey)
);
CREATE TABLE IF NOT EXISTS knot_cursors (
    knot TEXT PRIMARY KEY,
    cursor_ns INTEGER NOT NULL
);
-- Every pipeline trigger acted on, so a replayed trigger is recognised.
CREATE TABLE IF NOT EXISTS pipelines (
    knot TEXT NOT NULL,
    rkey TEXT NOT NULL,
    record TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (knot, rkey)
);
CREATE TABLE IF NOT EXISTS workflows (
    id INTEGER PRIMARY KEY,
    knot TEXT NOT NULL,
    rkey TEXT NOT NULL,
    name TEXT NOT NULL,
    provider TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    -- queued: waiting for Spawn; accepted: the provider has it; failed: tack failed it itself.
    dispatch TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    -- When the current dispatch began; the give-up time counts from here.
    queued_ns INTEGER NOT NULL DEFAULT 0,
    -- Spawn this workflow alone (its pipeline's batch was rejected as a whole).
    solo INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    last_event_s INTEGER NOT NULL DEFAULT 0,
    UNIQUE (knot, rkey, name)
);
CREATE INDEX IF NOT EXISTS workflows_to_dispatch ON workflows (dispatch, next_attempt_ns);
CREATE INDEX IF NOT EXISTS workflows_by_status ON workflows (status, updated_ns);
-- Statuses accepted by the state machine but not yet published (see eventlog.py).
CREATE TABLE IF NOT EXISTS status_queue (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    exit_code INTEGER
);
CREATE INDEX IF NOT EXISTS status_queue_by_workflow ON status_queue (workflow_id, id);
-- The /events log: created is the cursor (Unix ns, strictly increasing).
CREATE TABLE IF NOT EXISTS events (
    created INTEGER PRIMARY KEY,
    rkey TEXT NOT NULL,
    nsid TEXT NOT NULL,
    frame TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_cursors (
    provider TEXT PRIMARY KEY,
    after_seq INTEGER NOT NULL,
    -- The provider's outbox id (WatchStatus metadata) that after_seq counts in.
    outbox_id TEXT NOT NULL DEFAULT ''
);
"""


SCHEMA = kit_sqlite.Schema("", (V1,))


def open_db(path: str) -> sqlite3.Connection:
    """Open the control plane database, creating it or migrating it to the current schema version."""
    conn = kit_sqlite.connect(path)
    try:
        kit_sqlite.migrate(conn, SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A value from the meta table."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Store a value in the meta table."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )
