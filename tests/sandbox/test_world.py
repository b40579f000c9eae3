"""SandboxWorld: the sandbox's simulated Tangled: real pushes with refUpdates, pull requests as records and blobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tack_control.identity.did import parse_document
from tack_control.identity.keys import from_crypto
from tack_control.ingest.patches import gunzip, last_patch_sha, parse_pull, verify_blob
from tack_sandbox.gitrepos import git
from tack_sandbox.world import SANDBOX_OWNER, SANDBOX_REPO_DID, SandboxWorld
from tests.support.lexicon import Lexicons


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SandboxWorld]:
    """A current-protocol world, started, with a fresh signing key for the owner."""
    sim = SandboxWorld("current", tmp_path)
    await sim.start(from_crypto(ec.generate_private_key(ec.SECP256K1()).public_key()).multikey())
    try:
        yield sim
    finally:
        await sim.stop()


async def test_the_owner_and_the_repository_resolve_as_tack_needs(world: SandboxWorld) -> None:
    """The owner's document names the PDS and a signing key; the repo DID's names the knot; the repo record is valid."""
    owner = parse_document(SANDBOX_OWNER, world.plc.documents[SANDBOX_OWNER])
    assert owner.pds == world.pds.url
    assert owner.signing_key is not None
    repo = parse_document(SANDBOX_REPO_DID, world.plc.documents[SANDBOX_REPO_DID])
    assert repo.knot == f"http://{world.knot.hostname}"
    record = world.repo_record("127.0.0.1:8080")
    Lexicons().validate(record, "sh.tangled.repo")
    assert (record["repoDid"], record["knot"], record["spindle"]) == (
        SANDBOX_REPO_DID,
        world.knot.hostname,
        "127.0.0.1:8080",
    )
    assert world.knot.repos[SANDBOX_REPO_DID].rkey == world.repo_rkey


async def test_pushes_are_real_commits_announced_by_ref_updates(world: SandboxWorld) -> None:
    """The first push brings the workflows, the next changes one file; each is served over smart HTTP and announced."""
    first = await world.push()
    second = await world.push()
    updates = [e.event for e in world.knot.events if e.nsid == "sh.tangled.git.refUpdate"]
    assert [(u["oldSha"], u["newSha"]) for u in updates] == [("0" * 40, first.sha), (first.sha, second.sha)]
    assert ".tangled/workflows/build.yml" in updates[0]["changedFiles"]
    assert updates[1]["changedFiles"] == ["CHANGELOG.md"]
    assert all(u["repo"] == SANDBOX_REPO_DID and u["ref"] == "refs/heads/main" for u in updates)
    served = await git("ls-remote", world.clone_url, "refs/heads/main")
    assert served.split()[0] == second.sha


async def test_a_pull_request_is_a_branch_a_patch_blob_and_a_record(world: SandboxWorld) -> None:
    """The pull record is valid, names the branch and main, and its blob verifies and ends at the branch's commit."""
    await world.push()
    change = await world.open_pull()
    [(did, collection, rkey)] = [k for k in world.pds.records if k[1] == "sh.tangled.repo.pull"]
    assert change.pull == f"at://{did}/{collection}/{rkey}"
    record = world.pds.records[(did, collection, rkey)]
    Lexicons().validate(record, "sh.tangled.repo.pull")
    pull = parse_pull(record)
    assert (pull.target_repo, pull.target_branch, pull.source_branch, pull.branch_based) == (
        SANDBOX_REPO_DID,
        "main",
        "sandbox/pr-1",
        True,
    )
    blob, mime = world.pds.blobs[(SANDBOX_OWNER, pull.patch_cid)]
    assert mime == pull.patch_mime == "application/gzip"
    verify_blob(pull.patch_cid, blob)
    assert last_patch_sha(gunzip(blob)) == change.sha
    committed = world.jetstream.events[-1]
    assert committed["did"] == SANDBOX_OWNER
    assert (committed["commit"]["collection"], committed["commit"]["rkey"]) == (collection, rkey)
    branch = await git("ls-remote", world.clone_url, "refs/heads/sandbox/pr-1")
    assert branch.split()[0] == change.sha
    second = await world.open_pull()
    assert "sandbox/pr-2" in second.summary


async def test_a_legacy_world_sends_pipelines_from_the_knot(tmp_path: Path) -> None:
    """In legacy mode the repo record has no repo DID and pushes and pull requests are knot pipeline triggers."""
    world = SandboxWorld("legacy", tmp_path)
    await world.start(from_crypto(ec.generate_private_key(ec.SECP256K1()).public_key()).multikey())
    try:
        assert "repoDid" not in world.repo_record("127.0.0.1:8080")
        assert SANDBOX_REPO_DID not in world.plc.documents
        push = await world.push()
        pull = await world.open_pull()
        events = world.knot.events
        assert [e.nsid for e in events] == ["sh.tangled.pipeline"] * 2
        assert [e.rkey for e in events] == [push.pipeline, pull.pipeline]
        kinds = [e.event["triggerMetadata"]["kind"] for e in events]
        assert kinds == ["push", "pull_request"]
        assert [w["name"] for w in events[1].event["workflows"]] == ["build.yml", "lint.yml"]
    finally:
        await world.stop()
