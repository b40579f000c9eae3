"""Minting pipelines: from workflow files at a commit to the pipeline tack owns, for any trigger.

Pushes (:mod:`tack_control.ingest.pushes`), pull requests and runs asked for
over XRPC (``sh.tangled.ci.triggerPipeline``) all end here: the files loaded
at the commit are matched against the trigger with ``when:`` exactly as
Tangled does (:mod:`tack_control.ingest.when`), the workflows that run are
routed to their providers, and the ``sh.tangled.pipeline`` record is built as
stock spindles build it (docs/tangled-current.md §6). A file Tangled would drop
(it cannot be decoded, or a glob is malformed) is kept as a ``failed``
workflow saying why, so the mistake shows where the pipeline does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tack_control.engine.pipelines import PipelineSpec, Routed
from tack_control.ingest.knotapi import KnotApi
from tack_control.ingest.registry import Repo
from tack_control.ingest.routing import Route, route
from tack_control.ingest.when import Decision, Trigger as WhenTrigger, decide
from tack_control.ingest.wire import Clone, Workflow


LoadWorkflows = Callable[[str, str, str], Awaitable[Sequence[tuple[str, str]]]]
"""(knot, repo DID, commit) → the workflow files (name, text) at that commit; raises LoadFailed."""
LOAD_FAILED_WORKFLOW = "workflows"
"""Name of the one workflow of a pipeline whose workflow files could not be loaded."""


class LoadFailed(Exception):
    """The workflow files could not be loaded; ``transient`` when trying again may succeed."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True)
class Mint:
    """One pipeline to mint: the repository, what triggered it and from where the code comes."""

    repo: Repo
    kind: str
    """``push``, ``pull_request`` or ``manual``."""
    detail: dict[str, Any]
    """The record's ``push``, ``pullRequest`` or ``manual`` object."""
    commit: str
    origin: str
    """``push``, ``recovered``, ``pull`` or ``manual`` (see engine/pipelines.py)."""
    source_repo: str = ""
    source_knot: str = ""
    untrusted: bool = False
    only: frozenset[str] | None = None
    """Run only these workflow names (a manual run naming workflows)."""
    when: WhenTrigger = field(default_factory=lambda: WhenTrigger("manual"))


def select(
    files: Sequence[tuple[str, str]], mint: Mint, providers: Sequence[str], default: str | None
) -> list[Routed]:
    """The workflows the trigger runs, each routed (or failed with the reason Tangled would drop it)."""
    routed = []
    for decision in decide(files, mint.when):
        if mint.only is not None and decision.name not in mint.only:
            continue
        if decision.outcome == "skipped":
            continue
        raw = dict(files)[decision.name]
        target = (
            route(raw, providers, default)
            if decision.outcome == "run"
            else Route(provider=None, error=decision.reason)
        )
        routed.append(Routed(workflow_entry(decision, raw), target))
    return routed


def load_failure(reason: str) -> list[Routed]:
    """The one failed workflow of a pipeline whose files could not be loaded."""
    message = f"could not load .tangled/workflows: {reason}"
    return [Routed(Workflow(LOAD_FAILED_WORKFLOW, "", "", Clone()), Route(provider=None, error=message))]


def workflow_entry(decision: Decision, raw: str) -> Workflow:
    """A workflow file as the pipeline record carries it: its engine and clone options as Tangled reads them."""
    spec = decision.spec
    if spec is None:
        return Workflow(decision.name, "", raw, Clone(submodules=True, tags=True))
    c = spec.clone
    return Workflow(
        decision.name,
        spec.engine,
        raw,
        Clone(skip=c.skip, depth=c.depth, submodules=c.submodules, tags=c.tags),
    )


def pipeline_record(mint: Mint, default_branch: str, routed: Sequence[Routed]) -> dict[str, Any]:
    """The ``sh.tangled.pipeline`` record, as stock spindles write it for this trigger."""
    repo = mint.repo
    meta: dict[str, Any] = {
        "kind": mint.kind,
        {"push": "push", "pull_request": "pullRequest", "manual": "manual"}[mint.kind]: mint.detail,
        "repo": {
            "defaultBranch": default_branch,
            "did": repo.owner,
            "knot": repo.knot,
            "repo": repo.rkey,
            "repoDid": repo.repo_did,
        },
    }
    if mint.source_repo:
        meta["sourceRepo"] = mint.source_repo
    return {
        "$type": "sh.tangled.pipeline",
        "triggerMetadata": meta,
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


class Minter:
    """Builds pipelines for the triggers of current Tangled."""

    def __init__(self, knots: KnotApi, providers: Sequence[str], default_provider: str | None) -> None:
        self.knots = knots
        self.providers = list(providers)
        self.default_provider = default_provider
        self._default_branches: dict[str, tuple[float, str]] = {}

    def select(self, files: Sequence[tuple[str, str]], mint: Mint) -> list[Routed]:
        """The workflows ``mint``'s trigger runs, routed."""
        return select(files, mint, self.providers, self.default_provider)

    async def spec(self, mint: Mint, rkey: str, routed: Sequence[Routed]) -> PipelineSpec:
        """The pipeline to write (the caller writes it in its own transaction)."""
        record = pipeline_record(mint, await self.default_branch(mint.repo), routed)
        return PipelineSpec(
            knot=mint.repo.knot,
            rkey=rkey,
            record=record,
            repo_did=mint.repo.repo_did,
            kind=mint.kind,
            commit=mint.commit,
            origin=mint.origin,
            workflows=routed,
            source_repo=mint.source_repo,
            source_knot=mint.source_knot,
            untrusted=mint.untrusted,
        )

    async def default_branch(self, repo: Repo) -> str:
        """The repository's default branch, asked of its knot at most every ten minutes ("" when it cannot say)."""
        cached = self._default_branches.get(repo.repo_did)
        if cached is not None and time.monotonic() - cached[0] < 600:
            return cached[1]
        branch = await self.knots.default_branch(repo.knot, repo.repo_did)
        self._default_branches[repo.repo_did] = (time.monotonic(), branch)
        return branch
