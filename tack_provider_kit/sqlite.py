"""Opening SQLite databases the way every tack process uses them."""

from __future__ import annotations

import os
import sqlite3


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
