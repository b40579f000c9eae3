"""Pull requests as Tangled's appview writes them, for the sandbox and the tests.

A branch pull request is a ``sh.tangled.repo.pull`` record in its author's PDS
naming the target repository (its repo DID) and branch and the source branch;
each round carries a blob: the gzipped ``git format-patch`` series of the
source branch against the target branch, uploaded to the author's PDS. Here the
series is made by real git from a real repository (a knot's bare repository
will do), and the blob reference carries the CID a PDS gives the bytes (CIDv1,
raw, sha2-256, base32), computed independently of tack's own check.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tack_sandbox._loopback import JsonObject
from tack_sandbox.gitrepos import git


PULL = "sh.tangled.repo.pull"
PULL_STATUS = "sh.tangled.repo.pull.status"
PullStatus = Literal["open", "closed", "merged"]
CREATED_AT = "2026-07-22T08:35:09Z"


def blob_cid(data: bytes) -> str:
    """The CID of a blob: ``b`` + base32 (lower case, unpadded) of ``01 55 12 20`` ‖ sha256(data)."""
    binary = bytes((0x01, 0x55, 0x12, 0x20)) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(binary).decode().lower().rstrip("=")


def blob_ref(data: bytes, mime_type: str = "application/gzip") -> JsonObject:
    """The blob reference a record carries for ``data`` once uploaded."""
    return {"$type": "blob", "ref": {"$link": blob_cid(data)}, "mimeType": mime_type, "size": len(data)}


async def start_branch(repo: Path, branch: str, base: str = "main") -> None:
    """Create ``branch`` in ``repo`` at ``base``'s commit (as a contributor branches off), unless it exists."""
    if not (await git("branch", "--list", branch, cwd=repo)).strip():
        await git("branch", branch, base, cwd=repo)


async def format_patch(repo: Path, base: str, head: str) -> bytes:
    """``git format-patch --stdout base..head`` of ``repo`` (bare or not): one patch per commit, oldest first."""
    return (await git("format-patch", "--stdout", f"{base}..{head}", cwd=repo)).encode()


async def patch_blob(repo: Path, base: str, head: str) -> bytes:
    """The gzipped format-patch series of ``head`` against ``base``: a round's ``patchBlob``."""
    return gzip.compress(await format_patch(repo, base, head), mtime=0)


def pull_record(
    *,
    target_repo: str,
    source_branch: str,
    blobs: Sequence[bytes],
    target_branch: str = "main",
    source_repo: str | None = None,
    title: str = "A change",
) -> JsonObject:
    """A pull record with one round per blob (newest last); ``source_repo`` makes it a fork's."""
    source: JsonObject = {"branch": source_branch}
    if source_repo is not None:
        source["repo"] = source_repo
    return {
        "$type": PULL,
        "title": title,
        "createdAt": CREATED_AT,
        "target": {"repo": target_repo, "branch": target_branch},
        "source": source,
        "rounds": [{"createdAt": CREATED_AT, "patchBlob": blob_ref(blob)} for blob in blobs],
    }


def pull_uri(author: str, rkey: str) -> str:
    """The AT-URI of ``author``'s pull record ``rkey``."""
    return f"at://{author}/{PULL}/{rkey}"


def status_record(pull: str, status: PullStatus) -> JsonObject:
    """A ``sh.tangled.repo.pull.status`` record setting the pull (its AT-URI) ``open``, ``closed`` or ``merged``."""
    return {"$type": PULL_STATUS, "pull": pull, "status": f"{PULL_STATUS}.{status}", "createdAt": CREATED_AT}
