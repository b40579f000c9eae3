"""Pull requests' patches: the blob checked against its CID, expanded within bounds, the last commit taken."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tack_control.ingest.patches import (
    PatchError,
    gunzip,
    last_patch_sha,
    parse_pull,
    parse_pull_uri,
    status_action,
    verify_blob,
)
from tack_control.ingest.wire import BadRecord


def blob_cid(data: bytes) -> str:
    """The CID of a raw blob, computed independently (multibase base32 of 0x01 0x55 0x12 0x20 + sha256)."""
    return "b" + base64.b32encode(
        bytes((1, 0x55, 0x12, 0x20)) + hashlib.sha256(data).digest()
    ).decode().lower().rstrip("=")


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity; its stdout."""
    env = {
        "GIT_AUTHOR_NAME": "A",
        "GIT_AUTHOR_EMAIL": "a@example.com",
        "GIT_COMMITTER_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@example.com",
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def series(tmp_path: Path) -> tuple[bytes, list[str]]:
    """A real two-commit ``git format-patch`` series of a real repository, and the two commits."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "base")
    git(tmp_path, "checkout", "-q", "-b", "feature")
    shas = []
    for text in ("two\n", "three\n"):
        (tmp_path / "a.txt").write_text(text)
        git(tmp_path, "commit", "-q", "-am", f"change to {text.strip()}")
        shas.append(git(tmp_path, "rev-parse", "HEAD").strip())
    return git(tmp_path, "format-patch", "--stdout", "main..feature").encode(), shas


def test_the_last_patch_of_a_real_series_names_the_head_commit(series: tuple[bytes, list[str]]) -> None:
    """The commit of a series is the one its last patch was made from (the source branch's head)."""
    patch, shas = series
    assert last_patch_sha(patch) == shas[-1]


def test_a_plain_diff_has_no_commit(tmp_path: Path, series: tuple[bytes, list[str]]) -> None:
    """A pasted diff (no 'From <sha>' line) is refused with the reason, not guessed."""
    plain = git(tmp_path, "diff", "main", "feature").encode()
    with pytest.raises(PatchError) as info:
        last_patch_sha(plain)
    assert info.value.reason == "no_commits"


def test_the_blob_must_hash_to_its_cid(series: tuple[bytes, list[str]]) -> None:
    """The gzipped bytes verify against their CID; one changed byte, or a CID of another kind, does not."""
    blob = gzip.compress(series[0])
    verify_blob(blob_cid(blob), blob)
    with pytest.raises(PatchError) as mismatch:
        verify_blob(blob_cid(blob), blob[:-1] + bytes((blob[-1] ^ 1,)))
    assert mismatch.value.reason == "cid_mismatch"
    dag_cbor_cid = "bafyreib2rxk3rh6kzwq"  # a record CID (dag-cbor), not a blob's
    for bad in (dag_cbor_cid, "Qmabc", "b!!!!", ""):
        with pytest.raises(PatchError) as info:
            verify_blob(bad, blob)
        assert info.value.reason == "bad_cid"


def test_gzip_is_expanded_within_bounds() -> None:
    """A bomb past the limit, a truncated stream and non-gzip bytes are each refused with their reason."""
    assert gunzip(gzip.compress(b"x" * 1000)) == b"x" * 1000
    bomb = gzip.compress(b"\0" * (8 << 20))
    assert len(bomb) < 16 << 10
    with pytest.raises(PatchError) as info:
        gunzip(bomb, limit=1 << 20)
    assert info.value.reason == "patch_too_large"
    with pytest.raises(PatchError) as info:
        gunzip(gzip.compress(os.urandom(100_000))[:5000])
    assert info.value.reason == "truncated"
    with pytest.raises(PatchError) as info:
        gunzip(b"not gzip at all")
    assert info.value.reason == "bad_gzip"


def test_pull_records_of_current_tangled_parse_and_old_ones_are_refused() -> None:
    """Repo DIDs in target and source; a branch pull request vs a fork's; the 2025 AT-URI form refused."""
    blob = {"$type": "blob", "ref": {"$link": "bafkreiexample"}, "mimeType": "application/gzip", "size": 10}
    record = {
        "target": {"repo": "did:plc:target", "branch": "main"},
        "source": {"branch": "feature"},
        "rounds": [
            {"createdAt": "2026-07-22T08:35:09Z", "patchBlob": {**blob, "ref": {"$link": "bafkreiold"}}},
            {"createdAt": "2026-07-22T09:00:00Z", "patchBlob": blob},
        ],
    }
    pull = parse_pull(record)
    assert (pull.target_repo, pull.target_branch, pull.source_branch, pull.patch_cid, pull.rounds) == (
        "did:plc:target",
        "main",
        "feature",
        "bafkreiexample",
        2,
    )
    assert pull.branch_based
    assert not parse_pull({**record, "source": {"branch": "f", "repo": "did:plc:fork"}}).branch_based
    assert not parse_pull({k: v for k, v in record.items() if k != "source"}).branch_based
    with pytest.raises(BadRecord, match=r"target\.repo"):
        parse_pull({**record, "target": {"repo": "at://did:plc:o/sh.tangled.repo/x", "branch": "main"}})
    with pytest.raises(BadRecord, match="rounds"):
        parse_pull({**record, "rounds": []})


def test_status_records_map_to_actions() -> None:
    """open, closed and merged become reopened, closed and merged; other statuses are ignored; bad URIs refused."""
    uri = "at://did:plc:author/sh.tangled.repo.pull/3mr7m2f6ger25"
    assert parse_pull_uri(uri) == ("did:plc:author", "3mr7m2f6ger25")
    for status, action in (("open", "reopened"), ("closed", "closed"), ("merged", "merged"), ("draft", "")):
        assert status_action({"pull": uri, "status": f"sh.tangled.repo.pull.status.{status}"}) == (
            uri,
            action,
        )
    with pytest.raises(BadRecord):
        status_action(
            {"pull": "at://did:plc:a/sh.tangled.repo/x", "status": "sh.tangled.repo.pull.status.open"}
        )


def test_every_gzip_member_is_expanded_and_the_limit_counts_them_all() -> None:
    """A multi-member stream expands like ``gzip -dc``; the bound applies to the whole; trailing junk is refused."""
    two = gzip.compress(b"first\n") + gzip.compress(b"second\n")
    assert gunzip(two) == b"first\nsecond\n"
    with pytest.raises(PatchError) as info:
        gunzip(gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600), limit=1000)
    assert info.value.reason == "patch_too_large"
    with pytest.raises(PatchError) as info:
        gunzip(gzip.compress(b"first\n") + b"junk")
    assert info.value.reason in ("bad_gzip", "truncated")


def test_a_series_with_windows_line_endings_still_names_its_commit(series: tuple[bytes, list[str]]) -> None:
    """CRLF line endings (a series saved on Windows) do not hide the From lines."""
    patch, shas = series
    assert last_patch_sha(patch.replace(b"\n", b"\r\n")) == shas[-1]
