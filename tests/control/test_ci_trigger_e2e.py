"""``sh.tangled.ci.triggerPipeline`` end to end: Retry, Run CI and manual runs, as the appview calls them.

Real processes (the control plane, the stub provider, the Buildkite provider against the fake Buildkite),
a fake PLC holding real keys, tokens signed in the test as a PDS signs them, a current knot serving real git
(and a fork on a knot of its own), and a provider served by the test that keeps every Spawn request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_control.engine.statuses import pipeline_uri
from tack_control.ingest.fingerprint import describe_definition_hash
from tests.fakes.ci_appview import CiAppview
from tests.fakes.provider import RawLogsProvider
from tests.support.atproto import Account, plc_did
from tests.support.current import World, make_world, until
from tests.support.stack import QUICK, stub_runs


pytestmark = pytest.mark.e2e

TRIGGER = "sh.tangled.ci.triggerPipeline"
MANUAL = "sh.tangled.ci.trigger#manual"
PULL = "sh.tangled.ci.trigger#pullRequest"
ON_MAIN = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'
ON_TAG = 'when:\n  - event: ["push"]\n    tag: ["v*"]\n'
ON_PULL = 'when:\n  - event: ["pull_request"]\n    branch: ["main"]\n'
ALLOW_UNTRUSTED = "acme/app-fail is not in TACK_BUILDKITE_UNTRUSTED_PIPELINES"


def stub(when: str) -> str:
    """A workflow file that runs a short script on the stub."""
    return f"{when}engine: tack\ntack:\n  stub: {json.dumps(QUICK)}\n"


def provider_file(when: str, provider: str, config: dict[str, Any] | None = None) -> str:
    """A workflow file routed to ``provider`` with ``config``."""
    return f"{when}engine: tack\ntack:\n  {provider}: {json.dumps(config or {})}\n"


FILES = {
    ".tangled/workflows/build.yml": stub(ON_MAIN),
    ".tangled/workflows/release.yml": stub(ON_TAG),
    ".tangled/workflows/review.yml": stub(ON_PULL),
}


def manual(sha: str, **more: Any) -> dict[str, Any]:
    """A ``#manual`` trigger (what Retry sends: the original pipeline's commit)."""
    return {"$type": MANUAL, "sha": sha, **more}


def rkey_of(answer: Any, world: World) -> str:
    """The pipeline id in a triggerPipeline answer, after checking the answer's form."""
    assert isinstance(answer, dict) and set(answer) == {"pipeline"}, answer
    rkey = str(answer["pipeline"]).rsplit("/", 1)[1]
    assert answer["pipeline"] == pipeline_uri(world.knot.hostname, rkey)
    return rkey


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A current knot with the owner's repository registered here; the stub runs its workflows."""
    w = await make_world(tmp_path)
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def spy() -> AsyncIterator[RawLogsProvider]:
    """A provider served by the test, keeping every SpawnRequest it gets."""
    fake = RawLogsProvider([])
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_retry_runs_a_finished_pipeline_again_as_a_new_pipeline(world: World) -> None:
    """Retry (manual at the original commit) makes a new pipeline running every workflow of the commit, whatever
    their ``when:``; naming workflows runs only those; an unknown name is 400 and runs nothing."""
    pushed = await world.knot.push(world.repo_did, FILES)
    await until(lambda: len(world.pipelines()) == 1, "the push's pipeline")
    first = world.pipelines()[0][0]
    await until(lambda: world.status(first, "build.yml") == "success", "the push's pipeline finishes")
    assert set(world.workflows(first)) == {"build.yml"}

    status, answer = await world.call(TRIGGER, {"repo": world.repo_did, "trigger": manual(pushed.new_sha)})
    assert status == 200, answer
    retry = rkey_of(answer, world)
    assert retry != first
    assert world.pipelines()[-1] == (retry, "manual", pushed.new_sha, "manual", world.repo_did)
    assert set(world.workflows(retry)) == {"build.yml", "release.yml", "review.yml"}
    await until(
        lambda: all(s == "success" for s, _ in world.workflows(retry).values()), "the retry runs to its end"
    )
    async with CiAppview(world.stack.cp.http) as ci:
        shown = await ci.get_pipeline(retry)
        assert shown["trigger"] == {"$type": MANUAL, "sha": pushed.new_sha}
        assert shown["commit"] == pushed.new_sha and shown["repo"] == world.repo_did
        assert [p["id"] for p in (await ci.query_pipelines(world.repo_did))["pipelines"]] == [retry, first]

    status, answer = await world.call(
        TRIGGER,
        {
            "repo": world.repo_did,
            "trigger": manual(pushed.new_sha, ref="refs/tags/v1"),
            "workflows": ["release.yml"],
        },
    )
    assert status == 200, answer
    assert set(world.workflows(rkey_of(answer, world))) == {"release.yml"}

    before = len(world.pipelines())
    status, answer = await world.call(
        TRIGGER,
        {"repo": world.repo_did, "trigger": manual(pushed.new_sha), "workflows": ["build.yml", "nope.yml"]},
    )
    assert (status, answer["error"]) == (400, "InvalidRequest")
    assert "no workflow named nope.yml" in answer["message"]
    assert len(world.pipelines()) == before


async def test_only_callers_with_push_rights_may_trigger(world: World) -> None:
    """A stranger is 403 AccessControl and nothing runs; collaborators by the owner's record and by the knot's
    collaboratorUpdate may trigger; once revoked they are refused again; an unregistered repo is RepoNotFound."""
    pushed = await world.knot.push(world.repo_did, FILES)
    await until(lambda: len(world.pipelines()) == 1, "the push's pipeline")
    await until(lambda: stub_runs(world.stack) == 1, "the push's run")
    body = {"repo": world.repo_did, "trigger": manual(pushed.new_sha)}

    stranger, by_record, by_knot = world.account(), world.account("p256"), world.account()
    status, answer = await world.call(TRIGGER, body, stranger)
    assert (status, answer["error"]) == (403, "AccessControl")
    assert stranger.did in answer["message"]

    world.add_collaborator(by_record.did, "3mcollab00001")
    world.knot_collaborator("add", by_knot.did)
    await until(lambda: world.collaborators() == {by_record.did, by_knot.did}, "both collaborators are known")
    for caller in (by_record, by_knot):
        status, answer = await world.call(TRIGGER, body, caller)
        assert status == 200, answer

    world.remove_collaborator("3mcollab00001")
    world.knot_collaborator("remove", by_knot.did)
    await until(lambda: world.collaborators() == set(), "both are revoked")
    for caller in (by_record, by_knot, stranger):
        status, answer = await world.call(TRIGGER, body, caller)
        assert (status, answer["error"]) == (403, "AccessControl")

    status, answer = await world.call(TRIGGER, {**body, "repo": plc_did()})
    assert (status, answer["error"]) == (400, "RepoNotFound")
    assert len(world.pipelines()) == 3
    await until(lambda: stub_runs(world.stack) == 1 + 2 * 3, "the two collaborators' runs")


async def test_a_trigger_that_runs_nothing_is_refused_with_the_reason(world: World) -> None:
    """No workflow matching a pull request, a commit without workflows, a commit the knot does not have and an
    unknown action are each 400 with the reason, and make no pipeline; a pull request that matches runs, as an
    opening by default, even without a source branch."""
    bare = await world.knot.push(world.repo_did, {"README.md": "hi\n"}, emit=False)
    pushed = await world.knot.push(world.repo_did, FILES, emit=False)

    async def trigger(trigger: dict[str, Any]) -> tuple[int, Any]:
        return await world.call(TRIGGER, {"repo": world.repo_did, "trigger": trigger})

    status, answer = await trigger({"$type": PULL, "targetBranch": "release", "sourceSha": pushed.new_sha})
    assert (status, answer["error"]) == (400, "InvalidRequest")
    assert answer["message"] == (
        f"no workflows to run: none of the 3 workflow files at {pushed.new_sha} matches this pull request trigger"
    )
    status, answer = await trigger(manual(bare.new_sha))
    assert (status, answer["error"]) == (400, "InvalidRequest")
    assert answer["message"].startswith(f"no workflows to run: no workflow files at {bare.new_sha}")
    status, answer = await trigger(manual("ab" * 20))
    assert (status, answer["error"]) == (400, "InvalidRequest")
    assert answer["message"].startswith(f"cannot load .tangled/workflows at {'ab' * 20}")
    status, answer = await trigger(
        {"$type": PULL, "targetBranch": "main", "sourceSha": pushed.new_sha, "action": "x"}
    )
    assert (status, answer["error"]) == (400, "InvalidRequest")
    assert world.pipelines() == []

    # sourceBranch is optional: such a pipeline is written, shown and run like any other.
    status, answer = await trigger({"$type": PULL, "targetBranch": "main", "sourceSha": pushed.new_sha})
    assert status == 200, answer
    rkey = rkey_of(answer, world)
    assert set(world.workflows(rkey)) == {"review.yml"}
    async with CiAppview(world.stack.cp.http) as ci:
        assert (await ci.get_pipeline(rkey))["trigger"] == {
            "$type": PULL,
            "targetBranch": "main",
            "sourceSha": pushed.new_sha,
            "sourceBranch": "",
            "action": "opened",
        }
    await until(lambda: world.status(rkey, "review.yml") == "success", "the pull request's workflow runs")


async def test_a_fork_pull_request_runs_untrusted_from_the_forks_own_knot(
    tmp_path: Path, spy: RawLogsProvider
) -> None:
    """Run CI on a fork's pull request loads the fork's workflows from the knot its repo DID names, and Spawns
    them untrusted, with the fork as the source; a fork DID whose knot does not host it is refused."""
    world = await make_world(tmp_path, providers={"spy": spy.address})
    try:
        fork_files = {".tangled/workflows/ci.yml": provider_file(ON_PULL, "spy"), "src/patch.c": "int p;\n"}
        fork_did, fork_sha = await world.fork(tmp_path, fork_files)
        async with CiAppview(world.stack.cp.http) as ci:
            # Before any run, the appview can compare the fork's definitions with the target's.
            status, described = await ci.describe(world.repo_did, fork_sha, source_repo=fork_did)
        assert status == 200, described
        assert described["workflows"] == ["ci.yml"]
        assert described["hash"] == describe_definition_hash(
            [("ci.yml", fork_files[".tangled/workflows/ci.yml"])]
        )
        pull = f"at://{world.account().did}/sh.tangled.repo.pull/3mpull0000001"
        trigger = {
            "$type": PULL,
            "targetBranch": "main",
            "sourceSha": fork_sha,
            "sourceBranch": "feature",
            "sourceRepo": fork_did,
            "pull": pull,
        }
        status, answer = await world.call(TRIGGER, {"repo": world.repo_did, "trigger": trigger})
        assert status == 200, answer
        rkey = rkey_of(answer, world)
        await until(lambda: len(spy.spawns) == 1, "the fork's workflow is spawned")
        [request] = spy.spawns
        assert request.untrusted
        assert request.pipeline_rkey == rkey and [w.name for w in request.workflows] == ["ci.yml"]
        assert request.trigger.kind == pb.TRIGGER_KIND_PULL_REQUEST
        assert request.trigger.source_repo_did == fork_did
        assert request.trigger.source_knot == world.extra_knots[0].hostname
        assert request.trigger.repo.repo_did == world.repo_did
        assert (request.trigger.pull_request.source_sha, request.trigger.pull_request.pull) == (
            fork_sha,
            pull,
        )
        with world.db() as conn:
            row = conn.execute(
                "SELECT untrusted, source_repo FROM pipelines WHERE rkey=?", (rkey,)
            ).fetchone()
        assert row == (1, fork_did)
        async with CiAppview(world.stack.cp.http) as ci:
            shown = await ci.get_pipeline(rkey)
        assert shown["sourceRepo"] == fork_did and shown["trigger"]["sourceRepo"] == fork_did

        impostor = plc_did()  # its document names the fork's knot, which does not host it
        world.plc.publish(Account(did=impostor, pds=f"http://{world.extra_knots[0].hostname}"))
        status, answer = await world.call(
            TRIGGER, {"repo": world.repo_did, "trigger": {**trigger, "sourceRepo": impostor}}
        )
        assert (status, answer["error"]) == (400, "InvalidRepo")
        assert "does not host it" in answer["message"]
        async with CiAppview(world.stack.cp.http) as ci:
            status, refused = await ci.describe(world.repo_did, fork_sha, source_repo=impostor)
        assert (status, refused["error"]) == (400, "RepoNotFound") and "does not host it" in refused[
            "message"
        ]
        assert len(world.pipelines()) == 1 and len(spy.spawns) == 1
    finally:
        await world.stop()


async def test_buildkite_refuses_untrusted_runs_unless_the_operator_lists_the_pipeline(
    tmp_path: Path,
) -> None:
    """A fork's pull request routed to Buildkite fails, creating no build, on a pipeline the operator did not list;
    on a listed pipeline it is built, marked TANGLED_UNTRUSTED, and succeeds. The fork cannot opt itself in."""
    world = await make_world(
        tmp_path, buildkite=True, buildkite_env={"TACK_BUILDKITE_UNTRUSTED_PIPELINES": "app-ci"}
    )
    try:
        fake = world.stack.fake_buildkite
        assert fake is not None
        fork_files = {
            ".tangled/workflows/ci.yml": provider_file(ON_PULL, "buildkite", {"pipeline": "app-fail"}),
            ".tangled/workflows/trusting.yml": provider_file(ON_PULL, "buildkite", {"pipeline": "app-ci"}),
        }
        fork_did, fork_sha = await world.fork(tmp_path, fork_files)
        trigger = {
            "$type": PULL,
            "targetBranch": "main",
            "sourceSha": fork_sha,
            "sourceBranch": "feature",
            "sourceRepo": fork_did,
        }
        status, answer = await world.call(TRIGGER, {"repo": world.repo_did, "trigger": trigger})
        assert status == 200, answer
        rkey = rkey_of(answer, world)
        await until(
            lambda: (
                world.status(rkey, "ci.yml") == "failed" and world.status(rkey, "trusting.yml") == "success"
            ),
            "one refused, one built",
            timeout=30,
        )
        async with CiAppview(world.stack.cp.http) as ci:
            shown = {w["name"]: w for w in (await ci.get_pipeline(rkey))["workflows"]}
        assert ALLOW_UNTRUSTED in shown["ci.yml"]["error"]
        [build] = fake.builds
        assert build.meta_data["tack:workflow"] == "trusting.yml"
        env = (build.request_body or {})["env"]
        assert (env["TANGLED_UNTRUSTED"], env["TANGLED_SOURCE_REPO_DID"]) == ("true", fork_did)
        assert (build.request_body or {})["commit"] == fork_sha
    finally:
        await world.stop()
