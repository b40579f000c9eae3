"""Knot stream intake: what each knot event becomes, decided and written in one transaction.

- ``sh.tangled.pipeline`` (the 2025 protocol: the knot compiled the pipeline):
  authorized by knot, owner and name, routed, and written with its workflows
  ``pending`` (or ``failed``) before any provider is called.
- ``sh.tangled.git.refUpdate`` (current Tangled): checked against the verified
  repository and its knot, and queued durably for the push worker
  (:mod:`tack_control.ingest.pushes`), which loads the workflows at the commit.
- ``sh.tangled.repo.collaboratorUpdate`` and ``sh.tangled.knot.memberUpdate``:
  the knot's own changes to push rights, applied to the registry.

A push is acted on once, whichever way it arrives: both kinds of trigger
record it in ``pushes`` under (repository, ref, commit), so a knot that sends
a refUpdate beside its ``sh.tangled.pipeline`` (or a replay) runs nothing
twice. Each knot is marked with the protocol it was seen to speak.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

from tack_control import metrics
from tack_control.engine.pipelines import PIPELINE_NSID, Pipelines, PipelineSpec, Routed
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.registry import Registry
from tack_control.ingest.routing import route
from tack_control.ingest.wire import (
    BadRecord,
    KnotMessage,
    Pipeline,
    parse_acl_update,
    parse_knot_frame,
    parse_pipeline,
    parse_ref_update,
)


log = logging.getLogger(__name__)

REF_UPDATE_NSID = "sh.tangled.git.refUpdate"
COLLABORATOR_UPDATE_NSID = "sh.tangled.repo.collaboratorUpdate"
MEMBER_UPDATE_NSID = "sh.tangled.knot.memberUpdate"


def legacy_repo_key(knot: str, owner: str, name: str) -> str:
    """The ``pushes.repo`` of a repository known only by owner and name."""
    return f"{knot}/{owner}/{name}"


class Intake:
    """Turns knot events into pipelines, queued pushes and registry changes."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        pipelines: Pipelines,
        providers: Sequence[str],
        default_provider: str | None,
        on_queued: Callable[[], None],
        on_push: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.book = book
        self.pipelines = pipelines
        self.providers = list(providers)
        self.default_provider = default_provider
        self.on_queued = on_queued
        self.on_push = on_push

    def handle_frame(self, knot: str, frame: str | bytes) -> tuple[str, int]:
        """Act on one knot frame: (what became of it, a metric label; the envelope's ``created``, 0 if none)."""
        if isinstance(frame, bytes):
            return "binary", 0
        try:
            message = parse_knot_frame(frame)
        except BadRecord as exc:
            log.info("knot frame skipped", extra={"knot": knot, "reason": str(exc)[:200]})
            return "malformed", 0
        return self.handle(knot, message), message.created

    def handle(self, knot: str, message: KnotMessage) -> str:
        """Act on one knot event; returns what became of it (a metric label). Never raises on bad input."""
        try:
            if message.nsid == PIPELINE_NSID:
                return self._pipeline(knot, message)
            if message.nsid == REF_UPDATE_NSID:
                return self._ref_update(knot, message)
            if message.nsid in (COLLABORATOR_UPDATE_NSID, MEMBER_UPDATE_NSID):
                update = parse_acl_update(message.event, with_repo=message.nsid == COLLABORATOR_UPDATE_NSID)
                with self.book.transaction() as conn:
                    outcome = self.registry.apply_knot_acl(conn, knot, update)
                log.info("knot acl update", extra={"knot": knot, "op": update.op, "outcome": outcome})
                return outcome
        except BadRecord as exc:
            log.info(
                "knot event skipped",
                extra={"knot": knot, "nsid": message.nsid, "rkey": message.rkey, "reason": str(exc)[:200]},
            )
            return "malformed"
        return "ignored"

    # The 2025 protocol

    def _pipeline(self, knot: str, message: KnotMessage) -> str:
        try:
            pipeline = parse_pipeline(message.event)
        except BadRecord:
            metrics.PIPELINES.labels("malformed").inc()
            raise
        self._mark(knot, "legacy")
        decision = self.registry.authorize(knot, pipeline.trigger)
        if decision != "ok":
            log.info(
                "pipeline not authorized", extra={"knot": knot, "rkey": message.rkey, "reason": decision}
            )
            metrics.PIPELINES.labels(decision).inc()
            return "unauthorized"
        t = pipeline.trigger
        repo_did = t.repo.repo_did or self.registry.legacy_repo_did(knot, t.repo.did, t.repo.name)
        spec = PipelineSpec(
            knot=knot,
            rkey=message.rkey,
            record=message.event,
            repo_did=repo_did,
            kind=t.kind,
            commit=t.commit,
            origin="knot",
            workflows=self.route_all(pipeline),
            source_repo=t.source_repo,
        )
        with self.book.transaction() as conn:
            if self.pipelines.exists(conn, knot, message.rkey):
                metrics.PIPELINES.labels("duplicate").inc()
                return "duplicate"
            if t.kind == "push" and not self._claim_push(
                conn,
                repo_did or legacy_repo_key(knot, t.repo.did, t.repo.name),
                t.ref,
                t.new_sha,
                knot,
                message.rkey,
            ):
                metrics.PIPELINES.labels("duplicate").inc()
                return "duplicate"
            self.pipelines.create(conn, spec)
        metrics.PIPELINES.labels("accepted").inc()
        log.info(
            "pipeline accepted",
            extra={"knot": knot, "rkey": message.rkey, "workflows": len(spec.workflows), "kind": t.kind},
        )
        if any(r.route.provider for r in spec.workflows):
            self.on_queued()
        return "pipeline"

    def route_all(self, pipeline: Pipeline) -> list[Routed]:
        """Each workflow of ``pipeline`` with its provider (or the reason it has none)."""
        return [Routed(w, route(w.raw, self.providers, self.default_provider)) for w in pipeline.workflows]

    def _claim_push(
        self, conn: sqlite3.Connection, repo: str, ref: str, new_sha: str, knot: str, rkey: str
    ) -> bool:
        """Record a push acted on by a knot's pipeline; False when this push was already acted on."""
        return bool(
            conn.execute(
                "INSERT OR IGNORE INTO pushes (repo, ref, new_sha, knot, state, pipeline_rkey, received_ns)"
                " VALUES (?, ?, ?, ?, 'done', ?, ?)",
                (repo, ref, new_sha, knot, rkey, time.time_ns()),
            ).rowcount
        )

    # Current Tangled

    def _ref_update(self, knot: str, message: KnotMessage) -> str:
        update = parse_ref_update(message.event)
        if update is None:
            # The 2025 shape: such a knot sends a sh.tangled.pipeline for the same push.
            return "legacy_ref_update"
        self._mark(knot, "current")
        if not update.ref:
            return "ignored"
        repo = self.registry.by_repo_did(update.repo_did)
        if repo is None:
            metrics.PUSHES.labels("unregistered").inc()
            return "unregistered"
        if repo.knot != knot:
            metrics.PUSHES.labels("wrong_knot").inc()
            log.warning(
                "push from a knot that does not host the repository",
                extra={"knot": knot, "repo_did": update.repo_did, "repo_knot": repo.knot},
            )
            return "wrong_knot"
        now = time.time_ns()
        with self.book.transaction() as conn:
            conn.execute(
                "INSERT INTO repo_refs (repo_did, ref, sha, updated_ns) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (repo_did, ref) DO UPDATE SET sha=excluded.sha, updated_ns=excluded.updated_ns",
                (update.repo_did, update.ref, update.new_sha, now),
            )
            if update.deleted or update.skip_ci:
                outcome = "deleted" if update.deleted else "skipped"
                metrics.PUSHES.labels(outcome).inc()
                return outcome
            event = {
                "rkey": message.rkey,
                "oldSha": update.old_sha,
                "changedFiles": list(update.changed_files),
                "committerDid": update.committer,
            }
            inserted = conn.execute(
                "INSERT OR IGNORE INTO pushes (repo, ref, new_sha, knot, state, event, received_ns)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                (update.repo_did, update.ref, update.new_sha, knot, json.dumps(event), now),
            ).rowcount
        if not inserted:
            metrics.PUSHES.labels("duplicate").inc()
            return "duplicate"
        metrics.PUSHES.labels("queued").inc()
        log.info(
            "push queued",
            extra={"knot": knot, "repo_did": update.repo_did, "ref": update.ref, "sha": update.new_sha},
        )
        self.on_push()
        return "push"

    def _mark(self, knot: str, speaks: str) -> None:
        """Remember which protocol ``knot`` speaks (for doctor and the health report)."""
        self.book.conn.execute(
            "UPDATE knot_cursors SET speaks=? WHERE knot=? AND speaks<>?", (speaks, knot, speaks)
        )
