"""sourcehut end to end: a git push to a current knot → the control plane → the sourcehut provider → jobs on the
fake builds.sr.ht → statuses and per-task logs in the CI API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.ci_appview import CiAppview
from tests.fakes.sourcehut import FakeSourcehut
from tests.support.current import World, make_world, until
from tests.support.sourcehut_harness import SourcehutProcess, fake_sourcehut, manifest
from tests.support.stack import TERMINAL


pytestmark = pytest.mark.e2e

CANCEL = "sh.tangled.ci.cancelPipeline"

MAIN = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'


def sourcehut_file(manifest_text: str, **config: Any) -> str:
    """A workflow file routed to the sourcehut provider."""
    return f"{MAIN}engine: tack\ntack:\n  sourcehut: {json.dumps({'manifest': manifest_text, **config})}\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSourcehut]:
    srht = await fake_sourcehut()
    try:
        yield srht
    finally:
        await srht.stop()


@pytest.fixture
async def world(tmp_path: Path, fake: FakeSourcehut) -> AsyncIterator[World]:
    sourcehut = SourcehutProcess(tmp_path, fake)
    await sourcehut.start_serving()
    try:
        w = await make_world(tmp_path, providers={"sourcehut": sourcehut.address})
        try:
            yield w
        finally:
            await w.stop()
    finally:
        sourcehut.kill9()


async def test_a_push_becomes_jobs_whose_statuses_and_task_logs_reach_the_ci_api(
    world: World, fake: FakeSourcehut
) -> None:
    """One job per workflow with the pushed commit and tack's environment; success, a failed task, a timeout
    and a bad manifest map to Tangled's statuses; each task is a log step, in manifest order."""
    files = {
        ".tangled/workflows/build.yml": sourcehut_file(manifest("build", "test"), tags=["ci"]),
        ".tangled/workflows/lint.yml": sourcehut_file(manifest("lint", "fail")),
        ".tangled/workflows/slow.yml": sourcehut_file(manifest("slow")),
        ".tangled/workflows/broken.yml": sourcehut_file("image: alpine/edge\n"),
    }
    pushed = await world.knot.push(world.repo_did, files)
    async with CiAppview(world.stack.cp.http) as appview:

        async def workflows() -> dict[str, dict[str, Any]]:
            page = await appview.query_pipelines(world.repo_did)
            if not page["pipelines"]:
                return {}
            return {w["name"]: w for w in page["pipelines"][0]["workflows"]}

        deadline = time.monotonic() + 60
        while True:
            seen = await workflows()
            if len(seen) == 4 and all(w["status"] in TERMINAL for w in seen.values()):
                break
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.2)
        assert {n: w["status"] for n, w in seen.items()} == {
            "build.yml": "success",
            "lint.yml": "failed",
            "slow.yml": "timeout",
            "broken.yml": "failed",
        }
        assert seen["lint.yml"]["error"] == "task 'fail' failed"
        assert "tack.sourcehut.manifest.tasks: required" in seen["broken.yml"]["error"]

        assert len(fake.jobs) == 3
        build = next(s for s in fake.submissions if "build.yml" in (s.tags or []))
        env = yaml.safe_load(build.manifest)["environment"]
        assert env["TANGLED_COMMIT"] == pushed.new_sha
        assert env["TANGLED_REPO_REPO_DID"] == world.repo_did
        assert yaml.safe_load(build.manifest)["sources"] == [
            f"https://{world.knot.hostname}/{world.repo_did}#{pushed.new_sha}"
        ]
        assert (build.tags or [])[-1] == "ci"

        pipeline_id = (await appview.query_pipelines(world.repo_did))["pipelines"][0]["id"]
        log = await appview.read_logs(pipeline_id, ("build.yml", "lint.yml"), timeout=30)
        assert log.problems == [] and log.errors == []
        assert [s.name for s in log.steps["build.yml"].values()] == ["setup", "build", "test"]
        assert "build: ok" in log.lines("build.yml")
        assert log.lines("lint.yml")[-1] == "task failed"


async def test_a_cancel_from_tangled_cancels_the_running_job(world: World, fake: FakeSourcehut) -> None:
    """cancelPipeline through the CI API cancels the builds.sr.ht job once it runs; the workflow ends
    cancelled with the stock error and the other workflow of the pipeline is left to finish."""
    files = {
        ".tangled/workflows/serve.yml": sourcehut_file(manifest("prepare", "hang")),
        ".tangled/workflows/build.yml": sourcehut_file(manifest("build")),
    }
    await world.knot.push(world.repo_did, files)
    await until(lambda: len(world.pipelines()) == 1, "the push's pipeline")
    rkey = world.pipelines()[0][0]

    def hanging() -> bool:
        return any(getattr(j.running_task(), "name", "") == "hang" for j in fake.jobs)

    await until(hanging, "the serve job runs its hang task", timeout=30)
    status, answer = await world.call(
        CANCEL, {"repo": world.repo_did, "pipeline": rkey, "workflows": ["serve.yml"]}
    )
    assert (status, answer) == (200, None)
    await until(lambda: world.status(rkey, "serve.yml") == "cancelled", "serve cancelled", timeout=30)
    serve = next(j for j in fake.jobs if any(t.name == "hang" for t in j.tasks))
    await until(lambda: serve.status == "CANCELLED", "the job cancelled on builds.sr.ht", timeout=30)
    await until(lambda: world.status(rkey, "build.yml") == "success", "build finishes", timeout=30)
    assert len(fake.ops("cancel")) >= 1
    assert len(fake.jobs) == 2
    async with CiAppview(world.stack.cp.http) as appview:
        shown = {w["name"]: w for w in (await appview.get_pipeline(rkey))["workflows"]}
    assert (shown["serve.yml"]["status"], shown["serve.yml"]["error"]) == (
        "cancelled",
        "User canceled the workflow",
    )
