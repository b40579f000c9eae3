"""Tekton end to end: a git push to a current knot → the control plane → the Tekton provider → PipelineRuns on the
fake cluster → statuses and step logs in the CI API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.ci_appview import CiAppview
from tests.fakes.kubernetes import FakeKubernetes
from tests.support.current import World, make_world, until
from tests.support.stack import TERMINAL
from tests.support.tekton_harness import TektonProcess, fake_kubernetes


pytestmark = pytest.mark.e2e

MAIN = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'


def tekton_file(pipeline: str, **config: Any) -> str:
    """A workflow file routed to Tekton's ``pipeline``."""
    return f"{MAIN}engine: tack\ntack:\n  tekton: {json.dumps({'pipeline': pipeline, **config})}\n"


@pytest.fixture
async def cluster() -> AsyncIterator[FakeKubernetes]:
    fake = await fake_kubernetes(bookmark_interval=1.0)
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def world(tmp_path: Path, cluster: FakeKubernetes) -> AsyncIterator[World]:
    tekton = TektonProcess(tmp_path, cluster)
    await tekton.start_serving()
    try:
        w = await make_world(tmp_path, providers={"tekton": tekton.address})
        try:
            yield w
        finally:
            await w.stop()
    finally:
        tekton.kill9()


def run_of(cluster: FakeKubernetes, workflow: str) -> list[dict[str, Any]]:
    """The PipelineRuns made for one workflow file."""
    return [
        pr
        for pr in cluster.pipeline_runs()
        if pr["metadata"]["annotations"].get("tack.tangled.org/workflow") == workflow
    ]


async def test_a_push_becomes_pipelineruns_whose_statuses_and_logs_reach_the_ci_api(
    world: World, cluster: FakeKubernetes
) -> None:
    """One PipelineRun per workflow with tack's params under the user's; success, failure, both timeouts and a
    cancel in the cluster map to Tangled's statuses; step logs are one step per container, in pipeline order."""
    files = {
        ".tangled/workflows/build.yml": tekton_file(
            "build", params={"image": "alpine", "tangled-branch": "override"}, serviceAccountName="builder"
        ),
        ".tangled/workflows/lint.yml": tekton_file("lint"),
        ".tangled/workflows/deploy.yml": tekton_file("too-long"),
        ".tangled/workflows/overdue.yml": tekton_file("overdue", timeouts={"pipeline": "1h"}),
        ".tangled/workflows/serve.yml": tekton_file("forever"),
    }
    pushed = await world.knot.push(world.repo_did, files)
    async with CiAppview(world.stack.cp.http) as appview:

        async def workflows() -> dict[str, dict[str, Any]]:
            page = await appview.query_pipelines(world.repo_did)
            if not page["pipelines"]:
                return {}
            return {w["name"]: w for w in page["pipelines"][0]["workflows"]}

        await until(lambda: len(run_of(cluster, "serve.yml")) == 1, "the serve PipelineRun exists")
        [serve] = run_of(cluster, "serve.yml")
        await until(
            lambda: (
                (cluster.pipeline_run(serve["metadata"]["name"]) or {}).get("status", {}).get("startTime")
            ),
            "serve runs",
        )
        cluster.set_spec_status(serve["metadata"]["name"], "CancelledRunFinally")
        deadline = time.monotonic() + 60
        while True:
            seen = await workflows()
            if len(seen) == 5 and all(w["status"] in TERMINAL for w in seen.values()):
                break
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.2)
        assert {n: w["status"] for n, w in seen.items()} == {
            "build.yml": "success",
            "lint.yml": "failed",
            "deploy.yml": "timeout",
            "overdue.yml": "timeout",
            "serve.yml": "cancelled",
        }
        assert "step 'ruff' exited with status 2" in seen["lint.yml"]["error"]
        assert "task 'deploy' timed out" in seen["deploy.yml"]["error"]
        assert seen["overdue.yml"]["error"].startswith("PipelineRunTimeout")

        assert len(cluster.pipeline_runs()) == 5
        [build] = run_of(cluster, "build.yml")
        params = {p["name"]: p["value"] for p in build["spec"]["params"]}
        pipeline_id = (await appview.query_pipelines(world.repo_did))["pipelines"][0]["id"]
        assert params["tangled-commit"] == pushed.new_sha
        assert params["tangled-ref"] == "refs/heads/main"
        assert params["tangled-repo-repo-did"] == world.repo_did
        assert params["tangled-repo-url"] == f"https://{world.knot.hostname}/{world.repo_did}"
        assert params["tangled-pipeline-id"].endswith(f"/sh.tangled.pipeline/{pipeline_id}")
        assert params["image"] == "alpine"
        assert params["tangled-branch"] == "override"
        assert build["spec"]["pipelineRef"] == {"name": "build"}
        assert build["spec"]["taskRunTemplate"] == {"serviceAccountName": "builder"}
        assert build["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tack"
        assert build["metadata"]["annotations"]["tack.tangled.org/commit"] == pushed.new_sha

        log = await appview.read_logs(pipeline_id, ("build.yml", "lint.yml", "serve.yml"), timeout=30)
        assert log.problems == [] and log.errors == []
        build_steps = list(log.steps["build.yml"].values())
        assert [s.name for s in build_steps] == ["compile/fetch", "compile/make", "test/unit"]
        assert all(s.ended for s in build_steps)
        assert log.lines("build.yml") == ["cloning", "done", "cc main.c", "ok", "4 passed"]
        assert log.lines("lint.yml") == ["E501 line too long", "exit status 2"]
        serve_lines = log.lines("serve.yml")
        assert serve_lines and "is gone" in serve_lines[-2]


async def test_a_cancel_from_tangled_sets_the_pipelineruns_spec_status(
    world: World, cluster: FakeKubernetes
) -> None:
    """cancelPipeline through the control plane: each running PipelineRun gets the ``spec.status`` its workflow's
    ``cancel`` asks for (Cancelled by default), Tekton stops it, and the CI API shows both cancelled with the
    stock error."""
    files = {
        ".tangled/workflows/serve.yml": tekton_file("forever"),
        ".tangled/workflows/tidy.yml": tekton_file("forever", cancel="CancelledRunFinally"),
    }
    await world.knot.push(world.repo_did, files)
    await until(lambda: len(cluster.pipeline_runs()) == 2, "both PipelineRuns exist")
    names = {w: run_of(cluster, w)[0]["metadata"]["name"] for w in files_named(files)}
    await until(
        lambda: all(
            (cluster.pipeline_run(n) or {}).get("status", {}).get("startTime") for n in names.values()
        ),
        "both run",
    )
    async with CiAppview(world.stack.cp.http) as appview:
        pipeline_id = (await appview.query_pipelines(world.repo_did))["pipelines"][0]["id"]
        status, answer = await world.call(
            "sh.tangled.ci.cancelPipeline", {"repo": world.repo_did, "pipeline": pipeline_id}
        )
        assert (status, answer) == (200, None)
        await until(
            lambda: (
                {w: (cluster.pipeline_run(n) or {})["spec"].get("status") for w, n in names.items()}
                == {"serve.yml": "Cancelled", "tidy.yml": "CancelledRunFinally"}
            ),
            "the provider sets spec.status",
        )

        def succeeded(name: str) -> dict[str, Any]:
            conditions = (cluster.pipeline_run(name) or {}).get("status", {}).get("conditions", [])
            return next((c for c in conditions if c["type"] == "Succeeded"), {})

        await until(
            lambda: all(succeeded(n).get("reason") == "Cancelled" for n in names.values()),
            "Tekton ends both cancelled",
            timeout=30,
        )
        page = await appview.query_pipelines(world.repo_did)
        shown = {w["name"]: (w["status"], w.get("error")) for w in page["pipelines"][0]["workflows"]}
        assert shown == {
            "serve.yml": ("cancelled", "User canceled the workflow"),
            "tidy.yml": ("cancelled", "User canceled the workflow"),
        }
    assert len(cluster.pipeline_runs()) == 2


def files_named(files: dict[str, str]) -> list[str]:
    """The workflow names of ``.tangled/workflows`` paths."""
    return [path.rsplit("/", 1)[1] for path in files]
