"""Opening SQLite databases the way every tack process uses them."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading


log = logging.getLogger(__name__)
# After a checkpoint, a WAL file larger than this is truncated back to it.
WAL_SIZE_LIMIT = 64 << 20


def connect(path: str) -> sqlite3.Connection:
    """Open (creating) the database at ``path`` in WAL mode, in autocommit, ready for one event loop.

    WAL with ``synchronous=NORMAL`` keeps every committed transaction across a
    crash of the process (``kill -9``); only a power loss may drop the last ones.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Transaction:
    """``with Transaction(conn):`` runs the block in BEGIN IMMEDIATE … COMMIT, rolling back on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


class BackgroundCheckpoints:
    """Checkpoints ``conn``'s WAL from a thread of its own, so the event loop never stops for one.

    SQLite's automatic checkpoint runs inside the commit that crosses 1,000
    WAL pages: it copies them into the database and syncs it, about 15 ms with
    the event loop held, every few hundred writes (the p99 of the provider
    status benchmark). Here a thread with its own connection runs a PASSIVE
    checkpoint every ``interval`` seconds; sqlite3 releases the GIL meanwhile
    and the writer does not wait for it. :meth:`close` restores automatic
    checkpoints on ``conn``.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, interval: float = 1.0) -> None:
        self.conn = conn
        self.interval = interval
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._stop = threading.Event()
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.checkpoint()
        self._reader.close()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database now, as far as readers allow."""
        try:
            self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("background checkpoint failed; next one in %ss", self.interval, exc_info=exc)

    def close(self) -> None:
        """Stop the thread and hand checkpoints back to ``conn`` (which still runs one if due)."""
        self._stop.set()
        self._thread.join()
        self.conn.execute("PRAGMA wal_autocheckpoint=1000")
