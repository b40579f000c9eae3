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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tack_common import backoff
from tack_common.notify import Notifier
from tack_control import metrics
from tack_control.engine.pipelines import Pipelines, PipelineSpec, Routed
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.knotapi import KnotApi
from tack_control.ingest.registry import Registry, Repo
from tack_control.ingest.routing import Route, load_workflow, route
from tack_control.ingest.wire import Clone, Workflow


log = logging.getLogger(__name__)

LOAD_FAILED_WORKFLOW = "workflows"
"""Name of the one workflow of a pipeline whose workflow files could not be loaded."""
MAX_LOAD_ATTEMPTS = 5


class LoadFailed(Exception):
    """The workflow files could not be loaded; ``transient`` when trying again may succeed."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True)
class PushEvent:
    """What a push is matched against, as ``when:`` sees it."""

    ref: str
    changed_files: tuple[str, ...]
    changed_files_known: bool = True


LoadWorkflows = Callable[[str, str, str], Awaitable[Sequence[tuple[str, str]]]]
"""(knot, repo DID, commit) → the workflow files (name, text) at that commit; raises LoadFailed."""
Selects = Callable[[str, PushEvent], bool]
"""(workflow text, push) → whether the workflow's ``when:`` runs it; raises ValueError (with the reason) when it cannot tell."""


@dataclass(frozen=True)
class QueuedPush:
    """A row of ``pushes`` waiting for the worker."""

    repo_did: str
    ref: str
    new_sha: str
    knot: str
    event: dict[str, Any]
    attempts: int


class PushWorker:
    """Turns queued pushes into pipelines."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        pipelines: Pipelines,
        knots: KnotApi,
        load: LoadWorkflows,
        selects: Selects,
        providers: Sequence[str],
        default_provider: str | None,
        on_queued: Callable[[], None],
    ) -> None:
        self.registry = registry
        self.book = book
        self.pipelines = pipelines
        self.knots = knots
        self.load = load
        self.selects = selects
        self.providers = list(providers)
        self.default_provider = default_provider
        self.on_queued = on_queued
        self.wake = Notifier()
        self._default_branches: dict[str, tuple[float, str]] = {}

    def poke(self) -> None:
        """A push was queued."""
        self.wake.notify()

    async def run(self) -> None:
        """Work forever."""
        while True:
            if not await self.work_due():
                await self.wake.wait(self._next_due_s())

    def _next_due_s(self) -> float:
        row = self.book.conn.execute(
            "SELECT MIN(next_attempt_ns) FROM pushes WHERE state='queued'"
        ).fetchone()
        if row[0] is None:
            return 30.0
        return max(0.0, min(30.0, (int(row[0]) - time.time_ns()) / 1e9))

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
        started = time.monotonic()
        try:
            files = await self.load(repo.knot, repo.repo_did, push.new_sha)
        except LoadFailed as exc:
            if exc.transient and push.attempts + 1 < MAX_LOAD_ATTEMPTS:
                self._retry(push, str(exc))
                return
            await self._write(push, repo, [self._load_failure(str(exc))])
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
        event = PushEvent(
            ref=push.ref,
            changed_files=tuple(push.event.get("changedFiles") or ()),
            changed_files_known=not push.event.get("recovered", False),
        )
        routed = []
        for name, text in files:
            try:
                if not self.selects(text, event):
                    continue
                target = route(text, self.providers, self.default_provider)
            except ValueError as exc:
                target = Route(provider=None, error=f"cannot evaluate the workflow's when: {exc}")
            routed.append(Routed(workflow_entry(name, text), target))
        if not routed:
            self._finish(push, "done", "no workflow matched" if files else "no workflows at this commit")
            metrics.PUSHES.labels("no_workflows").inc()
            return
        await self._write(push, repo, routed)
        metrics.PUSHES.labels("pipeline").inc()

    def _load_failure(self, reason: str) -> Routed:
        message = f"could not load .tangled/workflows: {reason}"
        return Routed(Workflow(LOAD_FAILED_WORKFLOW, "", "", Clone()), Route(provider=None, error=message))

    async def _write(self, push: QueuedPush, repo: Repo, routed: list[Routed]) -> None:
        default_branch = await self._default_branch(repo)
        rkey = self.pipelines.mint_rkey()
        recovered = bool(push.event.get("recovered"))
        record = push_record(
            repo, default_branch, push.ref, str(push.event.get("oldSha", "")), push.new_sha, routed
        )
        spec = PipelineSpec(
            knot=repo.knot,
            rkey=rkey,
            record=record,
            repo_did=repo.repo_did,
            kind="push",
            commit=push.new_sha,
            origin="recovered" if recovered else "push",
            workflows=routed,
        )
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
                "knot": repo.knot,
                "rkey": rkey,
                "repo_did": repo.repo_did,
                "ref": push.ref,
                "workflows": len(routed),
            },
        )
        if any(r.route.provider for r in routed):
            self.on_queued()

    async def _default_branch(self, repo: Repo) -> str:
        """The repository's default branch, asked of its knot at most every ten minutes."""
        cached = self._default_branches.get(repo.repo_did)
        if cached is not None and time.monotonic() - cached[0] < 600:
            return cached[1]
        branch = await self.knots.default_branch(repo.knot, repo.repo_did)
        self._default_branches[repo.repo_did] = (time.monotonic(), branch)
        return branch

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


def workflow_entry(name: str, text: str) -> Workflow:
    """A workflow file as the pipeline record carries it: engine and clone options read from its YAML."""
    engine, clone = "", Clone(submodules=True, tags=True)
    try:
        doc = load_workflow(text)
    except ValueError:
        return Workflow(name, engine, text, clone)
    if isinstance(doc.get("engine"), str):
        engine = doc["engine"]
    options = doc.get("clone")
    if isinstance(options, dict):
        depth = options.get("depth")
        clone = Clone(
            skip=options.get("skip") is True,
            depth=depth
            if isinstance(depth, int) and not isinstance(depth, bool) and 0 <= depth < 1 << 31
            else 0,
            submodules=options.get("submodules") is not False,
            tags=options.get("tags") is not False,
        )
    return Workflow(name, engine, text, clone)


def push_record(
    repo: Repo, default_branch: str, ref: str, old_sha: str, new_sha: str, routed: Sequence[Routed]
) -> dict[str, Any]:
    """The ``sh.tangled.pipeline`` record of a push, as stock spindles write it."""
    return {
        "$type": "sh.tangled.pipeline",
        "triggerMetadata": {
            "kind": "push",
            "push": {"newSha": new_sha, "oldSha": old_sha, "ref": ref},
            "repo": {
                "defaultBranch": default_branch,
                "did": repo.owner,
                "knot": repo.knot,
                "repo": repo.rkey,
                "repoDid": repo.repo_did,
            },
        },
        "workflows": [workflow_json(r.workflow) for r in routed],
    }


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    """One entry of a pipeline record's ``workflows``."""
    c = workflow.clone
    return {
        "clone": {"depth": c.depth, "skip": c.skip, "submodules": c.submodules, "tags": c.tags},
        "engine": workflow.engine,
        "name": workflow.name,
        "raw": workflow.raw,
    }
