"""List-builds filters and ``Link`` pagination (docs/buildkite-api.md §1 "Pagination", §3 "List builds")."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from multidict import MultiMapping
from yarl import URL

from tests.fakes.buildkite.state import ApiError, Build


DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
_META_KEY = re.compile(r"meta_data\[(.+)\]")
_FINISHED = ("passed", "failed", "blocked", "canceled")


def _values(query: MultiMapping[str], name: str) -> list[str]:
    return [*query.getall(name, []), *query.getall(f"{name}[]", [])]


def _time(query: MultiMapping[str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(422, f"{name} is not a valid ISO 8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _branch_ok(patterns: list[str], branch: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(branch, p) for p in patterns)


def filter_builds(builds: Iterable[Build], query: MultiMapping[str]) -> list[Build]:
    """Apply ``state``, ``branch``, ``commit``, ``creator``, ``meta_data[k]`` and date filters; newest first."""
    states = {
        s for value in _values(query, "state") for s in (_FINISHED if value == "finished" else (value,))
    }
    branches = _values(query, "branch")
    commits = set(_values(query, "commit"))
    creator = query.get("creator")
    meta = {m.group(1): v for k, v in query.items() if (m := _META_KEY.fullmatch(k))}
    created_from, created_to = _time(query, "created_from"), _time(query, "created_to")
    finished_from = _time(query, "finished_from")
    out = []
    for build in builds:
        if states and build.state not in states and not ("blocked" in states and build.blocked):
            continue
        if not _branch_ok(branches, build.branch) or (commits and build.commit not in commits):
            continue
        if creator is not None and build.creator.id != creator:
            continue
        if any(build.meta_data.get(k) != v for k, v in meta.items()):
            continue
        if created_from is not None and build.created_at < created_from:
            continue
        if created_to is not None and build.created_at > created_to:
            continue
        if finished_from is not None and (build.finished_at is None or build.finished_at < finished_from):
            continue
        out.append(build)
    return sorted(out, key=lambda b: (b.created_at, b.seq), reverse=True)


@dataclass(frozen=True)
class Page:
    """One page of a listing."""

    items: list[Build]
    page: int
    per_page: int
    last: int


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def paginate(items: list[Build], query: MultiMapping[str], max_page: int | None) -> Page:
    """``page`` (from 1) and ``per_page`` (default 30, capped at 100)."""
    page = max(1, _int(query.get("page"), 1))
    per_page = _int(query.get("per_page"), DEFAULT_PER_PAGE)
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
    if max_page is not None and page > max_page:
        raise ApiError(
            400,
            "Listing builds this deep is not supported. Please narrow your query using filters "
            "such as branch or created_from.",
        )
    last = max(1, -(-len(items) // per_page))
    start = (page - 1) * per_page
    return Page(items[start : start + per_page], page, per_page, last)


def link_header(base: URL, page: Page) -> str | None:
    """``Link`` with ``next``/``last`` and ``first``/``prev`` where they exist."""
    rels: list[tuple[int, str]] = []
    if page.page < page.last:
        rels += [(page.page + 1, "next"), (page.last, "last")]
    if page.page > 1:
        rels += [(1, "first"), (min(page.page - 1, page.last), "prev")]
    if not rels:
        return None
    parts = [f'<{base.update_query(page=n, per_page=page.per_page)}>; rel="{rel}"' for n, rel in rels]
    return ", ".join(parts)
