"""The Buildkite provider as a real process against the fake Buildkite: builds, statuses, webhooks, logs."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from tack_common import health, status as st
from tack_common.client import provider_stub
from tack_common.pb import provider_pb2 as pb, provider_pb2_grpc as pb_grpc
from tack_provider_buildkite.api import BuildkiteClient
from tack_provider_buildkite.ratelimit import RateLimiter
from tack_provider_buildkite.runs import SCHEMA, BuildRef, RunBook
from tack_provider_buildkite.tracker import Tracker
from tack_provider_kit.contract.checks import collect, key, spawn_request
from tack_provider_kit.store import ProviderStore, RunKey
from tests.fakes.buildkite import DEFAULT_TOKEN, Build, FakeBuildkite, PipelineSpec, signature_header
from tests.support.buildkite_harness import (
    WEBHOOK_SECRET,
    BuildkiteProcess,
    WebhookRelay,
    buildkite_workflow,
    fake_buildkite,
)
from tests.support.procs import free_port, wait_serving


pytestmark = pytest.mark.e2e


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
STEPS = [{"name": ":pytest: unit", "step_key": "unit", "command": "pytest -q"}]


@dataclass
class Rig:
    """A fake Buildkite, the provider process, the webhook relay and a client."""

    fake: FakeBuildkite
    proc: BuildkiteProcess
    relay: WebhookRelay
    channel: grpc.aio.Channel

    @property
    def stub(self) -> pb_grpc.ProviderAsyncStub:
        return provider_stub(self.channel)

    async def spawn(self, *workflows: pb.Workflow, trigger: pb.Trigger | None = None) -> pb.SpawnRequest:
        request = spawn_request(list(workflows))
        if trigger is not None:
            request.trigger.CopyFrom(trigger)
        await self.stub.Spawn(request, timeout=5, wait_for_ready=True)
        return request

    async def statuses(
        self, keys: list[pb.WorkflowKey], timeout: float = 20.0
    ) -> dict[str, list[pb.StatusUpdate]]:
        """Every key's updates, once every key has a terminal one."""
        names = {k.workflow for k in keys}

        def done(updates: list[pb.StatusUpdate]) -> bool:
            ended = {u.key.workflow for u in updates if st.is_terminal(u.status) and u.key in keys}
            return ended >= names

        updates = await collect(self.stub, 0, done, timeout)
        return {k.workflow: [u for u in updates if u.key == k] for k in keys}

    async def status_now(self, k: pb.WorkflowKey) -> list[st.Status]:
        """The statuses published so far for ``k``."""
        updates = await collect(self.stub, 0, lambda got: True, 5)
        seen: list[pb.StatusUpdate] = list(updates)
        call = self.stub.WatchStatus(
            pb.WatchStatusRequest(after_seq=seen[-1].seq if seen else 0), wait_for_ready=True
        )
        call.cancel()
        return [u.status for u in seen if u.key == k]

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """A sample of the provider's Prometheus metrics (0 when absent)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.proc.metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(sample.value)
        return 0.0


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    async def make(
        pipelines: Mapping[str, Any],
        *,
        knobs: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        mode: str = "token",
    ) -> Rig:
        fake = await fake_buildkite(pipelines, auto_tick_s=0.02, **(knobs or {}))
        proc = BuildkiteProcess(tmp_path, fake.url, {"TACK_BUILDKITE_WEBHOOK_MODE": mode, **(env or {})})
        await proc.start_serving()
        # Channels are opened once the provider listens: one that failed to connect first would sit in
        # reconnect backoff and fail the test's first call.
        relay = WebhookRelay(proc.address)
        await relay.start()
        fake.add_webhook_target(relay.url, WEBHOOK_SECRET, "signature" if mode == "signature" else "token")
        rig = Rig(fake, proc, relay, grpc.aio.insecure_channel(proc.address))
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.proc.kill9()
        await rig.channel.close()
        await rig.relay.stop()
        await rig.fake.stop()


def _builds_of(fake: FakeBuildkite, k: pb.WorkflowKey) -> list[Build]:
    return [
        b
        for b in fake.builds
        if b.meta_data.get("tack:pipeline_rkey") == k.pipeline_rkey
        and b.meta_data.get("tack:workflow") == k.workflow
    ]


def _names(updates: list[pb.StatusUpdate]) -> list[str]:
    return [st.name(u.status) for u in updates]


# Spawn → build


async def test_spawn_creates_builds_with_trigger_fields(make_rig: RigFactory) -> None:
    """Push, tag and pull-request Spawns create one build each with the right commit, branch, env and meta-data."""
    rig = await make_rig({"ci": STEPS})
    push = buildkite_workflow("push.yml", "ci", env={"EXTRA": "1"})
    push.environment["GREETING"] = "hi"
    started = time.monotonic()
    push_req = await rig.spawn(push)
    assert time.monotonic() - started < 1.0
    tag_req = await rig.spawn(
        buildkite_workflow("tag.yml", "ci"),
        trigger=pb.Trigger(
            kind=pb.TRIGGER_KIND_PUSH,
            repo=pb.Repo(knot="knot.test", did="did:plc:owner", name="hello"),
            push=pb.PushTrigger(ref="refs/tags/v1.0", old_sha="0" * 40, new_sha=SHA),
        ),
    )
    pr_req = await rig.spawn(
        buildkite_workflow("pr.yml", "ci"),
        trigger=pb.Trigger(
            kind=pb.TRIGGER_KIND_PULL_REQUEST,
            repo=pb.Repo(knot="knot.test", did="did:plc:owner", name="hello"),
            pull_request=pb.PullRequestTrigger(
                source_branch="feature/x", target_branch="main", source_sha=SHA, action="create"
            ),
        ),
    )
    await rig.fake.wait_until(lambda: len(rig.fake.builds) == 3)
    by_workflow = {b.meta_data["tack:workflow"]: b for b in rig.fake.builds}

    push_body = by_workflow["push.yml"].request_body
    assert push_body is not None
    assert (push_body["commit"], push_body["branch"]) == ("a" * 40, "main")
    assert push_body["ignore_pipeline_branch_filters"] is True
    assert push_body["message"] == "tangled: push to main in hello (push.yml)"
    assert push_body["meta_data"] == {
        "tack:knot": "knot.test",
        "tack:pipeline_rkey": push_req.pipeline_rkey,
        "tack:workflow": "push.yml",
    }
    env = push_body["env"]
    assert (env["GREETING"], env["EXTRA"], env["TANGLED_KNOT"], env["TANGLED_REPO_NAME"]) == (
        "hi",
        "1",
        "knot.test",
        "hello",
    )
    assert (env["TANGLED_TRIGGER_KIND"], env["TANGLED_REF"], env["TANGLED_BRANCH"]) == (
        "push",
        "refs/heads/main",
        "main",
    )
    assert (
        env["TANGLED_PIPELINE_RKEY"] == push_req.pipeline_rkey and env["TANGLED_REPO_DID"] == "did:plc:owner"
    )

    tag_body = by_workflow["tag.yml"].request_body
    assert tag_body is not None and tag_req.pipeline_rkey == tag_body["meta_data"]["tack:pipeline_rkey"]
    assert (tag_body["branch"], tag_body["commit"], tag_body["env"]["TANGLED_TAG"]) == ("v1.0", SHA, "v1.0")

    pr_build = by_workflow["pr.yml"]
    pr_body = pr_build.request_body
    assert pr_body is not None and pr_req.pipeline_rkey == pr_body["meta_data"]["tack:pipeline_rkey"]
    assert (pr_body["commit"], pr_body["branch"], pr_body["pull_request_base_branch"]) == (
        SHA,
        "feature/x",
        "main",
    )
    assert "pull_request_id" not in pr_body

    again = await rig.stub.Spawn(push_req, timeout=5)
    assert [a.created for a in again.acceptances] == [False]
    await asyncio.sleep(0.3)
    assert len(rig.fake.builds) == 3


async def test_definitive_rejections_fail_the_workflow(make_rig: RigFactory) -> None:
    """A config error is INVALID_ARGUMENT naming the key; an unknown pipeline fails the run with Buildkite's message."""
    rig = await make_rig({"ci": STEPS})
    bad = buildkite_workflow("bad.yml", "ci", env={"FOO": 1})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.spawn(bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tack.buildkite.env.FOO: must be a string" in (info.value.details() or "")
    request = await rig.spawn(buildkite_workflow("gone.yml", "no-such-pipeline"))
    updates = (await rig.statuses([key(request, "gone.yml")]))["gone.yml"]
    assert _names(updates) == ["pending", "failed"]
    assert "No pipeline found" in updates[-1].error and "acme/no-such-pipeline" in updates[-1].error
    assert rig.fake.builds == []
    lines: list[pb.LogLine] = []
    await asyncio.wait_for(_read_log(rig.stub, key(request, "gone.yml"), lines), 5)
    assert [line.content for line in lines if line.kind == pb.LOG_KIND_DATA] == [updates[-1].error]


# Statuses


async def test_statuses_follow_webhooks(make_rig: RigFactory) -> None:
    """Passing, failing and timed-out builds end success, failed (exit code, job named) and timeout via webhooks."""
    rig = await make_rig(
        {
            "pass": PipelineSpec(steps=STEPS, auto_scenario="pass"),
            "fail": PipelineSpec(steps=STEPS, auto_scenario="fail"),
            "timeout": PipelineSpec(steps=STEPS, auto_scenario="timeout"),
        },
        env={"TACK_BUILDKITE_POLL_INTERVAL": "60"},
    )
    request = await rig.spawn(*(buildkite_workflow(f"{p}.yml", p) for p in ("pass", "fail", "timeout")))
    got = await rig.statuses([key(request, f"{p}.yml") for p in ("pass", "fail", "timeout")])
    assert _names(got["pass.yml"]) == ["pending", "running", "success"]
    assert _names(got["fail.yml"]) == ["pending", "running", "failed"]
    failed = got["fail.yml"][-1]
    assert failed.exit_code == 1 and failed.error == "job ':pytest: unit' exited with status 1"
    assert _names(got["timeout.yml"]) == ["pending", "running", "timeout"]
    assert "timed out" in got["timeout.yml"][-1].error
    assert await rig.metric("tack_buildkite_polls_total", {"reason": "poll"}) == 0
    assert await rig.metric("tack_buildkite_webhooks_total", {"outcome": "accepted"}) >= 6


async def _post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=dict(headers)) as resp,
    ):
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw else None


def _signed(
    body: bytes, timestamp: float, secret: str = WEBHOOK_SECRET, event: str = "build.finished"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Buildkite-Event": event,
        "X-Buildkite-Signature": signature_header(secret, int(timestamp), body),
    }


async def test_webhook_security(make_rig: RigFactory) -> None:
    """Forged, stale, future, replayed, malformed and oversized deliveries are refused and publish nothing."""
    rig = await make_rig(
        {"queued": STEPS},
        mode="signature",
        env={"TACK_BUILDKITE_POLL_INTERVAL": "60", "TACK_BUILDKITE_WEBHOOK_MAX_BYTES": "4096"},
    )
    request = await rig.spawn(buildkite_workflow("q.yml", "queued"))
    k = key(request, "q.yml")
    await rig.fake.wait_until(lambda: len(rig.fake.builds) == 1)
    build = rig.fake.builds[0]
    await rig.fake.wait_webhooks_idle()
    real = next(d for d in rig.fake.webhook_deliveries if d.event == "build.scheduled")
    forged = json.dumps(
        {
            "event": "build.finished",
            "build": {
                "id": build.id,
                "number": build.number,
                "state": "passed",
                "meta_data": build.meta_data,
            },
            "pipeline": {"slug": "queued"},
        }
    ).encode()
    now = time.time()
    url = rig.relay.url
    refused = [
        await _post(url, forged, {"X-Buildkite-Token": WEBHOOK_SECRET}),
        await _post(url, forged, _signed(forged, now, secret="not-the-secret")),
        await _post(url, forged, _signed(forged, now - 302)),
        await _post(url, forged, _signed(forged, now + 302)),
        await _post(url, forged + b" ", {**_signed(forged, now)}),
    ]
    assert [status for status, _ in refused] == [401] * 5
    assert (await _post(url, b"{not json", _signed(b"{not json", now)))[0] == 400
    big = b'{"event":"ping","pad":"' + b"x" * 5000 + b'"}'
    assert (await _post(url, big, _signed(big, now)))[0] == 413
    replay = await _post(url, real.body, real.headers)
    assert replay == (200, {"ok": True, "ignored": "duplicate delivery"})
    foreign = json.dumps(
        {"event": "build.finished", "build": {"id": "x", "number": 9, "state": "passed"}}
    ).encode()
    assert (await _post(url, foreign, _signed(foreign, now)))[1]["ignored"] == "not a build of this tack"
    # A genuine but stale-state finished hint is confirmed by REST first: the build is still scheduled.
    assert (await _post(url, forged, _signed(forged, now)))[0] == 200
    await asyncio.sleep(0.5)
    assert await rig.status_now(k) == [st.PENDING]
    assert await rig.metric("tack_buildkite_webhooks_total", {"outcome": "unauthorized"}) == 5

    rig.fake.advance(build, "unit", "running", log_append="hello\n")
    rig.fake.advance(build, "unit", "passed")
    assert _names((await rig.statuses([k]))["q.yml"]) == ["pending", "running", "success"]


async def test_token_mode_refuses_wrong_tokens(make_rig: RigFactory) -> None:
    """In token mode a wrong or missing X-Buildkite-Token is 401; the right one is accepted."""
    rig = await make_rig({"ci": STEPS})
    ping = b'{"event":"ping"}'
    assert (await _post(rig.relay.url, ping, {"X-Buildkite-Token": WEBHOOK_SECRET + "x"}))[0] == 401
    assert (await _post(rig.relay.url, ping, {}))[0] == 401
    assert (await _post(rig.relay.url, ping, {"x-buildkite-token": WEBHOOK_SECRET}))[0] == 200


# Robustness


async def test_lost_webhooks_are_covered_by_polling(make_rig: RigFactory) -> None:
    """With every webhook dropped, the poll still ends the workflow: pending, running, success."""
    rig = await make_rig(
        {"ci": PipelineSpec(steps=STEPS, auto_scenario="pass")},
        knobs={"webhook_drop": 1.0},
        env={"TACK_BUILDKITE_POLL_INTERVAL": "0.3"},
    )
    request = await rig.spawn(buildkite_workflow("a.yml", "ci"))
    got = await rig.statuses([key(request, "a.yml")])
    assert _names(got["a.yml"]) == ["pending", "running", "success"]
    assert all(d.dropped for d in rig.fake.webhook_deliveries if d.event != "ping")
    assert await rig.metric("tack_buildkite_polls_total", {"reason": "poll"}) >= 1


async def test_duplicated_and_reordered_webhooks_give_one_terminal_status(make_rig: RigFactory) -> None:
    """Duplicated, reordered deliveries give each workflow forward-only statuses and exactly one terminal one."""
    rig = await make_rig(
        {
            "pass": PipelineSpec(steps=STEPS, auto_scenario="pass"),
            "fail": PipelineSpec(steps=STEPS, auto_scenario="fail"),
        },
        knobs={"webhook_duplicate": True, "webhook_reorder": True, "webhook_live_build": False},
        env={"TACK_BUILDKITE_POLL_INTERVAL": "60"},
    )
    names = [f"{p}{i}.yml" for p in ("pass", "fail") for i in range(3)]
    request = await rig.spawn(*(buildkite_workflow(n, n[:4]) for n in names))
    got = await rig.statuses([key(request, n) for n in names])
    for name, updates in got.items():
        ranks = [st.rank(u.status) for u in updates]
        assert ranks == sorted(set(ranks)), (name, _names(updates))
        assert sum(st.is_terminal(u.status) for u in updates) == 1
        assert updates[-1].status == (st.SUCCESS if name.startswith("pass") else st.FAILED)
    await rig.fake.wait_webhooks_idle()
    assert any(d.duplicate for d in rig.fake.webhook_deliveries)


async def test_a_job_retried_after_the_build_failed_leaves_the_workflow_failed(make_rig: RigFactory) -> None:
    """Terminal is final: a failed build whose job is retried in Buildkite and then passes is noted (log,
    metric), not reported; the workflow's statuses stay pending, running, failed."""
    rig = await make_rig(
        {"fail": PipelineSpec(steps=STEPS, auto_scenario="fail")}, env={"TACK_BUILDKITE_POLL_INTERVAL": "0.3"}
    )
    request = await rig.spawn(buildkite_workflow("f.yml", "fail"))
    k = key(request, "f.yml")
    got = await rig.statuses([k])
    assert _names(got["f.yml"]) == ["pending", "running", "failed"]
    build = rig.fake.builds[0]
    rig.fake.retry_job(build, "unit")
    await rig.fake.wait_until(lambda: rig.fake.builds[0].state in ("scheduled", "running"))
    rig.fake.advance(build, "unit", "passed")
    await rig.fake.wait_until(lambda: rig.fake.builds[0].state == "passed")
    deadline = time.monotonic() + 10
    while await rig.metric("tack_buildkite_builds_total", {"outcome": "reopened"}) < 1:
        assert time.monotonic() < deadline, "the re-opened build was never noticed"
        await asyncio.sleep(0.1)
    await rig.fake.wait_webhooks_idle()
    await asyncio.sleep(1.0)  # polls and webhooks have had their chance to report it
    assert await rig.status_now(k) == [st.PENDING, st.RUNNING, st.FAILED]
    assert "the workflow keeps its final status" in rig.proc.output()


async def test_429_storm_backs_off_without_duplicate_builds(make_rig: RigFactory) -> None:
    """A run of 429s delays the create (waiting the advertised reset) but makes exactly one build."""
    rig = await make_rig(
        {"ci": PipelineSpec(steps=STEPS, auto_scenario="pass")}, knobs={"rate_limit_window_s": 0.5}
    )
    rig.fake.force_429(3, "rest_user")
    request = await rig.spawn(buildkite_workflow("a.yml", "ci"))
    k = key(request, "a.yml")
    assert _names((await rig.statuses([k]))["a.yml"])[-1] == "success"
    assert len(_builds_of(rig.fake, k)) == 1
    creates = [r for r in rig.fake.requests if r.method == "POST"]
    assert [r.status for r in creates] == [429] * 3 + [201]
    gaps = [b.at - a.at for a, b in itertools.pairwise(creates)]
    assert min(gaps) >= 0.25, gaps
    assert await rig.metric("tack_buildkite_rate_limited_total", {"scope": "rest_user"}) == 3
    assert (
        await rig.metric("tack_buildkite_api_requests_total", {"endpoint": "create_build", "code": "429"})
        == 3
    )


async def test_create_with_unknown_outcome_adopts_the_build(make_rig: RigFactory) -> None:
    """A create answered 502 after Buildkite made the build is not repeated: the build is found and adopted."""
    rig = await make_rig(
        {"ci": PipelineSpec(steps=STEPS, auto_scenario="pass")}, knobs={"fault_match": "^POST "}
    )
    rig.fake.fail_next(1, 502, after_effect=True)
    request = await rig.spawn(buildkite_workflow("a.yml", "ci"))
    k = key(request, "a.yml")
    assert _names((await rig.statuses([k]))["a.yml"])[-1] == "success"
    assert len(_builds_of(rig.fake, k)) == 1
    assert [r.status for r in rig.fake.requests if r.method == "POST"] == [502]


async def test_kill9_between_intent_and_create_gives_one_build(make_rig: RigFactory) -> None:
    """SIGKILL while a create is in flight: after restart the build is found by meta-data, never created twice."""
    rig = await make_rig(
        {"ci": PipelineSpec(steps=STEPS, auto_scenario="pass")},
        knobs={"create_delay_s": 2.0},
        env={"TACK_BUILDKITE_POLL_INTERVAL": "0.5", "TACK_BUILDKITE_CREATE_TIMEOUT": "1"},
    )
    request = await rig.spawn(buildkite_workflow("a.yml", "ci"))
    k = key(request, "a.yml")
    await rig.fake.wait_until(lambda: rig.fake.create_calls[("tack:workflow", "a.yml")] == 1)
    rig.proc.kill9()
    await rig.proc.start_serving()
    got = await rig.statuses([k])
    assert _names(got["a.yml"])[0] == "pending" and got["a.yml"][-1].status == st.SUCCESS
    assert len(_builds_of(rig.fake, k)) == 1
    assert rig.fake.create_calls[("tack:workflow", "a.yml")] == 1


# Startup


async def test_refused_token_or_org_stops_the_process(tmp_path: Path) -> None:
    """A token Buildkite refuses, or an org it does not know, ends the process with status 2 and one clear line."""
    fake = await fake_buildkite({"ci": STEPS})
    try:
        for env, needle in (
            ({"TACK_BUILDKITE_TOKEN": "bkua_wrong"}, "configuration error: TACK_BUILDKITE_TOKEN was refused"),
            (
                {"TACK_BUILDKITE_ORG": "nobody"},
                "configuration error: TACK_BUILDKITE_ORG 'nobody' is not usable",
            ),
        ):
            proc = BuildkiteProcess(tmp_path, fake.url, env)
            proc.start()
            assert proc.popen is not None
            code = await asyncio.to_thread(proc.popen.wait, 15)
            assert code == 2
            lines = [line for line in proc.output().splitlines() if line.startswith("configuration error")]
            assert len(lines) == 1 and lines[0].startswith(needle), proc.output()[-2000:]
            assert "bkua_" not in lines[0]
            proc.log_path.unlink()
    finally:
        await fake.stop()


async def test_unreachable_api_is_not_serving_until_it_answers(tmp_path: Path) -> None:
    """With Buildkite unreachable the provider stays up but NOT_SERVING, then serves once Buildkite answers."""
    port = free_port()
    proc = BuildkiteProcess(tmp_path, f"http://127.0.0.1:{port}")
    proc.start()
    fake = FakeBuildkite(pipelines={"ci": STEPS}, port=port)
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await health.check(channel, timeout=1)
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            assert await health.check(channel, timeout=1) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert proc.alive()
        await fake.start()
        await wait_serving(proc.address, proc, timeout=15)
    finally:
        proc.kill9()
        await fake.stop()


# Logs


async def _read_log(stub: pb_grpc.ProviderAsyncStub, k: pb.WorkflowKey, sink: list[pb.LogLine]) -> None:
    async for message in stub.Logs(pb.LogsRequest(key=k)):
        sink.extend(message.lines)


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_logs_one_step_per_job_live_and_clean(make_rig: RigFactory) -> None:
    """Each job is one step, followed live while it runs by one shared upstream tail; waiters are hidden; text is clean."""
    steps = [
        {"name": "unit", "step_key": "unit", "command": "pytest -q"},
        {"type": "waiter"},
        {"name": "lint", "step_key": "lint", "command": "ruff check"},
    ]
    rig = await make_rig({"ci": steps})
    request = await rig.spawn(buildkite_workflow("a.yml", "ci"))
    k = key(request, "a.yml")
    await rig.fake.wait_until(lambda: len(rig.fake.builds) == 1)
    build = rig.fake.builds[0]
    first: list[pb.LogLine] = []
    second: list[pb.LogLine] = []
    readers = [asyncio.create_task(_read_log(rig.stub, k, sink)) for sink in (first, second)]
    await asyncio.sleep(0.3)
    assert first == [] and second == [], "nothing is shown before a job starts"

    rig.fake.advance(build, "unit", "running", log_append="\x1b[32mcollecting\x1b[0m\rcollected 3 items\n")
    await _wait_for(lambda: any(line.content == "collected 3 items" for line in first))
    assert first[0].kind == pb.LOG_KIND_CONTROL and first[0].step_status == pb.STEP_STATUS_START
    assert (first[0].content, first[0].step_command, first[0].step_kind) == (
        "unit",
        "pytest -q",
        pb.STEP_KIND_USER,
    )
    await _wait_for(lambda: len(second) >= len(first))
    assert await rig.metric("tack_buildkite_log_tails_active") == 1, "two viewers share one tail"
    rig.fake.advance(build, "unit", None, log_append="\x1b[1mstill\x1b[0m going\r\r\n")
    await _wait_for(lambda: any(line.content == "still going" for line in first))
    assert build.state == "running", "lines arrive while the build runs"

    rig.fake.advance(build, "unit", "passed", log_append="3 passed\n")
    rig.fake.advance(build, "lint", "running", log_append="All checks passed!\n")
    rig.fake.advance(build, "lint", "failed", exit_status=2)
    await asyncio.wait_for(asyncio.gather(*readers), 10)

    assert [(line.content, line.step_id) for line in first] == [
        (line.content, line.step_id) for line in second
    ]
    controls = [
        (line.step_id, pb.StepStatus.Name(line.step_status), line.content)
        for line in first
        if line.kind == pb.LOG_KIND_CONTROL
    ]
    assert controls == [
        (0, "STEP_STATUS_START", "unit"),
        (0, "STEP_STATUS_END", "unit"),
        (1, "STEP_STATUS_START", "lint"),
        (1, "STEP_STATUS_END", "lint"),
    ]
    data = {
        i: [line.content for line in first if line.kind == pb.LOG_KIND_DATA and line.step_id == i]
        for i in (0, 1)
    }
    assert data[0][-3:] == ["collected 3 items", "still going", "3 passed"]
    assert "$ pytest -q" in data[0]
    assert "All checks passed!" in data[1] and data[1][-1] == "exit status 2"
    assert not any("\x1b" in text or "bk;t=" in text or "\r" in text for text in data[0] + data[1])
    log_reads = [r for r in rig.fake.requests if r.path.endswith("/log")]
    assert any("Range" in r.headers for r in log_reads), "running jobs are tailed with suffix ranges"

    replay: list[pb.LogLine] = []
    await asyncio.wait_for(_read_log(rig.stub, k, replay), 10)
    assert [line.content for line in replay] == [line.content for line in first]


# Poll budget (the tracker in-process against the fake, without a provider process)


async def test_polls_back_off_while_a_build_is_unchanged(tmp_path: Path) -> None:
    """An unchanged build is polled ever less often (down to 1/8 of the pace); a state change is still seen."""
    fake = await fake_buildkite({"ci": STEPS})
    store = ProviderStore(str(tmp_path / "t.db"), extension=SCHEMA)
    client = BuildkiteClient(fake.url, DEFAULT_TOKEN, RateLimiter(100_000))
    book = RunBook(store)
    tracker = Tracker(store, book, client, poll_interval=0.1)
    task = asyncio.create_task(tracker.run())
    try:
        ((run, _),) = store.create([(RunKey("knot.test", "r1", "a.yml"), {"org": "acme", "pipeline": "ci"})])
        reply = await client.create_build("acme", "ci", {"commit": "HEAD", "branch": "main"})
        ref = BuildRef.from_build(reply.json(), "acme", "ci")
        assert ref is not None and book.attach(run.id, ref) == "attached"
        await asyncio.sleep(2.0)
        reads = [r for r in fake.requests if r.method == "GET" and r.path.endswith(f"/builds/{ref.number}")]
        assert 3 <= len(reads) <= 7, len(reads)
        fake.advance(fake.builds[0], "unit", "running")
        await fake.wait_until(lambda: (store.get_by_id(run.id) or run).status == st.RUNNING, timeout=3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        store.close()
        await fake.stop()
