"""Pull requests as current Tangled writes them: a gzipped ``git format-patch`` series, a
``sh.tangled.repo.pull`` record whose rounds point at it, and the ``sh.tangled.repo.pull.status``
records that close, merge or reopen it (lexicons ``sh.tangled.repo.pull``, ``…pull.status``)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tack_sandbox._loopback import JsonObject
from tack_sandbox.gitrepos import git


PULL_NSID = "sh.tangled.repo.pull"
PULL_STATUS_NSID = "sh.tangled.repo.pull.status"
PATCH_MIME = "application/gzip"
PullStatus = Literal["open", "closed", "merged"]


async def format_patch(repo: Path, base: str, head: str) -> bytes:
    """The gzipped ``git format-patch --stdout base..head`` series of ``repo`` (a bare repository works)."""
    series = await git("format-patch", "--stdout", f"{base}..{head}", cwd=repo)
    return gzip.compress(series.encode())


def pull_record(
    *,
    target_repo: str,
    target_branch: str,
    source_branch: str | None,
    patch_blobs: Sequence[JsonObject],
    title: str,
    created_at: str,
    source_repo: str | None = None,
) -> JsonObject:
    """A ``sh.tangled.repo.pull`` record: one round per patch blob (oldest first), ``source`` when a branch is named."""
    record: JsonObject = {
        "$type": PULL_NSID,
        "title": title,
        "target": {"repo": target_repo, "branch": target_branch},
        "rounds": [{"patchBlob": blob, "createdAt": created_at} for blob in patch_blobs],
        "createdAt": created_at,
    }
    if source_branch is not None:
        record["source"] = {"branch": source_branch, **({"repo": source_repo} if source_repo else {})}
    return record


def pull_uri(author: str, rkey: str) -> str:
    """The AT-URI of ``author``'s pull record ``rkey``."""
    return f"at://{author}/{PULL_NSID}/{rkey}"


def status_record(pull: str, status: PullStatus, created_at: str) -> JsonObject:
    """A ``sh.tangled.repo.pull.status`` record setting the pull (its AT-URI) ``open``, ``closed`` or ``merged``."""
    return {
        "$type": PULL_STATUS_NSID,
        "pull": pull,
        "status": f"{PULL_STATUS_NSID}.{status}",
        "createdAt": created_at,
    }
