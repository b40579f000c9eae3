"""What the provider remembers about each run's build, in the kit's store.

A run's ``data`` holds the create-build call prepared at Spawn and the
progress of creating it:

- ``phase``: ``queued`` (nothing sent yet), ``sending`` (a create may have
  reached Buildkite: look before creating again), ``created`` (``build`` is
  known) or ``rejected`` (Buildkite refused; the run failed);
- ``sent_ns``: when the last create that may have reached Buildkite was sent;
- ``cancel``: a cancel was requested.

The ``buildkite_builds`` table maps build UUIDs (what webhooks carry) to runs.
All methods are synchronous: a read-modify-write here is atomic on the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tack_common.notify import Notifier
from tack_common.sqlite import Schema
from tack_provider_kit.store import Attached, BaseRunBook, JSONDict, ProviderStore


V1 = """
CREATE TABLE IF NOT EXISTS buildkite_builds (
    build_id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    org TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    number INTEGER NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS buildkite_builds_by_run ON buildkite_builds (run_id);
"""

SCHEMA = Schema("buildkite", (V1,))

QUEUED, SENDING, CREATED, REJECTED = "queued", "sending", "created", "rejected"


@dataclass(frozen=True)
class BuildRef:
    """Where a run's build lives: REST paths need the org, pipeline and number, webhooks carry the id."""

    id: str
    org: str
    pipeline: str
    number: int
    web_url: str = ""

    def to_json(self) -> JSONDict:
        """The form kept in the run's data."""
        return {
            "id": self.id,
            "org": self.org,
            "pipeline": self.pipeline,
            "number": self.number,
            "web_url": self.web_url,
        }

    @classmethod
    def from_json(cls, data: Any) -> BuildRef | None:
        """The ref kept by :meth:`to_json`, or None."""
        if not isinstance(data, dict):
            return None
        return cls(
            str(data["id"]),
            str(data["org"]),
            str(data["pipeline"]),
            int(data["number"]),
            str(data["web_url"]),
        )

    @classmethod
    def from_build(cls, build: Any, org: str, pipeline: str) -> BuildRef | None:
        """The ref of a Buildkite build object; None when it lacks an id or number."""
        if not isinstance(build, dict):
            return None
        build_id, number = build.get("id"), build.get("number")
        if (
            not isinstance(build_id, str)
            or not build_id
            or isinstance(number, bool)
            or not isinstance(number, int)
        ):
            return None
        web_url = build.get("web_url")
        return cls(build_id, org, pipeline, number, web_url if isinstance(web_url, str) else "")


class RunBook(BaseRunBook):
    """Reads and writes the Buildkite side of runs."""

    def __init__(self, store: ProviderStore) -> None:
        super().__init__(store)
        self.attached = Notifier()

    def build_of(self, run_id: int) -> BuildRef | None:
        """The run's build, once known."""
        data = self.data(run_id)
        return None if data is None else BuildRef.from_json(data.get("build"))

    def run_for_build(self, build_id: str) -> int | None:
        """The run a build belongs to, by the build's UUID."""
        row = self.store.conn.execute(
            "SELECT run_id FROM buildkite_builds WHERE build_id=?", (build_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def attach(self, run_id: int, ref: BuildRef) -> Attached:
        """Make ``ref`` the run's build, unless the run already has one (``same`` or ``other``)."""
        attached = self.store.attach(
            run_id,
            "build",
            ref.to_json(),
            identity=lambda build: None if (known := BuildRef.from_json(build)) is None else known.id,
            record=lambda conn: conn.execute(
                "INSERT OR REPLACE INTO buildkite_builds (build_id, run_id, org, pipeline, number, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (ref.id, run_id, ref.org, ref.pipeline, ref.number, time.time_ns()),
            ),
            phase=CREATED,
        )
        if attached == "attached":
            self.attached.notify()
        return attached
