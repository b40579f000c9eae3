"""Query parameters of the CI API, checked against the lexicons (sans I/O).

Every bad parameter raises :class:`BadParam`, which the handlers answer with
HTTP 400 and the error named by the lexicon (``InvalidRequest``), its message
naming the parameter. Array parameters are repeated (``commits=a&commits=b``),
as the appview and XRPC clients send them; unknown parameters are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiMapping

from tack_common.tid import is_tid
from tack_control.ingest.wire import is_did, is_sha


KINDS = ("push", "pull_request", "manual")
DEFAULT_LIMIT = 50
MAX_LIMIT = 250
MAX_COMMITS = 100
"""Commits one query may name: a page of the appview's commit log, with room to spare."""
MAX_WORKFLOWS = 50
"""Workflows one log subscription may name (the lexicon's bound on a pipeline's workflows)."""


class BadParam(Exception):
    """A parameter the lexicon does not allow; ``tag`` is the XRPC error name."""

    def __init__(self, message: str, tag: str = "InvalidRequest") -> None:
        super().__init__(message)
        self.tag = tag


@dataclass(frozen=True)
class PipelineQuery:
    """``sh.tangled.ci.queryPipelines``'s parameters."""

    repo: str
    commits: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT
    before: int | None = None
    """Only pipelines created before this (the cursor: a pipeline's creation time in Unix ns)."""


def _one(params: MultiMapping[str], name: str) -> str | None:
    values = params.getall(name, [])
    if len(values) > 1:
        raise BadParam(f"{name}: given {len(values)} times; give it once")
    return values[0] if values else None


def _did(params: MultiMapping[str], name: str, required: bool) -> str | None:
    value = _one(params, name)
    if value is None or value == "":
        if required:
            raise BadParam(f"{name}: required (a repository DID)")
        return None
    if not is_did(value):
        raise BadParam(f"{name}: must be a DID such as did:plc:…, got {value[:100]!r}")
    return value


def _sha(value: str, name: str) -> str:
    sha = value.lower()
    if not is_sha(sha):
        raise BadParam(f"{name}: must be a commit id (40 or 64 hex digits), got {value[:100]!r}")
    return sha


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def pipeline_query(params: MultiMapping[str]) -> PipelineQuery:
    """The parameters of a ``queryPipelines`` request.

    ``limit`` defaults to the lexicon's 50; with ``commits`` and no ``limit``
    it is at least the number of commits, so each one asked for can get its
    pipeline (what the appview's commit badges expect: they send no limit).
    """
    repo = _did(params, "repo", required=True)
    assert repo is not None
    commits = _unique([_sha(v, "commits") for v in params.getall("commits", [])])
    if len(commits) > MAX_COMMITS:
        raise BadParam(f"commits: at most {MAX_COMMITS} commits per query, got {len(commits)}")
    kinds = _unique(params.getall("kinds", []))
    for kind in kinds:
        if kind not in KINDS:
            raise BadParam(f"kinds: must be among {', '.join(KINDS)}, got {kind[:100]!r}")
    raw_limit = _one(params, "limit")
    if raw_limit is None:
        limit = max(DEFAULT_LIMIT, len(commits))
    elif raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT:
        limit = int(raw_limit)
    else:
        raise BadParam(f"limit: must be a whole number from 1 to {MAX_LIMIT}, got {raw_limit[:100]!r}")
    cursor = _one(params, "cursor")
    before = None
    if cursor:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19 and 0 < int(cursor) < 2**63):
            raise BadParam(f"cursor: not a cursor this spindle gave out: {cursor[:100]!r}")
        before = int(cursor)
    return PipelineQuery(repo, commits, kinds, limit, before)


def pipeline_id(params: MultiMapping[str]) -> str:
    """The ``pipeline`` parameter: a TID."""
    value = _one(params, "pipeline")
    if not value:
        raise BadParam("pipeline: required (a pipeline id, a TID)")
    if not is_tid(value):
        raise BadParam(f"pipeline: must be a TID (a pipeline id), got {value[:100]!r}")
    return value


def workflow_names(params: MultiMapping[str]) -> tuple[str, ...]:
    """The repeated ``workflows`` parameter, duplicates dropped, in the order given."""
    names = _unique(params.getall("workflows", []))
    if len(names) > MAX_WORKFLOWS:
        raise BadParam(f"workflows: at most {MAX_WORKFLOWS} names, got {len(names)}")
    for name in names:
        if not name or len(name) > 255:
            raise BadParam(f"workflows: not a workflow name: {name[:100]!r}")
    return names


@dataclass(frozen=True)
class DefinitionQuery:
    """``sh.tangled.ci.describeWorkflowDefinition``'s parameters."""

    repo: str
    sha: str
    source_repo: str | None


def definition_query(params: MultiMapping[str]) -> DefinitionQuery:
    """The parameters of a ``describeWorkflowDefinition`` request (``sha``: 40 hex, as the lexicon says)."""
    repo = _did(params, "repo", required=True)
    assert repo is not None
    sha = (_one(params, "sha") or "").lower()
    if len(sha) != 40 or not is_sha(sha):
        raise BadParam(f"sha: must be a 40-character commit hash, got {sha[:100]!r}")
    source = _did(params, "sourceRepo", required=False)
    return DefinitionQuery(repo, sha, None if source == repo else source)
