"""Current Tangled end to end: a real git push to a knot → refUpdate → tack loads the workflows → runs them.

Real processes (the control plane, the stub provider), a current-protocol knot on loopback serving real
git repositories over smart HTTP, a PLC directory holding the repo DID's document.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tack_sandbox.gitrepos import sha256_supported
from tack_sandbox.knot import SimulatedKnot, pipeline_record
from tests.fakes.appview import AppviewClient
from tests.support.current import CREATED_AT, QUICK, World, make_world, until, workflow
from tests.support.stack import OWNER, stub_runs, stub_workflow


pytestmark = pytest.mark.e2e

MAIN_PUSH = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'
WORKFLOWS = {
    ".tangled/workflows/build.yml": workflow(MAIN_PUSH),
    ".tangled/workflows/release.yml": workflow('when:\n  - event: ["push"]\n    tag: ["v*"]\n'),
    ".tangled/workflows/docs.yml": workflow(
        'when:\n  - event: ["push"]\n    branch: ["main"]\n    paths: ["docs/**"]\n'
    ),
    ".tangled/workflows/feature.yml": workflow('when:\n  - event: ["push"]\n    branch: ["feat/**"]\n'),
    "README.md": "hello\n",
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A current knot with the owner's repository registered (and verified) here."""
    w = await make_world(tmp_path)
    try:
        yield w
    finally:
        await w.stop()


async def test_a_push_runs_the_workflows_whose_when_matches(world: World) -> None:
    """A push to main runs build.yml only: not the tag, paths (no docs change) or feature-branch workflows."""
    appview = AppviewClient(world.stack.cp.http)
    await appview.connect_events()
    try:
        pushed = await world.knot.push(world.repo_did, WORKFLOWS)
        await until(lambda: len(world.pipelines()) == 1, "a pipeline is minted")
        [(rkey, kind, commit, origin, repo_did)] = world.pipelines()
        assert (kind, commit, origin, repo_did) == ("push", pushed.new_sha, "push", world.repo_did)
        await until(
            lambda: world.workflows(rkey).get("build.yml", ("",))[0] == "success", "build.yml succeeds"
        )
        assert set(world.workflows(rkey)) == {"build.yml"}
        await until(
            lambda: (appview.latest(world.knot.hostname, rkey, "build.yml") or {}).get("status") == "success",
            "the appview sees success",
        )
        seen = [s["status"] for s in appview.statuses(world.knot.hostname, rkey, "build.yml")]
        assert seen == ["pending", "running", "success"]
    finally:
        await appview.close()


async def test_tag_paths_skip_ci_and_branch_filters_each_decide(world: World) -> None:
    """A tag runs release.yml; a docs change runs docs.yml too; skip-ci runs nothing; a feature branch runs feature.yml."""
    await world.knot.push(world.repo_did, WORKFLOWS)
    await until(lambda: len(world.pipelines()) == 1, "the first pipeline")
    await world.knot.push(world.repo_did, {"docs/guide.md": "# guide\n"})
    await until(lambda: len(world.pipelines()) == 2, "the docs pipeline")
    assert set(world.workflows(world.pipelines()[1][0])) == {"build.yml", "docs.yml"}
    await world.knot.push(world.repo_did, {"src/x.c": "int x;\n"}, push_options=["skip-ci"])
    await world.knot.push(world.repo_did, {**WORKFLOWS, "src/y.c": "int y;\n"}, branch="feat/login")
    await until(lambda: len(world.pipelines()) == 3, "the feature-branch pipeline")
    assert set(world.workflows(world.pipelines()[2][0])) == {"feature.yml"}
    # Three pushes ran; the skip-ci push is not even queued (no row, in any state).
    assert [s for _, s, _ in world.pushes()] == ["done", "done", "done"]
    head = world.pipelines()[1][2]
    world.knot.emit_ref_update(
        {
            "$type": "",
            "repo": world.repo_did,
            "ref": "refs/tags/v1.0",
            "oldSha": "0" * 40,
            "newSha": head,
            "committerDid": OWNER,
            "ownerDid": OWNER,
            "meta": None,
        }
    )
    await until(lambda: len(world.pipelines()) == 4, "the tag pipeline")
    assert set(world.workflows(world.pipelines()[3][0])) == {"release.yml"}


async def test_a_replayed_push_runs_once(world: World) -> None:
    """The same refUpdate delivered again (a replay) starts nothing new."""
    await world.knot.push(world.repo_did, WORKFLOWS)
    await until(lambda: len(world.pipelines()) == 1, "a pipeline")
    world.knot.emit_ref_update(json.loads(json.dumps(world.knot.events[-1].event)))
    await world.knot.drop_connections()
    await world.stack.wait_knot_connected()
    await asyncio.sleep(1.5)
    assert len(world.pipelines()) == 1
    assert stub_runs(world.stack) == 1


async def test_workflows_that_cannot_be_loaded_fail_visibly_on_the_pipeline(world: World) -> None:
    """A commit with more workflow files than tack loads gets a pipeline whose one workflow fails with the reason."""
    files = {f".tangled/workflows/w{i:03d}.yml": workflow(MAIN_PUSH) for i in range(300)}
    await world.knot.push(world.repo_did, files)
    await until(lambda: len(world.pipelines()) == 1, "a pipeline")
    [(rkey, *_)] = world.pipelines()
    await until(
        lambda: world.workflows(rkey).get("workflows", ("",))[0] == "failed", "the load failure is shown"
    )
    error = world.workflows(rkey)["workflows"][1]
    assert "could not load .tangled/workflows" in error and "too_many_files" in error
    assert stub_runs(world.stack) == 0


async def test_kill9_mid_push_resumes_and_runs_once(world: World) -> None:
    """tack killed right after the refUpdate arrives runs the push exactly once after restarting."""
    await world.knot.push(world.repo_did, WORKFLOWS)
    await until(lambda: len(world.pushes()) == 1, "the push is recorded")
    world.stack.cp.kill9()
    await world.stack.cp.start_ready()
    await until(lambda: len(world.pipelines()) == 1, "the pipeline after the restart")
    rkey = world.pipelines()[0][0]
    await until(lambda: world.workflows(rkey).get("build.yml", ("",))[0] == "success", "it completes")
    await asyncio.sleep(1.0)
    assert len(world.pipelines()) == 1 and stub_runs(world.stack) == 1


async def test_a_sha256_repository_runs_like_any_other(tmp_path: Path) -> None:
    """A Knot2-style SHA-256 repository (64-hex commits) loads and runs."""
    if not await sha256_supported():
        pytest.skip("this git cannot create SHA-256 repositories")
    w = await make_world(tmp_path, object_format="sha256")
    try:
        pushed = await w.knot.push(w.repo_did, WORKFLOWS)
        assert len(pushed.new_sha) == 64
        await until(lambda: len(w.pipelines()) == 1, "a pipeline")
        [(rkey, _, commit, _, _)] = w.pipelines()
        assert commit == pushed.new_sha
        await until(lambda: w.workflows(rkey).get("build.yml", ("",))[0] == "success", "build.yml succeeds")
    finally:
        await w.stop()


async def test_a_push_missed_while_tack_was_down_is_recovered_once(tmp_path: Path) -> None:
    """A push made while tack is down, gone from the knot's retained events, runs after restart, once, marked recovered."""
    w = await make_world(tmp_path, retain=1)
    try:
        await w.knot.push(w.repo_did, WORKFLOWS)
        await until(lambda: len(w.pipelines()) == 1, "the first pipeline")
        # Let the recovery scan record the repository's refs (its baseline) after the connect.
        await asyncio.sleep(3.0)
        w.stack.cp.kill9()
        missed = await w.knot.push(w.repo_did, {"src/a.c": "int a;\n"})
        # Later events push the missed one out of the knot's memory.
        for _ in range(3):
            w.knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": OWNER})
        assert all(e.nsid != "sh.tangled.git.refUpdate" for e in w.knot.events)
        await w.stack.cp.start_ready()
        await until(lambda: len(w.pipelines()) == 2, "the missed push runs", timeout=30)
        _, kind, commit, origin, _ = w.pipelines()[1]
        assert (kind, commit, origin) == ("push", missed.new_sha, "recovered")
        await asyncio.sleep(3.0)
        assert len(w.pipelines()) == 2
    finally:
        await w.stop()


async def test_a_legacy_knot_and_a_current_knot_at_once_each_push_runs_once(world: World) -> None:
    """A 2025 knot (sh.tangled.pipeline plus its old-shape refUpdate) beside a current one: every push runs once."""
    legacy = SimulatedKnot(ping_interval=1.0)
    await legacy.start()
    try:
        world.stack.jetstream.commit(
            OWNER,
            "sh.tangled.repo",
            "old",
            "create",
            {
                "name": "old",
                "knot": legacy.hostname,
                "spindle": world.stack.cp.hostname,
                "createdAt": "2025-11-01T00:00:00Z",
            },
        )
        await legacy.wait_connected(1, timeout=15)
        record = pipeline_record(
            knot=legacy.hostname, did=OWNER, repo="old", workflows=[stub_workflow("old.yml", QUICK)]
        )
        push = record["triggerMetadata"]["push"]
        # A 2025 knot sends the push twice: the old refUpdate shape (ignored) and the pipeline (run).
        legacy.emit_ref_update(
            {
                "repoDid": OWNER,
                "repoName": "old",
                "ref": push["ref"],
                "oldSha": push["oldSha"],
                "newSha": push["newSha"],
                "committerDid": OWNER,
                "meta": {"isDefaultRef": True, "commitCount": {}},
            }
        )
        legacy.emit_pipeline(legacy.new_rkey(), record)
        # ... and the same pipeline again under another rkey (a replay): the push key stops it.
        legacy.emit_pipeline(legacy.new_rkey(), record)
        await world.knot.push(world.repo_did, WORKFLOWS)
        await until(lambda: len(world.pipelines()) == 2, "one pipeline per push")
        await asyncio.sleep(2.0)
        origins = sorted((origin, kind) for _, kind, _, origin, _ in world.pipelines())
        assert origins == [("knot", "push"), ("push", "push")]
        await until(lambda: stub_runs(world.stack) == 2, "both run")
        with sqlite3.connect(world.stack.cp.db_path) as conn:
            speaks = dict(conn.execute("SELECT knot, speaks FROM knot_cursors").fetchall())
        assert speaks == {legacy.hostname: "legacy", world.knot.hostname: "current"}
    finally:
        await legacy.stop()


async def test_the_minted_pipeline_record_is_served_on_events(world: World) -> None:
    """/events carries the sh.tangled.pipeline record tack minted (repo DID, record key, default branch) with created."""
    pushed = await world.knot.push(world.repo_did, WORKFLOWS)
    await until(lambda: len(world.pipelines()) == 1, "a pipeline")
    rkey = world.pipelines()[0][0]
    frames = await events_frames(world.stack.cp.http, until_nsid="sh.tangled.pipeline")
    [frame] = [f for f in frames if f["nsid"] == "sh.tangled.pipeline"]
    assert frame["rkey"] == rkey and isinstance(frame["created"], int)
    meta = frame["event"]["triggerMetadata"]
    assert meta["kind"] == "push" and meta["push"]["newSha"] == pushed.new_sha
    assert meta["repo"] == {
        "defaultBranch": "main",
        "did": OWNER,
        "knot": world.knot.hostname,
        "repo": "hello",
        "repoDid": world.repo_did,
    }
    assert [w["name"] for w in frame["event"]["workflows"]] == ["build.yml"]
    assert frame["event"]["workflows"][0]["clone"] == {
        "depth": 0,
        "skip": False,
        "submodules": True,
        "tags": True,
    }


async def events_frames(base: str, until_nsid: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Frames of /events from the start until one of ``until_nsid`` has come."""
    frames: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(base.replace("http", "ws") + "/events?cursor=1") as ws,
    ):
        async with asyncio.timeout(timeout):
            async for msg in ws:
                frames.append(json.loads(msg.data))
                if frames[-1]["nsid"] == until_nsid:
                    return frames
    return frames


async def test_unregistered_repositories_run_nothing_and_the_last_one_unfollows_the_knot(
    world: World,
) -> None:
    """Deleting a repo record stops its pushes from running; when the knot's last repository names another
    spindle, tack closes its stream to that knot."""
    second = await world.register_repo("second")
    record = {
        "name": "hello",
        "knot": world.knot.hostname,
        "repoDid": world.repo_did,
        "createdAt": CREATED_AT,
    }
    world.stack.jetstream.commit(OWNER, "sh.tangled.repo", "hello", "delete")

    def registered() -> set[str]:
        with world.db() as conn:
            return {r[0] for r in conn.execute("SELECT rkey FROM repos")}

    await until(lambda: registered() == {"second"}, "hello is unregistered")
    await world.knot.push(world.repo_did, WORKFLOWS)
    # The knot sends events in order: once the second repository's push has run, hello's was refused.
    await world.knot.push(second, WORKFLOWS)
    await until(lambda: len(world.pipelines()) == 1, "the second repository's pipeline")
    assert world.pipelines()[0][4] == second
    assert world.knot.connections == 1
    moved = {**record, "name": "second", "repoDid": second, "spindle": "elsewhere.example.com"}
    world.stack.jetstream.commit(OWNER, "sh.tangled.repo", "second", "update", moved)
    await until(lambda: world.knot.connections == 0, "tack stops following the knot")
    assert registered() == set()
    await asyncio.sleep(1.0)
    assert world.knot.connections == 0 and len(world.pipelines()) == 1
