"""The push worker: from a queued push to a pipeline tack mints, with the workflows the commit holds.

For each push queued by intake (or by missed-push recovery) it loads
``.tangled/workflows`` at the pushed commit from the repository's knot,
keeps the workflows whose ``when:`` matches the push, routes them, and writes
the pipeline (a fresh TID) in the same transaction that marks the push done:
a crash anywhere before that commit only means the push is processed again,
and after it the push is never processed again.

A commit without ``.tangled/workflows``, or whose workflows all skip this
push, makes no pipeline. Workflows that cannot be loaded make a pipeline
anyway, with one ``failed`` workflow saying why, so the failure shows where the
pipeline would have: a knot that is down is retried with backoff first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tack_common import backoff
from tack_control import metrics
from tack_control.engine import due
from tack_control.engine.pipelines import Pipelines, Routed
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.minting import LoadFailed, LoadWorkflows, Mint, Minter, load_failure
from tack_control.ingest.registry import Registry
from tack_control.ingest.when import Trigger as WhenTrigger


log = logging.getLogger(__name__)

MAX_LOAD_ATTEMPTS = 5


@dataclass(frozen=True)
class QueuedPush:
    """A row of ``pushes`` waiting for the worker."""

    repo_did: str
    ref: str
    new_sha: str
    knot: str
    event: dict[str, Any]
    attempts: int


class PushWorker(due.QueueWorker):
    """Turns queued pushes into pipelines."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        pipelines: Pipelines,
        minter: Minter,
        load: LoadWorkflows,
        on_queued: Callable[[], None],
    ) -> None:
        self.registry = registry
        super().__init__(
            book.conn,
            "SELECT MIN(next_attempt_ns) FROM pushes WHERE state='queued'",
        )
        self.book = book
        self.pipelines = pipelines
        self.minter = minter
        self.load = load
        self.on_queued = on_queued

    async def work_due(self) -> int:
        """Process every queued push that is due, oldest first; returns how many were processed."""
        rows = self.book.conn.execute(
            "SELECT repo, ref, new_sha, knot, event, attempts FROM pushes WHERE state='queued' AND next_attempt_ns<=?"
            " ORDER BY received_ns LIMIT 64",
            (time.time_ns(),),
        ).fetchall()
        for repo_did, ref, new_sha, knot, event, attempts in rows:
            await self.process(QueuedPush(repo_did, ref, new_sha, knot, json.loads(event), attempts))
        return len(rows)

    async def process(self, push: QueuedPush) -> None:
        """Load, select, route and write one push (or schedule it again)."""
        repo = self.registry.by_repo_did(push.repo_did)
        if repo is None or repo.knot != push.knot:
            self._finish(push, "skipped", "the repository is no longer registered here")
            metrics.PUSHES.labels("unregistered").inc()
            return
        recovered = bool(push.event.get("recovered"))
        mint = Mint(
            repo=repo,
            kind="push",
            detail={"newSha": push.new_sha, "oldSha": str(push.event.get("oldSha", "")), "ref": push.ref},
            commit=push.new_sha,
            origin="recovered" if recovered else "push",
            # A recovered push's changed files are unknown: its `paths:` filters are taken to match.
            when=WhenTrigger(
                "push",
                ref=push.ref,
                changed_files=tuple(push.event.get("changedFiles") or ()),
                changed_files_known=not recovered,
            ),
        )
        started = time.monotonic()
        try:
            files = await self.load(repo.knot, repo.repo_did, push.new_sha)
        except LoadFailed as exc:
            if exc.transient and push.attempts + 1 < MAX_LOAD_ATTEMPTS:
                self._retry(push, str(exc))
                return
            await self._write(push, mint, load_failure(str(exc)))
            metrics.PUSHES.labels("load_failed").inc()
            log.warning(
                "workflows could not be loaded",
                extra={
                    "repo_did": repo.repo_did,
                    "ref": push.ref,
                    "sha": push.new_sha,
                    "reason": str(exc)[:300],
                },
            )
            return
        metrics.WORKFLOW_LOAD_SECONDS.observe(time.monotonic() - started)
        routed = self.minter.select(files, mint)
        if not routed:
            self._finish(push, "done", "no workflow matched" if files else "no workflows at this commit")
            metrics.PUSHES.labels("no_workflows").inc()
            return
        await self._write(push, mint, routed)
        metrics.PUSHES.labels("pipeline").inc()

    async def _write(self, push: QueuedPush, mint: Mint, routed: list[Routed]) -> None:
        rkey = self.pipelines.mint_rkey()
        spec = await self.minter.spec(mint, rkey, routed)
        with self.book.transaction() as conn:
            state = conn.execute(
                "SELECT state FROM pushes WHERE repo=? AND ref=? AND new_sha=?",
                (push.repo_did, push.ref, push.new_sha),
            ).fetchone()
            if state is None or state[0] != "queued":
                return
            self.pipelines.create(conn, spec)
            conn.execute(
                "UPDATE pushes SET state='done', pipeline_rkey=?, reason='' WHERE repo=? AND ref=? AND new_sha=?",
                (rkey, push.repo_did, push.ref, push.new_sha),
            )
        log.info(
            "pipeline minted",
            extra={
                "knot": spec.knot,
                "rkey": rkey,
                "repo_did": spec.repo_did,
                "ref": push.ref,
                "workflows": len(routed),
            },
        )
        if any(r.route.provider for r in routed):
            self.on_queued()

    def _finish(self, push: QueuedPush, state: str, reason: str) -> None:
        with self.book.transaction() as conn:
            conn.execute(
                "UPDATE pushes SET state=?, reason=? WHERE repo=? AND ref=? AND new_sha=? AND state='queued'",
                (state, reason, push.repo_did, push.ref, push.new_sha),
            )
        log.info(
            "push handled",
            extra={"repo_did": push.repo_did, "ref": push.ref, "state": state, "reason": reason},
        )

    def _retry(self, push: QueuedPush, reason: str) -> None:
        at = time.time_ns() + int(backoff.delay(push.attempts + 1, base=1.0, cap=60.0) * 1e9)
        with self.book.transaction() as conn:
            conn.execute(
                "UPDATE pushes SET attempts=attempts+1, next_attempt_ns=?, reason=? WHERE repo=? AND ref=? AND new_sha=?",
                (at, reason, push.repo_did, push.ref, push.new_sha),
            )
        log.warning(
            "loading workflows will be retried",
            extra={
                "repo_did": push.repo_did,
                "ref": push.ref,
                "attempts": push.attempts + 1,
                "reason": reason[:300],
            },
        )
