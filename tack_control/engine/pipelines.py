"""Pipelines: the one model under both Tangled faces, and the one way a pipeline is written.

A pipeline reaches tack as a knot's ``sh.tangled.pipeline`` record (the 2025
protocol) or is minted by tack itself for a push, a pull request or a manual
run (current Tangled). Either way it is written here, in the caller's
transaction and before any provider is called: the pipeline row with the
columns the CI API queries by, one row per workflow, ``pending`` for the
routed ones and ``failed`` with the reason for the others. A pipeline tack
minted is also published on ``/events`` as its ``sh.tangled.pipeline`` record,
as stock spindles do.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tack_control import metrics
from tack_control.engine.eventlog import EventLog
from tack_control.engine.statuses import StatusBook, pipeline_uri
from tack_control.ingest.routing import Route
from tack_control.ingest.wire import Workflow


log = logging.getLogger(__name__)

PIPELINE_NSID = "sh.tangled.pipeline"
ORIGINS = ("knot", "push", "pull", "manual", "recovered")
"""Where a pipeline came from: a knot's record, or minted by tack for a push, pull request, manual run or missed push."""


@dataclass(frozen=True)
class Routed:
    """A workflow and where it goes (``route.provider`` empty: it cannot run, ``route.error`` says why)."""

    workflow: Workflow
    route: Route


@dataclass(frozen=True)
class PipelineSpec:
    """Everything written for one pipeline."""

    knot: str
    rkey: str
    record: dict[str, Any]
    """The ``sh.tangled.pipeline`` record, as the knot sent it or as tack publishes it."""
    repo_did: str
    """The repository's DID; empty for a repository known only by owner and name."""
    kind: str
    commit: str
    origin: str
    workflows: Sequence[Routed]
    source_repo: str = ""
    source_knot: str = ""
    untrusted: bool = False

    @property
    def minted(self) -> bool:
        """Whether tack made this pipeline (and so publishes its record)."""
        return self.origin != "knot"


class Pipelines:
    """Writes pipelines and their workflows; mints pipeline ids."""

    def __init__(self, book: StatusBook, events: EventLog) -> None:
        self.book = book
        self.events = events
        row = book.conn.execute("SELECT MAX(created_ns) FROM pipelines").fetchone()
        self.last_created: int = int(row[0] or 0)

    def mint_rkey(self) -> str:
        """A fresh pipeline id: a TID never used by this spindle for a pipeline or an event."""
        return self.events.tids.next()

    def exists(self, conn: sqlite3.Connection, knot: str, rkey: str) -> bool:
        """Whether the pipeline (knot, rkey) was written already."""
        return (
            conn.execute("SELECT 1 FROM pipelines WHERE knot=? AND rkey=?", (knot, rkey)).fetchone()
            is not None
        )

    def create(self, conn: sqlite3.Connection, spec: PipelineSpec) -> bool:
        """Write ``spec`` inside the caller's :meth:`StatusBook.transaction`; False (nothing written) when it exists.

        Returns True when written; the caller wakes the dispatcher if any workflow was routed.
        """
        now = time.time_ns()
        created = max(now, self.last_created + 1)
        inserted = conn.execute(
            "INSERT OR IGNORE INTO pipelines (knot, rkey, record, received_ns, created_ns, repo_did, source_repo,"
            " source_knot, kind, commit_sha, origin, untrusted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                spec.knot,
                spec.rkey,
                json.dumps(spec.record, ensure_ascii=False, separators=(",", ":")),
                now,
                created,
                spec.repo_did,
                spec.source_repo,
                spec.source_knot,
                spec.kind,
                spec.commit,
                spec.origin,
                int(spec.untrusted),
            ),
        ).rowcount
        if not inserted:
            return False
        self.last_created = created
        if spec.minted:
            self.events.insert(conn, PIPELINE_NSID, spec.record, rkey=spec.rkey)
        for routed in spec.workflows:
            self._add_workflow(conn, spec, routed, now)
        return True

    def _add_workflow(self, conn: sqlite3.Connection, spec: PipelineSpec, routed: Routed, now: int) -> None:
        target = routed.route
        cur = conn.execute(
            "INSERT INTO workflows (knot, rkey, name, provider, config, status, error, dispatch,"
            " created_ns, updated_ns, queued_ns) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?)",
            (
                spec.knot,
                spec.rkey,
                routed.workflow.name,
                target.provider,
                json.dumps({"config": target.config, "environment": target.environment}),
                target.error,
                "queued" if target.provider else "failed",
                now,
                now,
                now,
            ),
        )
        workflow_id = cur.lastrowid
        assert workflow_id is not None
        metrics.WORKFLOWS_ROUTED.labels(target.provider or "none").inc()
        if target.provider:
            self.book.record(conn, workflow_id, "pending")
            return
        log.info(
            "workflow not routable",
            extra={
                "knot": spec.knot,
                "rkey": spec.rkey,
                "workflow": routed.workflow.name,
                "error": target.error,
            },
        )
        self.book.record(conn, workflow_id, "failed", target.error, -1)


__all__ = ["ORIGINS", "PIPELINE_NSID", "PipelineSpec", "Pipelines", "Routed", "pipeline_uri"]
