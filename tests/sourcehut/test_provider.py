"""The sourcehut provider process against the fake builds.sr.ht: the job it submits, statuses, logs and faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml

from tack_common import status as st
from tack_common.client import provider_stub
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import collect, key, ready_channel, spawn_request, terminal_for
from tack_provider_kit.store import RunKey
from tack_provider_sourcehut.job_request import run_tag
from tests.fakes.sourcehut import FakeSourcehut
from tests.support.faults import eventually, metric, readiness
from tests.support.sourcehut_harness import (
    SourcehutProcess,
    fake_sourcehut,
    manifest,
    sourcehut_workflow,
    submit,
)


pytestmark = pytest.mark.e2e


@pytest.fixture
async def fake() -> AsyncIterator[FakeSourcehut]:
    srht = await fake_sourcehut()
    try:
        yield srht
    finally:
        await srht.stop()


@pytest.fixture
async def provider(tmp_path: Path, fake: FakeSourcehut) -> AsyncIterator[SourcehutProcess]:
    proc = SourcehutProcess(tmp_path, fake)
    await proc.start_serving()
    try:
        yield proc
    finally:
        proc.kill9()


async def run_to_end(
    address: str, workflows: list[pb.Workflow]
) -> tuple[pb.SpawnRequest, list[pb.StatusUpdate]]:
    request = spawn_request(workflows)
    async with ready_channel(address) as channel:
        stub = provider_stub(channel)
        await stub.Spawn(request, timeout=10)
        updates = await collect(stub, 0, terminal_for([key(request, w.name) for w in workflows]), timeout=60)
    return request, updates


def final(updates: list[pb.StatusUpdate], k: pb.WorkflowKey) -> pb.StatusUpdate:
    return [u for u in updates if u.key == k and st.is_terminal(u.status)][-1]


async def logs(address: str, k: pb.WorkflowKey) -> list[pb.LogLine]:
    async with ready_channel(address) as channel:
        lines: list[pb.LogLine] = []
        async for message in provider_stub(channel).Logs(pb.LogsRequest(key=k), timeout=30):
            lines.extend(message.lines)
        return lines


async def test_jobs_carry_the_manifest_environment_and_commit_and_end_mapped_with_per_task_logs(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """One job per workflow with TANGLED_* in environment: and the repo pinned at the commit; success, a failed
    task and a timeout map to Tangled's statuses; the log is setup (system) then one step per task, in order."""
    workflows = [
        sourcehut_workflow("ok.yml", manifest("build", "test")),
        sourcehut_workflow("bad.yml", manifest("build", "fail", "deploy")),
        sourcehut_workflow("late.yml", manifest("slow")),
    ]
    request, updates = await run_to_end(provider.address, workflows)
    assert len(fake.jobs) == 3
    assert final(updates, key(request, "ok.yml")).status == st.SUCCESS
    failed = final(updates, key(request, "bad.yml"))
    assert (failed.status, failed.error) == (st.FAILED, "task 'fail' failed")
    assert final(updates, key(request, "late.yml")).status == st.TIMEOUT
    submitted = yaml.safe_load(fake.submissions[0].manifest)
    assert submitted["environment"]["TANGLED_COMMIT"] == "a" * 40
    assert submitted["environment"]["TANGLED_PIPELINE_RKEY"] == request.pipeline_rkey
    assert submitted["sources"] == ["https://knot.test/did:plc:repohello#" + "a" * 40]
    lines = await logs(provider.address, key(request, "bad.yml"))
    starts = [(line.content, line.step_kind) for line in lines if line.step_status == pb.STEP_STATUS_START]
    assert starts == [
        ("setup", pb.STEP_KIND_SYSTEM),
        ("build", pb.STEP_KIND_USER),
        ("fail", pb.STEP_KIND_USER),
        ("deploy", pb.STEP_KIND_USER),
    ]
    texts = [line.content for line in lines if line.kind == pb.LOG_KIND_DATA]
    assert "build: ok" in texts and "task failed" in texts and texts[-1] == "not run"


@pytest.mark.parametrize("fault", ["drop", "stall", "502-after", "502-before"])
async def test_a_submit_whose_answer_is_lost_makes_exactly_one_job(
    provider: SourcehutProcess, fake: FakeSourcehut, fault: str
) -> None:
    """The connection is cut, the answer outlasts the submit timeout, or a proxy answers 502, after the job
    was created: the provider finds it by its run tag, never resubmits. A 502 before anything was created:
    the look-up finds nothing older than the attempt, and the one submit that follows makes the job."""
    if fault == "drop":
        fake.drop_next("submit")
    elif fault == "stall":
        fake.stall_next("submit", seconds=30.0)
    else:
        fake.fail_next("submit", status=502, after_effect=fault == "502-after")
    request, updates = await run_to_end(provider.address, [sourcehut_workflow("one.yml", manifest("build"))])
    assert final(updates, key(request, "one.yml")).status == st.SUCCESS
    assert len(fake.jobs) == 1 and len(fake.submissions) == 1


async def test_kill9_mid_job_resumes_and_every_workflow_ends_with_one_job_each(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """kill -9 while jobs run (one hanging until cancelled): after the restart each workflow has one job and ends."""
    request = spawn_request(
        [
            sourcehut_workflow("a.yml", manifest("build", "test")),
            sourcehut_workflow("h.yml", manifest("hang")),
        ]
    )
    async with ready_channel(provider.address) as channel:
        await provider_stub(channel).Spawn(request, timeout=10)
    await fake.wait_for(
        lambda: any(t.status == "RUNNING" for j in fake.jobs for t in j.tasks if t.name == "hang")
    )
    provider.kill9()
    await provider.start_serving()
    async with ready_channel(provider.address) as channel:
        stub = provider_stub(channel)
        await stub.Cancel(pb.CancelRequest(key=key(request, "h.yml")), timeout=30)
        updates = await collect(
            stub, 0, terminal_for([key(request, "a.yml"), key(request, "h.yml")]), timeout=60
        )
    assert final(updates, key(request, "a.yml")).status == st.SUCCESS
    assert final(updates, key(request, "h.yml")).status == st.CANCELLED
    assert len(fake.jobs) == 2


async def test_kill9_while_a_submit_is_in_flight_makes_exactly_one_job(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """kill -9 after builds.sr.ht created the job but before its answer arrived: the restarted provider
    finds the job by its run tag instead of submitting again, and the workflow ends."""
    fake.stall_next("submit", seconds=60.0)
    request = spawn_request([sourcehut_workflow("k.yml", manifest("build"))])
    async with ready_channel(provider.address) as channel:
        await provider_stub(channel).Spawn(request, timeout=10)
    await fake.wait_for(lambda: len(fake.jobs) == 1)
    provider.kill9()
    await provider.start_serving()
    async with ready_channel(provider.address) as channel:
        updates = await collect(provider_stub(channel), 0, terminal_for([key(request, "k.yml")]), timeout=60)
    assert final(updates, key(request, "k.yml")).status == st.SUCCESS
    assert len(fake.jobs) == 1 and len(fake.submissions) == 1


async def test_throttled_and_failing_reads_are_retried_until_the_job_ends(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """429s with Retry-After and 502s on job reads are waited out; the status still arrives."""
    fake.fail_next("job", status=429, retry_after=1, count=2)
    fake.fail_next("job", status=502, count=2)
    request, updates = await run_to_end(provider.address, [sourcehut_workflow("r.yml", manifest("build"))])
    assert final(updates, key(request, "r.yml")).status == st.SUCCESS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image: [unclosed\n", "tack.sourcehut.manifest: invalid YAML"),
        ("image: alpine/edge\n", "tack.sourcehut.manifest.tasks: required"),
        ("image: a\n" + "#" * 20000 + "\ntasks:\n  - a: b\n", "manifest larger than 16384 bytes"),
    ],
)
async def test_bad_manifests_are_refused_at_spawn_naming_the_problem(
    provider: SourcehutProcess, fake: FakeSourcehut, text: str, message: str
) -> None:
    """Not YAML, no tasks, too big: Spawn answers INVALID_ARGUMENT naming the workflow and the problem."""
    request = spawn_request([sourcehut_workflow("bad.yml", text)])
    async with ready_channel(provider.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await provider_stub(channel).Spawn(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad.yml" in str(caught.value.details()) and message in str(caught.value.details())
    assert fake.submissions == []


async def test_a_token_without_the_logs_scope_still_makes_exactly_one_job(
    tmp_path: Path, fake: FakeSourcehut
) -> None:
    """A token lacking LOGS:RO passes the check on an account without jobs; its submit must not be answered
    with access errors beside the new job (that read as a refusal, and the job was submitted again and again)."""
    token = "NoLogsToken0123456789abcdefghijklmnopqrstuvwxyz"
    fake.add_token(token, grants={"JOBS:RW"})
    proc = SourcehutProcess(tmp_path, fake, {"TACK_SOURCEHUT_TOKEN": token})
    await proc.start_serving()
    try:
        request, updates = await run_to_end(proc.address, [sourcehut_workflow("n.yml", manifest("build"))])
    finally:
        proc.kill9()
    assert final(updates, key(request, "n.yml")).status == st.SUCCESS
    assert len(fake.submissions) == 1 and len(fake.jobs) == 1


async def test_a_cancel_builds_sr_ht_took_is_not_sent_again_while_the_runner_kills_the_job(
    tmp_path: Path,
) -> None:
    """builds.sr.ht answers a cancel with CANCELLED while the job reads RUNNING until its runner acts: the
    provider keeps polling but sends the cancel once (it used to resend it after every read, unpaced)."""
    async with FakeSourcehut(cancel_lag=True) as fake:
        proc = SourcehutProcess(tmp_path, fake)
        await proc.start_serving()
        try:
            request = spawn_request([sourcehut_workflow("h.yml", manifest("hang"))])
            k = key(request, "h.yml")
            async with ready_channel(proc.address) as channel:
                stub = provider_stub(channel)
                await stub.Spawn(request, timeout=10)
                await fake.wait_for(lambda: len(fake.jobs) == 1)
                job = fake.jobs[0]
                fake.pick_up(job.id)
                fake.start_task(job.id, "hang", log="hanging\r\n")
                await stub.Cancel(pb.CancelRequest(key=k), timeout=30)
                reads = len(fake.ops("job"))
                await fake.wait_for(lambda: len(fake.ops("job")) >= reads + 4, timeout=30)
                assert job.status == "RUNNING" and len(fake.ops("cancel")) == 1
                fake.runner_cancels(job.id)
                updates = await collect(stub, 0, terminal_for([k]), timeout=30)
        finally:
            proc.kill9()
    assert final(updates, k).status == st.CANCELLED
    assert len(fake.ops("cancel")) == 1


async def test_a_lost_submit_is_not_resolved_to_a_job_that_only_carries_the_run_tag_elsewhere(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """After a submit whose answer was lost, a newer job with the run's tag among its own extra tags (as any
    workflow could add) is passed over: the run follows its own job and nothing is submitted again."""
    request = spawn_request([sourcehut_workflow("one.yml", manifest("build"))])
    tag = run_tag(RunKey(request.knot, request.pipeline_rkey, "one.yml"))
    fake.drop_next("submit")
    async with ready_channel(provider.address) as channel:
        stub = provider_stub(channel)
        await stub.Spawn(request, timeout=10)
        await fake.wait_for(lambda: len(fake.jobs) == 1)
        await submit(fake, manifest("fail"), tags=["tack", "evil", "x.yml", "tack-" + "0" * 32, tag])
        updates = await collect(stub, 0, terminal_for([key(request, "one.yml")]), timeout=60)
    assert final(updates, key(request, "one.yml")).status == st.SUCCESS
    assert len(fake.submissions) == 2


async def test_a_submit_the_token_may_not_make_fails_the_workflow_at_once_naming_the_scope(
    tmp_path: Path, fake: FakeSourcehut
) -> None:
    """secrets: true with a token without SECRETS:RO is refused by builds.sr.ht ("Access denied"): the
    workflow fails saying which scope is missing instead of being retried forever."""
    token = "TackGrantsOnly0123456789abcdefghijklmnopqrstuvwxyz"
    fake.add_token(token, grants={"JOBS:RW", "LOGS:RO"})
    proc = SourcehutProcess(tmp_path, fake, {"TACK_SOURCEHUT_TOKEN": token})
    await proc.start_serving()
    try:
        workflow = sourcehut_workflow("s.yml", manifest("build"), secrets=True)
        request, updates = await run_to_end(proc.address, [workflow])
    finally:
        proc.kill9()
    failed = final(updates, key(request, "s.yml"))
    assert failed.status == st.FAILED
    assert "Access denied" in failed.error and "SECRETS:RO" in failed.error
    assert fake.jobs == [] and len(fake.submissions) == 1


async def test_job_reads_that_keep_failing_make_the_provider_not_ready_until_one_works(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """Reads refused again and again (here HTTP 400) turn readiness off with one log line and a counter; the
    first read that works turns it back on, and the job is still followed to its end."""
    base = f"http://127.0.0.1:{provider.metrics_port}"
    request = spawn_request([sourcehut_workflow("h.yml", manifest("hang"))])
    k = key(request, "h.yml")

    async def ready_is(code: int) -> bool:
        return (await readiness(base))[0] == code

    async with ready_channel(provider.address) as channel:
        stub = provider_stub(channel)
        await stub.Spawn(request, timeout=10)
        await collect(stub, 0, lambda seen: any(u.status == st.RUNNING for u in seen), timeout=30)
        fake.fail_next("job", status=400, count=10_000)
        await eventually(lambda: ready_is(503), 30, "not ready while reads fail")
        assert "builds.sr.ht is failing job reads (retrying)" in str((await readiness(base))[1])
        fake.faults.clear()
        await eventually(lambda: ready_is(200), 30, "ready once a read works")
        await stub.Cancel(pb.CancelRequest(key=k), timeout=30)
        updates = await collect(stub, 0, terminal_for([k]), timeout=30)
    assert final(updates, k).status == st.CANCELLED
    output = provider.output()
    assert output.count("job reads keep failing") == 1 and output.count("job reads work again") == 1
    assert await metric(base, "tack_sourcehut_job_read_failures_total") >= 3


async def test_a_running_jobs_log_streams_live_in_bounded_reads_and_ends_with_the_job(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """While a task runs its lines arrive as builds.sr.ht appends them (a 3 MiB burst is read in ranged chunks,
    not whole); once the job ends the stream closes the step and ends."""
    request = spawn_request([sourcehut_workflow("live.yml", manifest("prepare", "hang"))])
    k = key(request, "live.yml")
    async with ready_channel(provider.address) as channel:
        stub = provider_stub(channel)
        await stub.Spawn(request, timeout=10)
        await fake.wait_for(lambda: any(getattr(j.running_task(), "name", "") == "hang" for j in fake.jobs))
        job = fake.jobs[0]
        texts: list[str] = []

        async def follow() -> None:
            async for message in stub.Logs(pb.LogsRequest(key=k), timeout=60):
                texts.extend(line.content for line in message.lines if line.kind == pb.LOG_KIND_DATA)

        reader = asyncio.create_task(follow())
        try:
            await fake.wait_for(lambda: "hang: ok" in texts, timeout=30)
            big = "".join(f"line {i:07d} {'x' * 80}\r\n" for i in range(36_000))
            before = len([r for r in fake.ops("log") if r.path.endswith("/hang/log")])
            fake.append_task_log(job.id, "hang", big + "still going\r\n")
            await fake.wait_for(lambda: "still going" in texts, timeout=30)
            assert not job.finished and "line 0035999 " + "x" * 80 in texts
            reads = len([r for r in fake.ops("log") if r.path.endswith("/hang/log")]) - before
            assert reads >= 3  # 3.2 MiB in chunks of at most 1 MiB
            await stub.Cancel(pb.CancelRequest(key=k), timeout=30)
            await asyncio.wait_for(reader, 30)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    assert texts[-1] == "task failed"


async def test_log_urls_naming_another_origin_are_read_from_the_configured_instance(
    provider: SourcehutProcess, fake: FakeSourcehut
) -> None:
    """builds.sr.ht builds log URLs from its own public origin; the provider reads them from the instance it
    was given, so the token is sent nowhere else and the logs still arrive."""
    fake.log_origin = "http://builds.elsewhere.invalid:1"
    request, _ = await run_to_end(provider.address, [sourcehut_workflow("o.yml", manifest("build"))])
    texts = [line.content for line in await logs(provider.address, key(request, "o.yml"))]
    assert "build: ok" in texts
    assert not any("log unavailable" in t or "no log URL" in t for t in texts)
