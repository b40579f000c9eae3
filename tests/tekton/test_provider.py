"""The Tekton provider process against the fake cluster: watch interruptions, 410 Gone, kill -9, stalled creates,
live and pruned logs. Every workflow ends with each of its statuses once, and no workflow gets two PipelineRuns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from tack_common import status as st
from tack_common.client import provider_stub
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import collect, key, spawn_request, terminal_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.support.provider_rig import histories
from tests.support.tekton_harness import TektonProcess, fake_kubernetes, tekton_workflow


pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def provider(tmp_path: Path, **knobs: object) -> AsyncIterator[tuple[FakeKubernetes, TektonProcess]]:
    fake = await fake_kubernetes(**knobs)
    proc = TektonProcess(tmp_path, fake)
    await proc.start_serving()
    try:
        yield fake, proc
    finally:
        proc.kill9()
        await fake.stop()


async def metric(proc: TektonProcess, sample: str) -> float:
    """The provider's metric sample (0 when absent)."""
    url = f"http://127.0.0.1:{proc.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample))


def runs_per_workflow(fake: FakeKubernetes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pr in fake.pipeline_runs():
        name = pr["metadata"]["annotations"]["tack.tangled.org/workflow"]
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_dropped_watches_miss_no_status(tmp_path: Path) -> None:
    """Watch connections cut every 300 ms while runs progress: every workflow still reports pending, running and
    success once each, and has exactly one PipelineRun."""
    async with provider(tmp_path, bookmark_interval=0.2) as (fake, proc):
        request = spawn_request(
            [tekton_workflow(f"s{i}.yml", "slow") for i in range(2)] + [tekton_workflow("b.yml", "build")]
        )

        async def cut() -> None:
            while True:
                await asyncio.sleep(0.3)
                fake.drop_watches()

        cutter = asyncio.create_task(cut())
        try:
            async with grpc.aio.insecure_channel(proc.address) as channel:
                stub = provider_stub(channel)
                await stub.Spawn(request, timeout=10)
                keys = [key(request, w.name) for w in request.workflows]
                updates = await collect(stub, 0, terminal_for(keys), timeout=60)
        finally:
            cutter.cancel()
        assert histories(updates) == {w.name: [st.PENDING, st.RUNNING, st.SUCCESS] for w in request.workflows}
        assert runs_per_workflow(fake) == {"s0.yml": 1, "s1.yml": 1, "b.yml": 1}
        assert await metric(proc, "tack_tekton_watch_restarts_total") >= 1


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error_event", "http_410"])
async def test_kill9_and_410_relist_applies_what_happened_meanwhile(
    tmp_path: Path, gone_as_http: bool
) -> None:
    """The provider is killed while runs finish, one PipelineRun is deleted and the history is compacted: after the
    restart the watch gets 410, relists, and every workflow ends (the deleted one failed)."""
    async with provider(tmp_path, gone_as_http=gone_as_http) as (fake, proc):
        request = spawn_request([tekton_workflow("slow.yml", "slow"), tekton_workflow("gone.yml", "forever")])
        keys = [key(request, w.name) for w in request.workflows]
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = provider_stub(channel)
            await stub.Spawn(request, timeout=10)
            before = await collect(
                stub, 0, lambda got: sum(u.status == st.RUNNING for u in got) == 2, timeout=30
            )
        proc.kill9()
        names = {
            pr["metadata"]["annotations"]["tack.tangled.org/workflow"]: pr["metadata"]["name"]
            for pr in fake.pipeline_runs()
        }
        await fake.wait_for(
            lambda: "completionTime" in (fake.pipeline_run(names["slow.yml"]) or {}).get("status", {})
        )
        fake.store.delete("pipelineruns", "ci", names["gone.yml"])
        fake.compact()
        await proc.start_serving()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            updates = await collect(provider_stub(channel), before[-1].seq, terminal_for(keys), timeout=30)
        final = {u.key.workflow: (u.status, u.error) for u in updates if st.is_terminal(u.status)}
        assert final["slow.yml"] == (st.SUCCESS, "")
        assert final["gone.yml"][0] == st.FAILED and "deleted" in final["gone.yml"][1]
        assert await metric(proc, 'tack_tekton_watch_restarts_total{reason="gone"}') >= 1
        assert runs_per_workflow(fake) == {"slow.yml": 1}


async def test_a_create_whose_answer_is_lost_is_adopted_not_repeated(tmp_path: Path) -> None:
    """The first create lands but its answer stalls past the request timeout: the retry meets 409 and adopts the
    PipelineRun; the workflow runs once."""
    async with provider(tmp_path, stall_creates=1, stall_seconds=8) as (fake, proc):
        request = spawn_request([tekton_workflow("once.yml", "build")])
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = provider_stub(channel)
            await stub.Spawn(request, timeout=10)
            updates = await collect(stub, 0, terminal_for([key(request, "once.yml")]), timeout=40)
        assert histories(updates)["once.yml"] == [st.PENDING, st.RUNNING, st.SUCCESS]
        async with asyncio.timeout(20):
            while await metric(proc, 'tack_tekton_pipelineruns_total{outcome="adopted"}') != 1:
                await asyncio.sleep(0.2)
        assert runs_per_workflow(fake) == {"once.yml": 1}
        posts = [path for method, path in fake.api.requests if method == "POST" and "pipelineruns" in path]
        assert len(posts) == 2


async def read_log(proc: TektonProcess, k: pb.WorkflowKey) -> list[pb.LogLine]:
    async with grpc.aio.insecure_channel(proc.address) as channel:
        lines: list[pb.LogLine] = []
        async with asyncio.timeout(30):
            async for message in provider_stub(channel).Logs(pb.LogsRequest(key=k)):
                lines.extend(message.lines)
        return lines


def steps_of(lines: list[pb.LogLine]) -> list[tuple[str, list[str]]]:
    """(step name, data lines) per step, checking every data line follows its step's start."""
    steps: dict[int, tuple[str, list[str]]] = {}
    for line in lines:
        if line.kind == pb.LOG_KIND_CONTROL and line.step_status == pb.STEP_STATUS_START:
            steps[line.step_id] = (line.content, [])
        elif line.kind == pb.LOG_KIND_DATA:
            assert line.step_id in steps, "data before its step started"
            steps[line.step_id][1].append(line.content)
    return list(steps.values())


async def test_a_running_log_is_followed_live(tmp_path: Path) -> None:
    """Logs opened while a step runs deliver its lines as they are written and end when the run ends."""
    async with provider(tmp_path) as (_fake, proc):
        request = spawn_request([tekton_workflow("slow.yml", "slow")])
        k = key(request, "slow.yml")
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = provider_stub(channel)
            await stub.Spawn(request, timeout=10)
            await collect(stub, 0, lambda got: any(u.status == st.RUNNING for u in got))
            arrivals: list[float] = []
            lines: list[pb.LogLine] = []
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(30):
                async for message in stub.Logs(pb.LogsRequest(key=k)):
                    arrivals.extend(loop.time() for line in message.lines if line.kind == pb.LOG_KIND_DATA)
                    lines.extend(message.lines)
        assert steps_of(lines) == [("wait/sleep", ["tick"] * 10)]
        assert arrivals[-1] - arrivals[0] > 1.0, "lines arrived at once: the log was not followed"


async def test_pruned_pods_are_reported_in_the_log_not_as_an_error(tmp_path: Path) -> None:
    """When the pods are gone after the run, each step's log says so and the stream ends normally."""
    async with provider(tmp_path, prune_pods=True) as (_fake, proc):
        request = spawn_request([tekton_workflow("b.yml", "build")])
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = provider_stub(channel)
            await stub.Spawn(request, timeout=10)
            await collect(stub, 0, terminal_for([key(request, "b.yml")]))
        steps = steps_of(await read_log(proc, key(request, "b.yml")))
        assert [name for name, _ in steps] == ["compile/fetch", "compile/make", "test/unit"]
        assert all(len(data) == 1 and "is gone" in data[0] for _, data in steps)


async def test_missing_rbac_keeps_the_provider_not_serving_and_says_what(tmp_path: Path) -> None:
    """A service account without `patch` on pipelineruns leaves health NOT_SERVING, with the missing verb reported
    in the log and in the provider's readiness report."""
    fake = await fake_kubernetes(deny={("patch", "pipelineruns")})
    proc = TektonProcess(tmp_path, fake)
    proc.start()
    try:
        async with asyncio.timeout(20):
            while "may not patch pipelineruns.tekton.dev in namespace ci" not in proc.output():
                await asyncio.sleep(0.1)
        url = f"http://127.0.0.1:{proc.metrics_port}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 503
            problems = (await resp.json())["problems"]
        assert len(problems) == 1, problems
        assert problems[0].startswith("Tekton access: ")
        assert "may not patch pipelineruns.tekton.dev in namespace ci" in problems[0]
    finally:
        proc.kill9()
        await fake.stop()


async def test_an_unusable_kubeconfig_stops_the_provider_with_exit_status_2(tmp_path: Path) -> None:
    """A kubeconfig that cannot be loaded ends the process at start with one line naming the variable."""
    fake = await fake_kubernetes()
    proc = TektonProcess(tmp_path, fake)
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    try:
        proc.start()
        assert proc.popen is not None
        status = await asyncio.to_thread(proc.popen.wait, 20)
        assert status == 2
        assert "configuration error: TACK_TEKTON_KUBECONFIG cannot be used" in proc.output()
    finally:
        proc.kill9()
        await fake.stop()
