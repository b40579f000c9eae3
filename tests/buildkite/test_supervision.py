"""The Buildkite provider's supervised tasks (access check, poller, build creation, build feeds, log tails)
failed on purpose (TACK_FAULT_INJECTION): each failure is logged and counted, gRPC health says NOT_SERVING
while the task is down, and the task's work gets done after its restart. The provider is a real process
against the fake Buildkite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_common import status as st
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import collect, key, spawn_request
from tests.fakes.buildkite import FakeBuildkite
from tests.support.buildkite_harness import BuildkiteProcess, buildkite_workflow, fake_buildkite
from tests.support.faults import crash, eventually, metric
from tests.support.procs import free_port, wait_serving
from tests.support.provider_rig import ProviderRig, serving


pytestmark = pytest.mark.e2e

ENV = {"TACK_FAULT_INJECTION": "1", "TACK_BUILDKITE_POLL_INTERVAL": "0.5"}
STEPS = [{"name": "unit", "step_key": "unit", "command": "pytest -q"}]


class Rig(ProviderRig[FakeBuildkite, BuildkiteProcess]):
    async def statuses(self, k: pb.WorkflowKey) -> list[int]:
        """The statuses published for ``k`` so far."""
        updates = await collect(self.stub, 0, lambda got: True, 5)
        return [u.status for u in updates if u.key == k]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = await fake_buildkite({"ci": STEPS}, auto_tick_s=0.02)
    async with serving(Rig, fake, BuildkiteProcess(tmp_path, fake.url, ENV)) as made:
        yield made


async def test_the_poller_recovers_and_still_ends_the_workflow(rig: Rig) -> None:
    """The poller fails while a build finishes unheard (no webhooks): NOT_SERVING meanwhile; after the
    restart its poll publishes running and success."""
    request = spawn_request([buildkite_workflow("a.yml", "ci")])
    await rig.stub.Spawn(request, timeout=5)
    k = key(request, "a.yml")
    await rig.fake.wait_until(lambda: len(rig.fake.builds) == 1)
    before = await metric(rig.base, "tack_task_restarts_total", {"task": "buildkite_poller"})
    assert await crash(rig.base, "buildkite_poller", hold=3.0) == ["buildkite_poller"]
    assert not await rig.serving()
    build = rig.fake.builds[0]
    rig.fake.advance(build, "unit", "passed", log_append="ok\n")

    async def ended() -> bool:
        return (await rig.statuses(k))[-1:] == [st.SUCCESS]

    await eventually(ended, 20, "the poll ends the workflow")
    assert await rig.statuses(k) == [st.PENDING, st.RUNNING, st.SUCCESS]
    await eventually(rig.serving, 10, "SERVING again")
    assert await metric(rig.base, "tack_task_restarts_total", {"task": "buildkite_poller"}) >= before + 2
    assert rig.logged("buildkite_poller")


async def test_a_build_creation_that_fails_is_restarted_and_creates_exactly_one_build(rig: Rig) -> None:
    """The create task fails while the outcome of its create is unknown: after the restart it looks
    for the build first, then creates it: exactly one build."""
    rig.fake.fail_next(1, status=502)
    request = spawn_request([buildkite_workflow("c.yml", "ci")])
    await rig.stub.Spawn(request, timeout=5)
    k = key(request, "c.yml")
    await rig.fake.wait_until(lambda: any(r.method == "POST" for r in rig.fake.requests), timeout=10)
    hit = await crash(rig.base, "buildkite_create", hold=3.0)
    assert len(hit) == 1 and hit[0].startswith("buildkite_create:")
    assert not await rig.serving()

    await rig.fake.wait_until(lambda: len(rig.fake.builds) == 1, timeout=30)
    rig.fake.advance(rig.fake.builds[0], "unit", "passed", log_append="ok\n")

    async def ended() -> bool:
        return (await rig.statuses(k))[-1:] == [st.SUCCESS]

    await eventually(ended, 20, "the created build ends the workflow")
    await asyncio.sleep(1.0)
    assert len(rig.fake.builds) == 1
    assert rig.logged("buildkite_create")
    await eventually(rig.serving, 10, "SERVING again")


@pytest.mark.parametrize("kind", ["buildkite_feed", "buildkite_log_tail"])
async def test_a_log_viewer_gets_the_whole_log_when_a_feed_or_tail_fails(rig: Rig, kind: str) -> None:
    """While a viewer follows a running job, the shared build feed (or the job's log tail) fails: it is
    restarted and the viewer still gets every line, then the end of the step."""
    request = spawn_request([buildkite_workflow("l.yml", "ci")])
    await rig.stub.Spawn(request, timeout=5)
    k = key(request, "l.yml")
    await rig.fake.wait_until(lambda: len(rig.fake.builds) == 1)
    build = rig.fake.builds[0]
    rig.fake.advance(build, "unit", "running", log_append="before the failure\n")
    lines: list[pb.LogLine] = []

    async def read() -> None:
        async for message in rig.stub.Logs(pb.LogsRequest(key=k)):
            lines.extend(message.lines)

    reader = asyncio.create_task(read())

    async def shown(text: str) -> bool:
        return any(line.content == text for line in lines)

    await eventually(lambda: shown("before the failure"), 10, "the first line")
    hit = await crash(rig.base, kind, hold=3.0)
    assert len(hit) == 1
    assert not await rig.serving()
    rig.fake.advance(build, "unit", None, log_append="after the failure\n")
    rig.fake.advance(build, "unit", "passed", log_append="done\n")
    await asyncio.wait_for(reader, 30)
    wanted = ["before the failure", "after the failure", "done"]
    texts = [line.content for line in lines if line.kind == pb.LOG_KIND_DATA]
    assert [t for t in texts if t in wanted] == wanted
    assert lines[-1].step_status == pb.STEP_STATUS_END
    assert rig.logged(kind)
    await eventually(rig.serving, 10, "SERVING again")


async def test_the_access_check_recovers_and_the_provider_then_serves(tmp_path: Path) -> None:
    """The start-up check fails while Buildkite is unreachable: restarted, and once Buildkite answers
    the provider serves."""
    port = free_port()
    proc = BuildkiteProcess(tmp_path, f"http://127.0.0.1:{port}", ENV)
    proc.start()
    fake = FakeBuildkite(pipelines={"ci": STEPS}, port=port)
    base = f"http://127.0.0.1:{proc.metrics_port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                hit = await crash(base, "buildkite_check", hold=1.0)
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert hit == ["buildkite_check"]
        await fake.start()
        await wait_serving(proc.address, proc, timeout=20)
        assert await metric(base, "tack_task_restarts_total", {"task": "buildkite_check"}) >= 1
        assert '"kind": "buildkite_check"' in proc.output()
    finally:
        proc.kill9()
        await fake.stop()
