"""Pipeline intake: from a knot frame to durable workflows, each routed and ``pending`` (or ``failed``).

Everything a trigger becomes is written in one transaction before any
provider is called, so a crash loses nothing and a replayed frame (same knot
and rkey) changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

from tack_control import metrics
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.registry import Registry
from tack_control.ingest.routing import route
from tack_control.ingest.wire import BadRecord, parse_knot_frame, parse_pipeline


log = logging.getLogger(__name__)

PIPELINE_NSID = "sh.tangled.pipeline"


class Intake:
    """Turns knot frames into workflows for the dispatcher."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        providers: Sequence[str],
        default_provider: str | None,
        on_queued: Callable[[], None],
    ) -> None:
        self.registry = registry
        self.book = book
        self.providers = list(providers)
        self.default_provider = default_provider
        self.on_queued = on_queued

    def handle(self, knot: str, frame: str | bytes) -> str:
        """Act on one knot frame; returns what became of it (a metric label). Never raises on bad input."""
        if isinstance(frame, bytes):
            return "binary"
        try:
            message = parse_knot_frame(frame)
        except BadRecord as exc:
            log.info("knot frame skipped", extra={"knot": knot, "reason": str(exc)[:200]})
            return "malformed"
        if message.nsid != PIPELINE_NSID:
            return "ignored"
        try:
            pipeline = parse_pipeline(message.event)
        except BadRecord as exc:
            log.info("pipeline skipped", extra={"knot": knot, "rkey": message.rkey, "reason": str(exc)[:200]})
            metrics.PIPELINES.labels("malformed").inc()
            return "malformed"
        decision = self.registry.authorize(knot, pipeline.trigger)
        if decision != "ok":
            log.info(
                "pipeline not authorized", extra={"knot": knot, "rkey": message.rkey, "reason": decision}
            )
            metrics.PIPELINES.labels(decision).inc()
            return "unauthorized"
        now = time.time_ns()
        queued = False
        with self.book.transaction() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO pipelines (knot, rkey, record, received_ns) VALUES (?, ?, ?, ?)",
                (knot, message.rkey, json.dumps(message.event), now),
            ).rowcount
            if not inserted:
                metrics.PIPELINES.labels("duplicate").inc()
                return "duplicate"
            for workflow in pipeline.workflows:
                target = route(workflow.raw, self.providers, self.default_provider)
                dispatch = "queued" if target.provider else "failed"
                cur = conn.execute(
                    "INSERT INTO workflows (knot, rkey, name, provider, config, status, error, dispatch,"
                    " created_ns, updated_ns, queued_ns) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?)",
                    (
                        knot,
                        message.rkey,
                        workflow.name,
                        target.provider,
                        json.dumps({"config": target.config, "environment": target.environment}),
                        target.error,
                        dispatch,
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
                    queued = True
                else:
                    log.info(
                        "workflow not routable",
                        extra={
                            "knot": knot,
                            "rkey": message.rkey,
                            "workflow": workflow.name,
                            "error": target.error,
                        },
                    )
                    self.book.record(conn, workflow_id, "failed", target.error, -1)
        metrics.PIPELINES.labels("accepted").inc()
        log.info(
            "pipeline accepted",
            extra={
                "knot": knot,
                "rkey": message.rkey,
                "workflows": len(pipeline.workflows),
                "kind": pipeline.trigger.kind,
            },
        )
        if queued:
            self.on_queued()
        return "pipeline"
