"""SQLite as every tack process opens it: WAL, transactions, background checkpoints (tack_common.sqlite)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from tack_common import sqlite as kit_sqlite


# sqlite: background checkpoints


def _fill(conn: sqlite3.Connection, pages: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS filler (blob BLOB)")
    for _ in range(pages // 10):
        conn.execute("INSERT INTO filler VALUES (?)", (b"x" * 40_000,))


def test_background_checkpoints_take_checkpoints_off_the_writing_connection(tmp_path: Path) -> None:
    """The writer never checkpoints (its writes stay in the WAL past 1,000 pages) until checkpoint() runs."""
    path = str(tmp_path / "db.sqlite")
    conn = kit_sqlite.connect(path)
    checkpoints = kit_sqlite.BackgroundCheckpoints(conn, path, interval=3600)
    try:
        _fill(conn, 2_000)
        assert os.path.getsize(path) < 100_000 < os.path.getsize(path + "-wal")
        checkpoints.checkpoint()
        assert os.path.getsize(path) > 2_000 * 4096
        assert conn.execute("SELECT COUNT(*) FROM filler").fetchone()[0] == 200
    finally:
        checkpoints.close()
        conn.close()


def test_background_checkpoints_thread_checkpoints_and_close_hands_back(tmp_path: Path) -> None:
    """The thread checkpoints on its own within its interval; close() stops it and restores autocheckpoint."""
    path = str(tmp_path / "db.sqlite")
    conn = kit_sqlite.connect(path)
    checkpoints = kit_sqlite.BackgroundCheckpoints(conn, path, interval=0.05)
    _fill(conn, 2_000)
    deadline = time.monotonic() + 5
    while os.path.getsize(path) < 2_000 * 4096 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.getsize(path) > 2_000 * 4096
    checkpoints.close()
    assert not checkpoints._thread.is_alive()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    conn.close()


def test_a_failed_commit_is_rolled_back_and_the_next_write_succeeds(tmp_path: Path) -> None:
    """A COMMIT refused by a deferred foreign key leaves no open transaction: the next transaction commits."""
    conn = kit_sqlite.connect(str(tmp_path / "t.db"))
    conn.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    with pytest.raises(sqlite3.IntegrityError), kit_sqlite.Transaction(conn) as c:
        c.execute("INSERT INTO child (parent) VALUES (42)")
    assert not conn.in_transaction
    with kit_sqlite.Transaction(conn) as c:
        c.execute("INSERT INTO parent (id) VALUES (1)")
    assert conn.execute("SELECT COUNT(*) FROM parent").fetchone() == (1,)
    assert conn.execute("SELECT COUNT(*) FROM child").fetchone() == (0,)


def test_migrations_run_once_in_order_and_record_the_version(tmp_path: Path) -> None:
    """Each step runs once, in order; reopening runs only the steps added since; a function step can move data."""
    path = str(tmp_path / "m.db")
    steps: list[kit_sqlite.Migration] = ["CREATE TABLE t (a INTEGER);\nINSERT INTO t VALUES (1);"]
    conn = kit_sqlite.connect(path)
    assert kit_sqlite.migrate(conn, kit_sqlite.Schema("", tuple(steps))) == 1
    assert kit_sqlite.migrate(conn, kit_sqlite.Schema("", tuple(steps))) == 0

    def double(c: sqlite3.Connection) -> None:
        c.execute("UPDATE t SET a = a * 2")

    steps += ["ALTER TABLE t ADD COLUMN b TEXT NOT NULL DEFAULT 'x';", double]
    assert kit_sqlite.migrate(conn, kit_sqlite.Schema("", tuple(steps))) == 2
    assert kit_sqlite.schema_version(conn) == 3
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(2, "x")]


def test_a_failing_migration_changes_nothing_and_keeps_the_version(tmp_path: Path) -> None:
    """A step that fails part-way is rolled back whole; the version stays where it was."""
    conn = kit_sqlite.connect(str(tmp_path / "m.db"))
    kit_sqlite.migrate(conn, kit_sqlite.Schema("", ("CREATE TABLE t (a INTEGER);",)))
    broken = kit_sqlite.Schema(
        "", ("CREATE TABLE t (a INTEGER);", "CREATE TABLE u (a);\nINSERT INTO nope VALUES (1);")
    )
    with pytest.raises(sqlite3.OperationalError):
        kit_sqlite.migrate(conn, broken)
    assert kit_sqlite.schema_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name='u'").fetchone() is None
    assert not conn.in_transaction


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    """Opening a database migrated by a newer release fails with a message saying so, and changes nothing."""
    conn = kit_sqlite.connect(str(tmp_path / "m.db"))
    kit_sqlite.migrate(conn, kit_sqlite.Schema("", ("CREATE TABLE t (a);", "CREATE TABLE u (a);")))
    with pytest.raises(kit_sqlite.SchemaTooNew, match="version 2"):
        kit_sqlite.migrate(conn, kit_sqlite.Schema("", ("CREATE TABLE t (a);",)))
