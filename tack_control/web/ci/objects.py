"""Pipelines as ``sh.tangled.ci.pipeline`` objects (sans I/O).

Built from what tack stores: the pipeline row (its query columns and the
``triggerMetadata`` of its ``sh.tangled.pipeline`` record) and its workflow
rows. Stock spindles' mapping is followed field by field: ``id`` is the
pipeline's rkey (a TID), ``commit`` the pushed, pull-request source or manual
SHA, the trigger a union member with its ``$type``, a workflow's ``id`` and
``name`` its file name, ``startedAt``/``finishedAt`` the times of its
``running`` and terminal statuses. Times are whole-second RFC 3339 in UTC
(``Z``): valid RFC 3339 wherever the server runs, and the same form as the
statuses tack publishes (stock spindles print the server's local offset,
which is ``Z`` in a UTC container).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from tack_common.timefmt import NS_PER_SECOND, utc_second_text
from tack_control.ingest.wire import is_sha


TRIGGER_NSID = "sh.tangled.ci.trigger"
PR_ACTIONS = frozenset({"opened", "reopened", "closed", "merged", "synchronize"})
NULL_SHA = "0" * 40


class PipelineRow(NamedTuple):
    """A stored pipeline, as the CI API reads it."""

    knot: str
    rkey: str
    created_ns: int
    repo_did: str
    source_repo: str
    kind: str
    commit: str
    trigger: Mapping[str, Any]
    """The record's ``triggerMetadata`` ({} when unreadable); only the member of ``kind`` is read."""


class WorkflowRow(NamedTuple):
    """A stored workflow of a pipeline."""

    name: str
    status: str
    error: str
    started_s: int
    finished_s: int


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _detail(meta: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = meta.get(name)
    return value if isinstance(value, dict) else {}


def _seconds(s: int) -> str:
    return utc_second_text(s) + "Z"


def workflow_object(row: WorkflowRow) -> dict[str, Any]:
    """A ``sh.tangled.ci.pipeline#workflow``; a status not yet published is ``pending``."""
    out: dict[str, Any] = {"id": row.name, "name": row.name, "status": row.status or "pending"}
    if row.started_s:
        out["startedAt"] = _seconds(row.started_s)
    if row.finished_s:
        out["finishedAt"] = _seconds(row.finished_s)
    if row.error and row.status in ("failed", "cancelled", "timeout"):
        out["error"] = row.error
    return out


def _inputs(detail: Mapping[str, Any]) -> list[dict[str, str]]:
    pairs = detail.get("inputs")
    if not isinstance(pairs, list):
        return []
    return [
        {"key": _text(p.get("key")), "value": _text(p.get("value"))}
        for p in pairs
        if isinstance(p, dict) and isinstance(p.get("key"), str)
    ]


def trigger_object(row: PipelineRow) -> dict[str, Any]:
    """The ``sh.tangled.ci.trigger`` union member of a pipeline, with its ``$type``.

    Stock spindles fail to answer for a pipeline whose trigger details are
    missing; tack always answers, from the stored columns where the record
    lacks a field. A kind it does not know is shown as a manual run of the commit.
    """
    meta = row.trigger
    if row.kind == "push":
        detail = _detail(meta, "push")
        old = _text(detail.get("oldSha"))
        return {
            "$type": f"{TRIGGER_NSID}#push",
            "ref": _text(detail.get("ref")),
            "newSha": row.commit,
            # A push whose previous commit tack does not know (a recovered push) shows git's null commit.
            "oldSha": old if is_sha(old) else NULL_SHA,
        }
    if row.kind == "pull_request":
        detail = _detail(meta, "pullRequest")
        pull: dict[str, Any] = {
            "$type": f"{TRIGGER_NSID}#pullRequest",
            "targetBranch": _text(detail.get("targetBranch")),
            "sourceSha": row.commit,
            "sourceBranch": _text(detail.get("sourceBranch")),
        }
        if row.source_repo:
            pull["sourceRepo"] = row.source_repo
        if _text(detail.get("pull")):
            pull["pull"] = detail["pull"]
        if detail.get("action") in PR_ACTIONS:
            pull["action"] = detail["action"]
        return pull
    detail = _detail(meta, "manual")
    manual: dict[str, Any] = {"$type": f"{TRIGGER_NSID}#manual", "sha": row.commit}
    if _text(detail.get("ref")):
        manual["ref"] = detail["ref"]
    if row.source_repo:
        manual["sourceRepo"] = row.source_repo
    inputs = _inputs(detail)
    if inputs:
        manual["inputs"] = inputs
    return manual


def pipeline_object(row: PipelineRow, workflows: Sequence[WorkflowRow]) -> dict[str, Any]:
    """A ``sh.tangled.ci.pipeline``; ``repo`` is left out for a pipeline of a repository known only by name."""
    out: dict[str, Any] = {"id": row.rkey}
    if row.repo_did:
        out["repo"] = row.repo_did
    if row.source_repo and row.source_repo != row.repo_did:
        out["sourceRepo"] = row.source_repo
    out["commit"] = row.commit
    out["createdAt"] = _seconds(row.created_ns // NS_PER_SECOND)
    out["trigger"] = trigger_object(row)
    out["workflows"] = [workflow_object(w) for w in workflows]
    return out
