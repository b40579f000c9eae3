"""SQLite as every tack process opens it: WAL, transactions, background checkpoints (tack_common.sqlite)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

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
