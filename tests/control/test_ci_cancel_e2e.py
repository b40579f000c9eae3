"""``sh.tangled.ci.cancelPipeline`` end to end, the transitional method names, and refused tokens.

Real processes (the control plane, the stub provider, the Buildkite provider against the fake Buildkite), a
provider served by the test (to hold a Spawn in flight, or fail a Cancel), statuses read from ``/events`` as the
appview reads them and pipelines from the CI API, tokens signed in the test and resolved through a fake PLC.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_control.engine.statuses import pipeline_uri
from tests.fakes.appview import AppviewClient
from tests.fakes.ci_appview import CiAppview
from tests.fakes.provider import RawLogsProvider
from tests.support.buildkite_harness import drive_long_builds
from tests.support.current import World, make_world, until
from tests.support.stack import QUICK, metric


pytestmark = pytest.mark.e2e

CANCEL = "sh.tangled.ci.cancelPipeline"
TRIGGER = "sh.tangled.ci.triggerPipeline"
OLD_CI_CANCEL = "sh.tangled.ci.pipeline.cancelPipeline"
OLD_CANCEL = "sh.tangled.pipeline.cancelPipeline"
OLD_TRIGGER = "sh.tangled.ci.pipeline.triggerPipeline"
STOCK_ERROR = "User canceled the workflow"
ON_MAIN = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'
LONG = {
    "queue_seconds": 0,
    "steps": [{"name": "work", "command": "sleep", "output": ["working"], "duration": 120}],
}


def workflow(provider: str, config: dict[str, Any]) -> str:
    """A workflow file run on every push to main by ``provider`` with ``config``."""
    return f"{ON_MAIN}engine: tack\ntack:\n  {provider}: {json.dumps(config)}\n"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A current knot with the owner's repository registered here; the stub runs its workflows."""
    w = await make_world(tmp_path)
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def appview(world: World) -> AsyncIterator[AppviewClient]:
    """An appview following the world's /events."""
    client = AppviewClient(world.stack.cp.http)
    await client.connect_events()
    try:
        yield client
    finally:
        await client.close()


def shown(appview: AppviewClient, world: World, rkey: str, name: str) -> str:
    """The status the appview shows for a workflow ("" before any)."""
    return str((appview.latest(world.knot.hostname, rkey, name) or {}).get("status", ""))


def published(appview: AppviewClient, world: World, rkey: str, name: str) -> list[str]:
    """Every status of a workflow the appview received, in order."""
    return [str(r["status"]) for r in appview.statuses(world.knot.hostname, rkey, name)]


async def pushed_pipeline(world: World, files: Mapping[str, str | None]) -> str:
    """Push ``files`` to main; the pipeline the push made."""
    before = len(world.pipelines())
    await world.knot.push(world.repo_did, files)
    await until(lambda: len(world.pipelines()) == before + 1, "the push's pipeline")
    return world.pipelines()[-1][0]


async def cancel_and_time(world: World, appview: AppviewClient, rkey: str, name: str, **body: Any) -> float:
    """Cancel the pipeline (200, empty body); seconds until the appview shows ``name`` cancelled."""
    start = time.monotonic()
    status, answer = await world.call(CANCEL, {"repo": world.repo_did, "pipeline": rkey, **body})
    assert (status, answer) == (200, None)
    await appview.wait_for(lambda: shown(appview, world, rkey, name) == "cancelled", timeout=5)
    return time.monotonic() - start


def stub_status(world: World, rkey: str, name: str) -> int | None:
    """The status the stub provider holds for a run."""
    with sqlite3.connect(world.stack.stub.db_path) as conn:
        row = conn.execute(
            "SELECT status FROM runs WHERE pipeline_rkey=? AND workflow=?", (rkey, name)
        ).fetchone()
    return None if row is None else int(row[0])


async def test_a_running_stub_workflow_is_cancelled_within_a_second_and_once(
    world: World, appview: AppviewClient
) -> None:
    """Cancel: the running workflow is cancelled on /events within a second, with the stock error in the CI API,
    and stopped at the stub; a finished one is left alone; a second cancel is a no-op; another repository's
    pipeline, an unknown pipeline or workflow are refused and change nothing."""
    rkey = await pushed_pipeline(
        world,
        {
            ".tangled/workflows/long.yml": workflow("stub", LONG),
            ".tangled/workflows/quick.yml": workflow("stub", QUICK),
        },
    )
    await appview.wait_for(
        lambda: (
            shown(appview, world, rkey, "long.yml") == "running"
            and shown(appview, world, rkey, "quick.yml") == "success"
        ),
        timeout=20,
    )
    other = await world.register_repo("other")
    refusals = [
        ({"repo": other, "pipeline": rkey}, 403, "AccessControl"),
        ({"repo": world.repo_did, "pipeline": "3mzzzzzzzzzz2"}, 400, "PipelineNotFound"),
        ({"repo": world.repo_did, "pipeline": rkey, "workflows": ["nope.yml"]}, 400, "WorkflowNotFound"),
        ({"repo": world.repo_did, "pipeline": "not-a-tid"}, 400, "InvalidRequest"),
    ]
    for body, code, error in refusals:
        status, answer = await world.call(CANCEL, body)
        assert (status, answer["error"]) == (code, error), (body, answer)
    status, answer = await world.call(CANCEL, {"repo": world.repo_did, "pipeline": rkey}, world.account())
    assert (status, answer["error"]) == (403, "AccessControl")
    assert shown(appview, world, rkey, "long.yml") == "running"

    await asyncio.sleep(
        1.1
    )  # the running status is a second old: the cancelled one need not wait for its second
    assert await cancel_and_time(world, appview, rkey, "long.yml") < 1.0
    assert published(appview, world, rkey, "long.yml") == ["pending", "running", "cancelled"]
    assert published(appview, world, rkey, "quick.yml") == ["pending", "running", "success"]
    async with CiAppview(world.stack.cp.http) as ci:
        workflows = {w["name"]: w for w in (await ci.get_pipeline(rkey))["workflows"]}
    assert (workflows["long.yml"]["status"], workflows["long.yml"]["error"]) == ("cancelled", STOCK_ERROR)
    assert workflows["quick.yml"]["status"] == "success" and "error" not in workflows["quick.yml"]
    await until(lambda: stub_status(world, rkey, "long.yml") == pb.STATUS_CANCELLED, "the stub stops the run")
    await until(lambda: world.status(rkey, "long.yml") == "cancelled", "tack's row is cancelled")

    events = len(appview.rows)
    status, answer = await world.call(CANCEL, {"repo": world.repo_did, "pipeline": rkey})
    assert (status, answer) == (200, None)
    await asyncio.sleep(1.0)
    assert len(appview.rows) == events
    assert await metric(world.stack, 'tack_cancels_total{outcome="done"}') == 1
    assert await metric(world.stack, f'tack_ci_requests_total{{code="200",method="{CANCEL}"}}') == 2


async def test_a_running_buildkite_build_is_cancelled_through_its_api(tmp_path: Path) -> None:
    """A running Buildkite build: the workflow is cancelled on /events within a second, and the build is cancelled
    with Buildkite's cancel call."""
    world = await make_world(tmp_path, buildkite=True)
    fake = world.stack.fake_buildkite
    assert fake is not None
    driver = asyncio.create_task(drive_long_builds(fake, "app-manual"))
    appview = AppviewClient(world.stack.cp.http)
    await appview.connect_events()
    try:
        rkey = await pushed_pipeline(
            world, {".tangled/workflows/ci.yml": workflow("buildkite", {"pipeline": "app-manual"})}
        )
        await appview.wait_for(lambda: shown(appview, world, rkey, "ci.yml") == "running", timeout=20)
        [build] = fake.builds
        await asyncio.sleep(1.1)
        assert await cancel_and_time(world, appview, rkey, "ci.yml") < 1.0
        await fake.wait_until(lambda: fake.build(build.id).state == "canceled", timeout=10)
        cancels = [r for r in fake.requests if r.method == "PUT" and r.path.endswith("/cancel")]
        assert [r.path.rsplit("/", 2)[1] for r in cancels] == [str(build.number)]
        assert published(appview, world, rkey, "ci.yml") == ["pending", "running", "cancelled"]
        async with CiAppview(world.stack.cp.http) as ci:
            [shown_wf] = (await ci.get_pipeline(rkey))["workflows"]
        assert (shown_wf["status"], shown_wf["error"]) == ("cancelled", STOCK_ERROR)
    finally:
        driver.cancel()
        await appview.close()
        await world.stop()


async def test_cancel_reaches_providers_that_are_busy_or_failing(tmp_path: Path) -> None:
    """A workflow cancelled while its Spawn is in flight is cancelled at the provider once the Spawn lands; a
    provider whose Cancel fails (UNAVAILABLE) is asked again later, while Tangled already shows cancelled."""
    spy = RawLogsProvider([])
    spy.strict_cancel = True
    await spy.start()
    world = await make_world(tmp_path, providers={"spy": spy.address})
    appview = AppviewClient(world.stack.cp.http)
    await appview.connect_events()
    try:
        spy.spawn_gate = asyncio.Event()
        held = await pushed_pipeline(world, {".tangled/workflows/held.yml": workflow("spy", {})})
        await until(lambda: len(spy.spawns) == 1, "the Spawn reaches the provider")
        await cancel_and_time(world, appview, held, "held.yml")
        spy.spawn_gate.set()
        await until(lambda: (world.knot.hostname, held, "held.yml") in spy.spawned, "the Spawn lands")
        await until(
            lambda: _column(world, "cancel", held, "held.yml") == "done",
            "the run the Spawn made is cancelled",
        )

        spy.cancel_failures = 1
        stuck = await pushed_pipeline(
            world, {".tangled/workflows/held.yml": None, ".tangled/workflows/stuck.yml": workflow("spy", {})}
        )
        await until(lambda: (world.knot.hostname, stuck, "stuck.yml") in spy.spawned, "the second Spawn")
        await until(
            lambda: _column(world, "dispatch", stuck, "stuck.yml") == "accepted", "tack knows it was accepted"
        )
        await cancel_and_time(world, appview, stuck, "stuck.yml")
        assert published(appview, world, stuck, "stuck.yml") == ["pending", "cancelled"]
        await until(
            lambda: _column(world, "cancel", stuck, "stuck.yml") == "done",
            "the provider is told again",
            timeout=10,
        )
        assert [k.pipeline_rkey for k in spy.cancels].count(stuck) == 2
        assert await metric(world.stack, 'tack_cancels_total{outcome="retry"}') == 1
    finally:
        await appview.close()
        await world.stop()
        await spy.stop()


def _column(world: World, column: str, rkey: str, name: str) -> str:
    """A column of a workflow's row in tack's database (``cancel``: whether its provider was told)."""
    with world.db() as conn:
        row = conn.execute(f"SELECT {column} FROM workflows WHERE rkey=? AND name=?", (rkey, name)).fetchone()
    return "" if row is None else str(row[0])


async def test_transitional_methods_answer_as_documented(world: World, appview: AppviewClient) -> None:
    """Older appviews' names: cancels with AT-URIs (and one ``workflow``) or DID and TID, the old trigger form on
    both trigger names, and the old log subscription name."""
    files = {f".tangled/workflows/{n}.yml": workflow("stub", LONG) for n in ("a", "b", "c")}
    rkey = await pushed_pipeline(world, files)
    head = world.pipelines()[-1][2]
    uri = pipeline_uri(world.knot.hostname, rkey)
    await appview.wait_for(
        lambda: all(shown(appview, world, rkey, f"{n}.yml") == "running" for n in "abc"), timeout=20
    )

    cancelled: set[str] = set()

    def cancelled_now() -> set[str]:
        return {f"{n}.yml" for n in "abc" if shown(appview, world, rkey, f"{n}.yml") == "cancelled"}

    for nsid, body, name in (
        (OLD_CI_CANCEL, {"repo": world.repo_uri, "pipeline": uri, "workflows": ["a.yml"]}, "a.yml"),
        (OLD_CANCEL, {"repo": world.repo_uri, "pipeline": uri, "workflow": "b.yml"}, "b.yml"),
        (OLD_CI_CANCEL, {"repo": world.repo_did, "pipeline": rkey}, "c.yml"),
    ):
        status, answer = await world.call(nsid, body)
        assert (status, answer) == (200, None), nsid
        cancelled.add(name)
        await appview.wait_for(lambda: cancelled_now() == cancelled, timeout=5)

    for nsid, body, names in (
        (TRIGGER, {"repo": world.repo_uri, "sha": head, "workflows": ["a.yml"]}, {"a.yml"}),
        (OLD_TRIGGER, {"repo": world.repo_uri, "sha": head}, {"a.yml", "b.yml", "c.yml"}),
    ):
        status, answer = await world.call(nsid, body)
        assert status == 200, answer
        new = answer["pipeline"].rsplit("/", 1)[1]
        assert world.pipelines()[-1][:3] == (new, "manual", head)
        assert set(world.workflows(new)) == names
    async with CiAppview(world.stack.cp.http) as ci:
        for nsid in ("sh.tangled.ci.subscribePipelineLogs", "sh.tangled.ci.pipeline.subscribeLogs"):
            status, answer = await ci.call(nsid, [("pipeline", "3mzzzzzzzzzz2")])
            assert (status, answer["error"]) == (400, "PipelineNotFound")


async def test_every_method_refuses_a_bad_token_with_401_and_an_xrpc_error(world: World) -> None:
    """Each trigger and cancel name answers 401 with an XRPC error, and acts on nothing, for a missing token, a
    token for another method and an expired one."""
    body = {"repo": world.repo_did, "pipeline": "3mzzzzzzzzzz2", "trigger": {"$type": "x"}, "sha": "a" * 40}
    for nsid in (TRIGGER, CANCEL, OLD_TRIGGER, OLD_CI_CANCEL, OLD_CANCEL):
        cases = [
            ({}, "AuthRequired", "missing:"),
            (
                {"Authorization": f"Bearer {world.token(world.owner, 'sh.tangled.repo.listSecrets')}"},
                "InvalidToken",
                "bad_lxm:",
            ),
            (
                {"Authorization": f"Bearer {world.token(world.owner, nsid, iat_offset=-120, lifetime=60)}"},
                "ExpiredToken",
                "expired:",
            ),
        ]
        for headers, error, reason in cases:
            status, answer = await world.call(nsid, body, headers=headers)
            assert (status, answer["error"]) == (401, error), (nsid, answer)
            assert answer["message"].startswith(reason), (nsid, answer)
        assert await metric(world.stack, f'tack_ci_requests_total{{code="401",method="{nsid}"}}') == 3
    assert world.pipelines() == []
