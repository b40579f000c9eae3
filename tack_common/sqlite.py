"""Opening SQLite databases the way every tack process uses them, and versioning their schemas."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tack_common.throttle import LogThrottle


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
    """``with Transaction(conn):`` runs the block in BEGIN IMMEDIATE … COMMIT, rolling back on any failure.

    A COMMIT can fail too (a deferred foreign key, a full disk, an I/O error);
    the transaction is then still open on the connection, and every later
    BEGIN would fail. So a failed COMMIT is rolled back before its error is
    raised, and the connection is always left outside a transaction.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                rollback(self.conn)
                raise
        else:
            rollback(self.conn)


def rollback(conn: sqlite3.Connection) -> None:
    """End the open transaction, if any, discarding it; never raises for a transaction SQLite already ended."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            # SQLite may have rolled back by itself (e.g. after SQLITE_FULL); nothing is left to undo.
            if conn.in_transaction:
                raise


Migration = str | Callable[[sqlite3.Connection], None]
"""One schema step: SQL statements, or a function for steps SQL alone cannot express (it runs in the step's transaction)."""


@dataclass(frozen=True)
class Schema:
    """The numbered migrations of one part of a database; version N means the first N have run.

    The database's own schema (``component=""``) keeps its version in
    ``PRAGMA user_version``; an extension that shares the file (a provider's
    tables in the provider kit's database) keeps its own in ``schema_versions``.
    Migrations are only ever appended: a released step never changes.
    """

    component: str
    migrations: Sequence[Migration]

    @property
    def version(self) -> int:
        """The version this code expects."""
        return len(self.migrations)


class SchemaTooNew(Exception):
    """The database was written by a newer tack than this one (downgrades are not supported)."""


def schema_version(conn: sqlite3.Connection, component: str = "") -> int:
    """The version ``component``'s schema is at in this database (0 when never migrated)."""
    if not component:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    row = conn.execute("SELECT version FROM schema_versions WHERE component=?", (component,)).fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, schema: Schema) -> int:
    """Run the migrations ``schema`` has that the database lacks, each in its own transaction; the versions run.

    Raises :class:`SchemaTooNew` for a database at a later version than this code knows.
    """
    current = schema_version(conn, schema.component)
    if current > schema.version:
        raise SchemaTooNew(
            f"database schema {schema.component or 'main'} is at version {current};"
            f" this tack knows versions up to {schema.version}: run a newer tack or restore a backup"
        )
    for number in range(current + 1, schema.version + 1):
        step = schema.migrations[number - 1]
        with Transaction(conn):
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            if schema.component:
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                    " ON CONFLICT (component) DO UPDATE SET version=excluded.version",
                    (schema.component, number),
                )
            else:
                conn.execute(f"PRAGMA user_version={number}")
        log.info("database migrated", extra={"schema": schema.component or "main", "version": number})
    return schema.version - current


def _statements(script: str) -> list[str]:
    """The complete SQL statements of ``script``, split where SQLite says a statement ends."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")
    return statements


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
        self._failures = LogThrottle()
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
            # A full disk fails every checkpoint until space returns: once a minute is enough to say so.
            held = self._failures.allow(str(exc))
            if held is not None:
                log.warning(
                    "background checkpoint failed; retried every %ss",
                    self.interval,
                    exc_info=exc,
                    extra={"similar_not_logged": held},
                )

    def close(self) -> None:
        """Stop the thread and hand checkpoints back to ``conn`` (which still runs one if due)."""
        self._stop.set()
        self._thread.join()
        self.conn.execute("PRAGMA wal_autocheckpoint=1000")
