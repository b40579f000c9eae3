"""What the provider remembers about each run's PipelineRun, in the kit's store.

A run's ``data`` holds the PipelineRun prepared at Spawn (``name``, ``run_hash``, ``body``), the
``cancel`` mode and the progress of creating it: ``phase`` ``queued`` (not created yet),
``created`` (it exists) or ``rejected`` (the API server refused it; the run failed); ``sent`` once a
create may have reached the API server; ``cancel_requested`` once Cancel was called.

``tekton_names`` maps PipelineRun names (what the watch carries) to runs, and ``tekton_watch`` keeps
the watch's last resourceVersion, so a restart resumes the watch where it stopped.
All methods are synchronous: a read-modify-write here is atomic on the loop.
"""

from __future__ import annotations

from typing import Any

from tack_common.notify import Notifier
from tack_common.sqlite import Schema
from tack_provider_kit.store import BaseRunBook, JSONDict, ProviderStore


V1 = """
CREATE TABLE tekton_names (
    name TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE
);
CREATE INDEX tekton_names_by_run ON tekton_names (run_id);
CREATE TABLE tekton_watch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version TEXT
);
"""

SCHEMA = Schema("tekton", (V1,))

QUEUED, CREATED, REJECTED = "queued", "created", "rejected"


class RunBook(BaseRunBook):
    """Reads and writes the Tekton side of runs."""

    def __init__(self, store: ProviderStore) -> None:
        super().__init__(store)
        self.created = Notifier()

    def update(self, run_id: int, **changes: Any) -> JSONDict:
        """Merge ``changes`` into the run's data and store it; returns the new data."""
        data = super().update(run_id, **changes)
        if changes.get("phase") == CREATED:
            self.created.notify()
        return data

    def register(self, run_id: int, name: str) -> None:
        """Remember which run the PipelineRun ``name`` belongs to."""
        self.store.conn.execute(
            "INSERT OR IGNORE INTO tekton_names (name, run_id) VALUES (?, ?)", (name, run_id)
        )

    def run_for(self, name: str) -> int | None:
        """The run a PipelineRun belongs to, by its name."""
        row = self.store.conn.execute("SELECT run_id FROM tekton_names WHERE name=?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def watch_version(self) -> str | None:
        """The resourceVersion to resume the watch from (None: list first)."""
        row = self.store.conn.execute("SELECT version FROM tekton_watch WHERE id=1").fetchone()
        return None if row is None else row[0]

    def set_watch_version(self, version: str | None) -> None:
        """Store where the watch stands."""
        self.store.conn.execute(
            "INSERT INTO tekton_watch (id, version) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET version=excluded.version",
            (version,),
        )
