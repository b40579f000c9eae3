"""Reading pipelines for the CI API: pages by repository, commits and kinds; one pipeline by id.

Every read is an index range (``pipelines_by_repo``, ``pipelines_by_commit``,
``pipelines_by_rkey``, the workflows' (knot, rkey, name) key) and ``total``
comes from ``pipeline_counts``, so a query costs the same on a repository of a
hundred pipelines or a hundred thousand. One statement reads a page: each
pipeline row carries its workflows as a JSON array built by SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tack_control.web.ci.objects import PipelineRow, WorkflowRow, pipeline_object
from tack_control.web.ci.params import PipelineQuery


# The trigger details are the record's only part read: the member of triggerMetadata named by the kind.
_MEMBERS = {"push": "push", "pull_request": "pullRequest", "manual": "manual"}
_COLUMNS = (
    "knot, rkey, created_ns, repo_did, source_repo, kind, commit_sha, json_extract(record, CASE kind"
    + "".join(f" WHEN '{kind}' THEN '$.triggerMetadata.{member}'" for kind, member in _MEMBERS.items())
    + " ELSE '$.triggerMetadata.manual' END),"
    " (SELECT json_group_array(json_array(w.id, w.name, w.status, w.error, w.started_s, w.finished_s))"
    " FROM workflows w WHERE w.knot = p.knot AND w.rkey = p.rkey)"
)


@dataclass(frozen=True)
class Page:
    """One page of a query: the pipelines, the cursor of the next page (None: none follows), the total."""

    pipelines: list[dict[str, Any]]
    cursor: str | None
    total: int


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _object(row: Sequence[Any]) -> dict[str, Any]:
    """The lexicon object of one row of :data:`_COLUMNS`; workflows in record (insertion) order."""
    knot, rkey, created, repo_did, source_repo, kind, commit, detail, workflows = row
    parsed = _loads(detail)
    trigger = {_MEMBERS.get(kind, "manual"): parsed} if isinstance(parsed, dict) else {}
    pipeline = PipelineRow(knot, rkey, created, repo_did, source_repo, kind, commit, trigger)
    rows = sorted(_loads(workflows) or ())
    return pipeline_object(pipeline, [WorkflowRow(*w[1:]) for w in rows])


def _marks(n: int) -> str:
    return ",".join("?" * n)


def query(conn: sqlite3.Connection, q: PipelineQuery) -> Page:
    """A page of ``q``: newest first; with commits, only the newest pipeline of each commit.

    ``total`` counts every pipeline the query matches, whatever the cursor
    (with commits: how many of them have a pipeline). Stock spindles count only
    those from the cursor on; the appview reads ``total`` on the first page,
    where the two agree. The cursor is the last pipeline's creation time (Unix
    ns, unique per pipeline), given only when more pipelines follow.
    """
    where, args = "repo_did=?", [q.repo]
    if q.kinds:
        where += f" AND kind IN ({_marks(len(q.kinds))})"
        args += q.kinds
    if q.commits:
        newest = conn.execute(
            f"SELECT MAX(created_ns) FROM pipelines WHERE {where} AND commit_sha IN ({_marks(len(q.commits))})"
            " GROUP BY commit_sha",
            [*args, *q.commits],
        ).fetchall()
        created = sorted((c for (c,) in newest), reverse=True)
        total = len(created)
        if q.before is not None:
            created = [c for c in created if c < q.before]
        chosen = created[: q.limit + 1]
        rows = (
            conn.execute(
                f"SELECT {_COLUMNS} FROM pipelines p WHERE created_ns IN ({_marks(len(chosen))})"
                " ORDER BY created_ns DESC",
                chosen,
            ).fetchall()
            if chosen
            else []
        )
    else:
        total = int(
            conn.execute(
                f"SELECT COALESCE(SUM(n), 0) FROM pipeline_counts WHERE {where}",
                args,
            ).fetchone()[0]
        )
        before = "" if q.before is None else " AND created_ns < ?"
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM pipelines p WHERE {where}{before} ORDER BY created_ns DESC LIMIT ?",
            [*args, *([] if q.before is None else [q.before]), q.limit + 1],
        ).fetchall()
    cursor = str(rows[q.limit - 1][2]) if len(rows) > q.limit else None
    return Page([_object(r) for r in rows[: q.limit]], cursor, total)


def find(conn: sqlite3.Connection, rkey: str) -> tuple[str, str] | None:
    """(knot, rkey) of the pipeline with this id; of two knots' pipelines with one rkey (2025 protocol), the newest."""
    row = conn.execute(
        "SELECT knot, rkey FROM pipelines WHERE rkey=? ORDER BY created_ns DESC LIMIT 1", (rkey,)
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def get(conn: sqlite3.Connection, rkey: str) -> dict[str, Any] | None:
    """The ``sh.tangled.ci.pipeline`` with this id, or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM pipelines p WHERE rkey=? ORDER BY created_ns DESC LIMIT 1", (rkey,)
    ).fetchone()
    return None if row is None else _object(row)
