"""Pull requests as current Tangled writes them: a gzipped ``git format-patch`` series and a
``sh.tangled.repo.pull`` record whose rounds point at it (lexicon ``sh.tangled.repo.pull``)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

from tack_sandbox._loopback import JsonObject
from tack_sandbox.gitrepos import git


PULL_NSID = "sh.tangled.repo.pull"
PATCH_MIME = "application/gzip"


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
