"""Pull request records for tests: the sandbox's builders (tack_sandbox/pulls.py) with the defaults tests share."""

from __future__ import annotations

from collections.abc import Sequence

from tack_sandbox._loopback import JsonObject
from tack_sandbox.pds import blob_ref
from tack_sandbox.pulls import PATCH_MIME, PullStatus, pull_record, status_record


CREATED_AT = "2026-07-22T08:35:09Z"


def pull_of(
    target_repo: str,
    blobs: Sequence[bytes],
    *,
    source_branch: str | None = "feature",
    source_repo: str | None = None,
    mime_type: str = PATCH_MIME,
) -> JsonObject:
    """A pull record of ``source_branch`` into main with one round per blob (newest last); ``source_repo``
    makes it a fork's, ``source_branch=None`` a pasted patch."""
    return pull_record(
        target_repo=target_repo,
        target_branch="main",
        source_branch=source_branch,
        patch_blobs=[blob_ref(blob, mime_type) for blob in blobs],
        title="A change",
        created_at=CREATED_AT,
        source_repo=source_repo,
    )


def status_of(pull: str, status: PullStatus) -> JsonObject:
    """A status record for the pull (its AT-URI)."""
    return status_record(pull, status, CREATED_AT)
