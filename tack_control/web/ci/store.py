"""Reading pipelines for the CI API: pages by repository, commits and kinds; one pipeline by id.

Every read is an index range (``pipelines_by_repo``, ``pipelines_by_commit``,
``pipelines_by_rkey``, the workflows' (knot, rkey, name) key) and ``total``
comes from ``pipeline_counts``, so a query costs the same on a repository of a
hundred pipelines or a hundred thousand.
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
    + " ELSE '$.triggerMetadata.manual' END)"
)


@dataclass(frozen=True)
class Page:
    """One page of a query: the pipelines, the cursor of the next page (None: none follows), the total."""

    pipelines: list[dict[str, Any]]
    cursor: str | None
    total: int


def _pipeline_row(row: Sequence[Any]) -> PipelineRow:
    knot, rkey, created, repo_did, source_repo, kind, commit, detail = row
    try:
        parsed = json.loads(detail) if detail else {}
    except ValueError:
        parsed = {}
    trigger = {_MEMBERS.get(kind, "manual"): parsed} if isinstance(parsed, dict) else {}
    return PipelineRow(knot, rkey, created, repo_did, source_repo, kind, commit, trigger)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _objects(conn: sqlite3.Connection, rows: list[PipelineRow]) -> list[dict[str, Any]]:
    """The lexicon objects of ``rows``, with their workflows read in one statement."""
    if not rows:
        return []
    found: dict[tuple[str, str], list[tuple[int, WorkflowRow]]] = {(r.knot, r.rkey): [] for r in rows}
    by_knot: dict[str, list[str]] = {}
    for r in rows:
        by_knot.setdefault(r.knot, []).append(r.rkey)
    # One index range per knot (a page's pipelines are nearly always on one knot); sorted here, not by
    # SQLite, which would sort the whole result in a temporary b-tree.
    for knot, rkeys in by_knot.items():
        for rkey, id_, name, status, error, started, finished in conn.execute(
            "SELECT rkey, id, name, status, error, started_s, finished_s FROM workflows"
            f" WHERE knot=? AND rkey IN ({_marks(len(rkeys))})",
            [knot, *rkeys],
        ):
            found[(knot, rkey)].append((id_, WorkflowRow(name, status, error, started, finished)))
    return [pipeline_object(r, [w for _, w in sorted(found[(r.knot, r.rkey)], key=_first)]) for r in rows]


def _first(item: tuple[int, WorkflowRow]) -> int:
    return item[0]


def _filters(q: PipelineQuery) -> tuple[str, list[Any]]:
    sql, args = "repo_did=?", [q.repo]
    if q.kinds:
        sql += f" AND kind IN ({_marks(len(q.kinds))})"
        args += q.kinds
    return sql, args


def query(conn: sqlite3.Connection, q: PipelineQuery) -> Page:
    """A page of ``q``: newest first; with commits, only the newest pipeline of each commit.

    ``total`` counts every pipeline the query matches, whatever the cursor
    (with commits: how many of them have a pipeline). Stock spindles count only
    those from the cursor on; the appview reads ``total`` on the first page,
    where the two agree. The cursor is the last pipeline's creation time (Unix
    ns, unique per pipeline), given only when more pipelines follow.
    """
    where, args = _filters(q)
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
                f"SELECT {_COLUMNS} FROM pipelines WHERE created_ns IN ({_marks(len(chosen))})"
                " ORDER BY created_ns DESC",
                chosen,
            ).fetchall()
            if chosen
            else []
        )
    else:
        kinds = f" AND kind IN ({_marks(len(q.kinds))})" if q.kinds else ""
        total = int(
            conn.execute(
                f"SELECT COALESCE(SUM(n), 0) FROM pipeline_counts WHERE repo_did=?{kinds}", [q.repo, *q.kinds]
            ).fetchone()[0]
        )
        before = "" if q.before is None else " AND created_ns < ?"
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM pipelines WHERE {where}{before} ORDER BY created_ns DESC LIMIT ?",
            [*args, *([] if q.before is None else [q.before]), q.limit + 1],
        ).fetchall()
    page = [_pipeline_row(r) for r in rows[: q.limit]]
    cursor = str(page[-1].created_ns) if len(rows) > q.limit else None
    return Page(_objects(conn, page), cursor, total)


def find(conn: sqlite3.Connection, rkey: str) -> PipelineRow | None:
    """The pipeline with this id; of two knots' pipelines with one rkey (2025 protocol), the newest."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM pipelines WHERE rkey=? ORDER BY created_ns DESC LIMIT 1", (rkey,)
    ).fetchone()
    return None if row is None else _pipeline_row(row)


def get(conn: sqlite3.Connection, rkey: str) -> dict[str, Any] | None:
    """The ``sh.tangled.ci.pipeline`` with this id, or None."""
    row = find(conn, rkey)
    return None if row is None else _objects(conn, [row])[0]
