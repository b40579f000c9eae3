"""The provider's durable state: its runs and the status outbox behind WatchStatus.

Every status change is appended to ``status_log`` in the same transaction that
changes the run, and gets the next ``seq`` (AUTOINCREMENT: never reused, even
after pruning). WatchStatus replays the log after a client's ``after_seq`` and
then follows it live, so neither side loses an update across restarts.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from tack_common import sqlite, status as st
from tack_common.notify import Notifier
from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import timestamp_from_ns
from tack_provider_kit import metrics


# Version 1: the schema of the first release (IF NOT EXISTS: databases made before versioning were at it).
V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    knot TEXT NOT NULL,
    pipeline_rkey TEXT NOT NULL,
    workflow TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    data TEXT NOT NULL DEFAULT '{}',
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    UNIQUE (knot, pipeline_rkey, workflow)
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS outbox_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS status_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    knot TEXT NOT NULL,
    pipeline_rkey TEXT NOT NULL,
    workflow TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    exit_code INTEGER,
    time_ns INTEGER NOT NULL
);
"""

# The readiness write probe's scratch rows (tack_common/storage.py).
V_WRITE_PROBE = """
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
"""

SCHEMA = sqlite.Schema("", (V1, V_WRITE_PROBE))

JSONDict = dict[str, Any]
Attached = Literal["attached", "same", "other"]


class RunKey(NamedTuple):
    """(knot, pipeline rkey, workflow name): what identifies a run everywhere."""

    knot: str
    pipeline_rkey: str
    workflow: str

    @classmethod
    def from_pb(cls, key: pb.WorkflowKey) -> RunKey:
        """The key carried by a protobuf WorkflowKey."""
        return cls(key.knot, key.pipeline_rkey, key.workflow)

    def to_pb(self) -> pb.WorkflowKey:
        """This key as a protobuf WorkflowKey."""
        return pb.WorkflowKey(knot=self.knot, pipeline_rkey=self.pipeline_rkey, workflow=self.workflow)

    def __str__(self) -> str:
        return f"{self.knot}/{self.pipeline_rkey}/{self.workflow}"


@dataclass(frozen=True)
class Run:
    """One workflow run as the provider recorded it; ``data`` is the provider's own JSON state."""

    id: int
    key: RunKey
    status: st.Status
    error: str
    exit_code: int | None
    data: JSONDict
    created_ns: int
    updated_ns: int

    @property
    def terminal(self) -> bool:
        """Whether the run has finished for good."""
        return st.is_terminal(self.status)


_RUN_COLUMNS = "id, knot, pipeline_rkey, workflow, status, error, exit_code, data, created_ns, updated_ns"


def _run(row: tuple[Any, ...]) -> Run:
    return Run(
        id=row[0],
        key=RunKey(row[1], row[2], row[3]),
        status=row[4],
        error=row[5],
        exit_code=row[6],
        data=json.loads(row[7]),
        created_ns=row[8],
        updated_ns=row[9],
    )


class ProviderStore:
    """Runs and status outbox in one SQLite file, used from one event loop."""

    def __init__(self, path: str, provider: str = "", extension: sqlite.Schema | None = None) -> None:
        """Open (creating or migrating) the store; ``extension`` is the provider's own tables in the same file."""
        self.path = path
        self.provider = provider
        self.conn = sqlite.connect(path)
        sqlite.migrate(self.conn, SCHEMA)
        if extension is not None:
            sqlite.migrate(self.conn, extension)
        self.checkpoints = sqlite.BackgroundCheckpoints(self.conn, path)
        self.conn.execute(
            "INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('outbox_id', ?)", (uuid.uuid4().hex,)
        )
        self.outbox_id: str = self.conn.execute(
            "SELECT value FROM outbox_meta WHERE key='outbox_id'"
        ).fetchone()[0]
        """Identifies this outbox: a new database (seq starting over) gets a new id."""
        self._changed = Notifier()

    def close(self) -> None:
        """Close the database."""
        self.checkpoints.close()
        self.conn.close()

    def get(self, key: RunKey) -> Run | None:
        """The run for ``key``, if the provider ever accepted it."""
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE knot=? AND pipeline_rkey=? AND workflow=?", key
        ).fetchone()
        return None if row is None else _run(row)

    def get_by_id(self, run_id: int) -> Run | None:
        """The run with this id."""
        row = self.conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else _run(row)

    def active(self) -> list[Run]:
        """Every run that has not reached a terminal status, oldest first."""
        placeholders = ",".join("?" * len(st.TERMINAL))
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status NOT IN ({placeholders}) ORDER BY id",
            tuple(st.TERMINAL),
        ).fetchall()
        return [_run(r) for r in rows]

    def create(self, entries: Iterable[tuple[RunKey, JSONDict]]) -> list[tuple[Run, bool]]:
        """Accept runs atomically, each ``pending``; a key already known is returned as it is.

        Returns ``(run, created)`` per entry, in order.
        """
        now = time.time_ns()
        keys: list[tuple[RunKey, bool]] = []
        with sqlite.Transaction(self.conn) as conn:
            for key, data in entries:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO runs"
                    " (knot, pipeline_rkey, workflow, status, data, created_ns, updated_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, st.PENDING, json.dumps(data), now, now),
                )
                created = cur.rowcount == 1
                if created:
                    self._append(conn, key, st.PENDING, "", None, now)
                    metrics.STATUS_UPDATES.labels(self.provider, "pending").inc()
                keys.append((key, created))
        if any(created for _, created in keys):
            self._changed.notify()
        out = []
        for key, created in keys:
            run = self.get(key)
            assert run is not None
            out.append((run, created))
        return out

    def set_status(
        self,
        run_id: int,
        status: st.Status,
        error: str = "",
        exit_code: int | None = None,
        data: JSONDict | None = None,
        *,
        allow_regression: bool = False,
    ) -> bool:
        """Move a run to ``status`` and publish the change; False (nothing published) if it is no move.

        A move is a change of status that goes forward (pending → running →
        terminal) unless ``allow_regression``. ``data``, when given, replaces the
        run's provider state in the same transaction either way.
        """
        now = time.time_ns()
        with sqlite.Transaction(self.conn) as conn:
            row = conn.execute(
                "SELECT knot, pipeline_rkey, workflow, status FROM runs WHERE id=?", (run_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no run {run_id}")
            key, current = RunKey(row[0], row[1], row[2]), row[3]
            moves = status != current and (allow_regression or st.advances(current, status))
            if moves:
                conn.execute(
                    "UPDATE runs SET status=?, error=?, exit_code=?, updated_ns=? WHERE id=?",
                    (status, error, exit_code, now, run_id),
                )
                self._append(conn, key, status, error, exit_code, now)
                metrics.STATUS_UPDATES.labels(self.provider, st.name(status)).inc()
            if data is not None:
                conn.execute(
                    "UPDATE runs SET data=?, updated_ns=? WHERE id=?", (json.dumps(data), now, run_id)
                )
        if moves:
            self._changed.notify()
        return moves

    def data(self, run_id: int) -> JSONDict | None:
        """The provider's state of a run; None when the run is gone."""
        row = self.conn.execute("SELECT data FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def merge_data(self, run_id: int, **changes: Any) -> JSONDict:
        """Merge ``changes`` into the run's state and store it (atomic on the loop); returns the new state."""
        data = self.data(run_id)
        if data is None:
            raise KeyError(f"no run {run_id}")
        data.update(changes)
        self.update_data(run_id, data)
        return data

    def attach(
        self,
        run_id: int,
        field: str,
        value: Any,
        *,
        identity: Callable[[Any], object],
        record: Callable[[sqlite3.Connection], object],
        **changes: Any,
    ) -> Attached:
        """Make ``value`` the run's ``field`` (the one build or job in the CI, ``changes`` beside it) and
        ``record`` it, in one transaction, unless the run already has one: ``same`` when its
        ``identity`` (None: it has none) is that of ``value``, else ``other`` (also when the run is gone)."""
        with sqlite.Transaction(self.conn) as conn:
            row = conn.execute("SELECT data FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return "other"
            data = json.loads(row[0])
            current = identity(data.get(field))
            if current is not None:
                return "same" if current == identity(value) else "other"
            data.update({field: value, **changes})
            conn.execute(
                "UPDATE runs SET data=?, updated_ns=? WHERE id=?", (json.dumps(data), time.time_ns(), run_id)
            )
            record(conn)
        return "attached"

    def update_data(self, run_id: int, data: JSONDict) -> None:
        """Replace the provider's state of a run."""
        self.conn.execute(
            "UPDATE runs SET data=?, updated_ns=? WHERE id=?", (json.dumps(data), time.time_ns(), run_id)
        )

    def _append(
        self,
        conn: sqlite3.Connection,
        key: RunKey,
        status: st.Status,
        error: str,
        exit_code: int | None,
        now: int,
    ) -> None:
        conn.execute(
            "INSERT INTO status_log (knot, pipeline_rkey, workflow, status, error, exit_code, time_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, status, error, exit_code, now),
        )

    def last_seq(self) -> int:
        """The highest seq assigned so far (0 when none)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name='status_log'").fetchone()
        return 0 if row is None else int(row[0])

    def updates_after(self, after_seq: int, limit: int = 500) -> list[pb.StatusUpdate]:
        """Up to ``limit`` stored updates with seq greater than ``after_seq``, in order."""
        rows = self.conn.execute(
            "SELECT seq, knot, pipeline_rkey, workflow, status, error, exit_code, time_ns FROM status_log"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            pb.StatusUpdate(
                seq=seq,
                key=pb.WorkflowKey(knot=knot, pipeline_rkey=rkey, workflow=workflow),
                status=status,
                error=error,
                exit_code=exit_code,
                time=timestamp_from_ns(time_ns),
            )
            for seq, knot, rkey, workflow, status, error, exit_code, time_ns in rows
        ]

    async def watch(self, after_seq: int, idle: float = 15.0) -> AsyncIterator[list[pb.StatusUpdate]]:
        """Stored updates after ``after_seq`` in batches, then new ones as they are published.

        Yields an empty batch after ``idle`` quiet seconds so the caller can
        notice a client that went away.
        """
        cursor = after_seq
        while True:
            batch = self.updates_after(cursor)
            if batch:
                cursor = batch[-1].seq
                yield batch
                continue
            if not await self._changed.wait(idle):
                yield []

    def prune(self, older_than_ns: int) -> tuple[int, int]:
        """Forget terminal runs and status updates older than ``older_than_ns``.

        Returns how many (runs, updates) were removed.
        """
        placeholders = ",".join("?" * len(st.TERMINAL))
        with sqlite.Transaction(self.conn) as conn:
            runs = conn.execute(
                f"DELETE FROM runs WHERE updated_ns < ? AND status IN ({placeholders})",
                (older_than_ns, *st.TERMINAL),
            ).rowcount
            updates = conn.execute("DELETE FROM status_log WHERE time_ns < ?", (older_than_ns,)).rowcount
        return runs, updates


class BaseRunBook:
    """A provider's side of its runs: the data it keeps beside each run in the store (subclassed per provider)."""

    def __init__(self, store: ProviderStore) -> None:
        self.store = store

    def data(self, run_id: int) -> JSONDict | None:
        """The run's provider data; None when the run is gone."""
        return self.store.data(run_id)

    def update(self, run_id: int, **changes: Any) -> JSONDict:
        """Merge ``changes`` into the run's data and store it; returns the new data."""
        return self.store.merge_data(run_id, **changes)
