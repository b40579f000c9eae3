"""Pull requests as records say them, and the commit a pull request builds. Free of I/O.

A ``sh.tangled.repo.pull`` record names its target (a repo DID and branch), its
source branch (and a ``repo`` only when it comes from a fork), and its rounds;
each round is a gzipped ``git format-patch`` series stored as a blob in the
author's PDS. The commit to build is the one the **last** patch of the latest
round was made from (its ``From <sha> Mon Sep 17 00:00:00 2001`` line), as
Tangled's spindle takes it. The blob is only trusted after its bytes hash to
the CID the record names, and it is expanded within bounds (a gzip bomb or a
truncated stream is a clear rejection, never a crash).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass
from typing import Any

from tack_control.ingest.wire import BadRecord, is_did, is_rkey


PULL = "sh.tangled.repo.pull"
PULL_STATUS = "sh.tangled.repo.pull.status"
STATUS_ACTIONS = {
    "sh.tangled.repo.pull.status.open": "reopened",
    "sh.tangled.repo.pull.status.closed": "closed",
    "sh.tangled.repo.pull.status.merged": "merged",
}
MAX_BLOB_BYTES = 16 << 20
MAX_PATCH_BYTES = 64 << 20
_FROM_LINE = re.compile(rb"^From ([0-9a-f]{40}|[0-9a-f]{64}) Mon Sep 17 00:00:00 2001\r?$", re.MULTILINE)
_RAW_SHA256_CID_PREFIX = bytes((0x01, 0x55, 0x12, 0x20))
_PULL_URI = re.compile(
    r"^at://(did:[a-z]+:[A-Za-z0-9._:%-]+)/sh\.tangled\.repo\.pull/([A-Za-z0-9._:~-]{1,512})$"
)


class PatchError(Exception):
    """A pull request's patch cannot be used; ``reason`` is a short code (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PullRecord:
    """The fields of a ``sh.tangled.repo.pull`` record that decide a run."""

    target_repo: str
    target_branch: str
    source_branch: str
    """Empty for a pull request of a pasted patch (no ``source``)."""
    source_repo: str
    """The fork's repo DID; empty for a branch of the target repository."""
    patch_cid: str
    patch_mime: str
    rounds: int

    @property
    def branch_based(self) -> bool:
        """Whether the change is a branch of the target repository (the only pull requests that run on their own)."""
        return bool(self.source_branch) and not self.source_repo


def parse_pull_uri(uri: str) -> tuple[str, str]:
    """(author DID, rkey) of a pull record's AT-URI; BadRecord for anything else."""
    match = _PULL_URI.fullmatch(uri)
    if match is None or not is_rkey(match.group(2)):
        raise BadRecord(f"pull: not the AT-URI of a {PULL} record")
    return match.group(1), match.group(2)


def pull_uri(author: str, rkey: str) -> str:
    """The AT-URI of a pull record."""
    return f"at://{author}/{PULL}/{rkey}"


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRecord(f"{where}: must be an object")
    return value


def _str(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > 2048:
        raise BadRecord(
            f"{where}.{key}: must be a non-empty string" if required else f"{where}.{key}: must be a string"
        )
    return value


def target_repo_did(record: dict[str, Any]) -> str:
    """The repo DID a pull record targets, "" when it names none (a 2025 record, or a malformed one)."""
    target = record.get("target")
    repo = target.get("repo") if isinstance(target, dict) else None
    return repo if isinstance(repo, str) and is_did(repo) else ""


def parse_pull(record: dict[str, Any]) -> PullRecord:
    """Parse a pull record as current Tangled writes it (repo DIDs in ``target`` and ``source``)."""
    target = _obj(record.get("target"), "pull.target")
    target_repo = _str(target, "repo", "pull.target")
    if not is_did(target_repo):
        raise BadRecord("pull.target.repo: not a repo DID (a record of the 2025 protocol?)")
    source = _obj(record.get("source"), "pull.source") if record.get("source") is not None else {}
    source_repo = _str(source, "repo", "pull.source", required=False)
    if source_repo and not is_did(source_repo):
        raise BadRecord("pull.source.repo: not a repo DID")
    rounds = record.get("rounds")
    if not isinstance(rounds, list) or not rounds:
        raise BadRecord("pull.rounds: must be a non-empty list")
    blob = _obj(_obj(rounds[-1], "pull.rounds[-1]").get("patchBlob"), "pull.rounds[-1].patchBlob")
    ref = blob.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else blob.get("cid")
    if not isinstance(cid, str) or not cid:
        raise BadRecord("pull.rounds[-1].patchBlob.ref: must be a CID link")
    mime = blob.get("mimeType")
    return PullRecord(
        target_repo=target_repo,
        target_branch=_str(target, "branch", "pull.target"),
        source_branch=_str(source, "branch", "pull.source") if source else "",
        source_repo=source_repo,
        patch_cid=cid,
        patch_mime=mime if isinstance(mime, str) else "",
        rounds=len(rounds),
    )


def status_action(record: dict[str, Any]) -> tuple[str, str]:
    """(pull AT-URI, action) of a ``sh.tangled.repo.pull.status`` record; action "" for a status tack ignores."""
    uri = _str(record, "pull", "pull.status")
    parse_pull_uri(uri)
    return uri, STATUS_ACTIONS.get(_str(record, "status", "pull.status"), "")


def verify_blob(cid: str, body: bytes) -> None:
    """Check that ``body`` is the blob ``cid`` names (CIDv1, raw, sha2-256, base32): PatchError otherwise."""
    if not cid.startswith("b") or len(cid) > 128:
        raise PatchError("bad_cid", f"{cid[:80]!r} is not a base32 CIDv1")
    text = cid[1:].upper()
    try:
        binary = base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, TypeError):
        raise PatchError("bad_cid", f"{cid[:80]!r} is not a base32 CIDv1") from None
    if len(binary) != 36 or not binary.startswith(_RAW_SHA256_CID_PREFIX):
        raise PatchError("bad_cid", f"{cid[:80]!r} is not the CID of a raw blob hashed with sha2-256")
    if not hmac.compare_digest(binary[4:], hashlib.sha256(body).digest()):
        raise PatchError("cid_mismatch", f"the blob's bytes do not hash to {cid}")


def gunzip(data: bytes, limit: int = MAX_PATCH_BYTES) -> bytes:
    """The expanded gzip stream (every member, as ``gzip -dc`` reads it), refusing more than ``limit`` bytes
    (a gzip bomb), a stream that ends early and bytes that are not gzip."""
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise PatchError("bad_gzip", f"the patch is not gzip: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise PatchError("patch_too_large", f"the patch expands to more than {limit} bytes")
        if not inflater.eof:
            raise PatchError("truncated", "the gzip stream ends before its end")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def last_patch_sha(patch: bytes) -> str:
    """The commit the last patch of a ``git format-patch`` series was made from; PatchError when there is none."""
    found = _FROM_LINE.findall(patch)
    if not found:
        raise PatchError(
            "no_commits",
            "the patch has no 'From <sha> Mon Sep 17 00:00:00 2001' line (not a format-patch series)",
        )
    return str(found[-1].decode("ascii"))
