"""Buildkite end to end: knot trigger → control plane → Buildkite provider → (fake) Buildkite → webhooks
to the control plane → statuses on /events and logs on /logs."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tack_common.timefmt import NS_PER_SECOND
from tests.fakes.appview import AppviewClient, parse_rfc3339, render
from tests.fakes.buildkite import DEFAULT_TOKEN
from tests.support.buildkite_harness import WEBHOOK_SECRET
from tests.support.stack import OWNER, TERMINAL, Stack, buildkite_entry, registered


pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, buildkite=True) as s:
        yield s


async def test_push_and_pull_request_become_builds_with_statuses_and_logs(stack: Stack) -> None:
    """Each workflow is one build with the trigger's commit, branch, PR fields and meta_data; it ends with logs."""
    await registered(stack, OWNER)
    assert stack.fake_buildkite is not None
    fake = stack.fake_buildkite
    appview = AppviewClient(stack.cp.http)
    await appview.connect_events()
    knot = stack.knot.hostname
    push = stack.push(
        OWNER, "hello", [buildkite_entry("ci.yml", "app-ci"), buildkite_entry("lint.yml", "app-fail")]
    )
    pr = stack.pull_request(OWNER, "hello", [buildkite_entry("ci.yml", "app-ci")])
    expected = {(push, "ci.yml"): "success", (push, "lint.yml"): "failed", (pr, "ci.yml"): "success"}

    def done() -> bool:
        return all((appview.latest(knot, r, n) or {}).get("status") in TERMINAL for r, n in expected)

    await appview.wait_for(done, timeout=60)
    for (rkey, name), outcome in expected.items():
        statuses = [r["status"] for r in appview.statuses(knot, rkey, name)]
        assert statuses[0] == "pending"
        assert statuses[-1] == outcome
        times = [parse_rfc3339(r["createdAt"]) or 0 for r in appview.statuses(knot, rkey, name)]
        assert all(b - a >= NS_PER_SECOND for a, b in itertools.pairwise(times))
    failed = appview.latest(knot, push, "lint.yml") or {}
    assert failed["exitCode"] == 1
    assert "lint" in failed["error"]

    builds = {(b.meta_data["tack:pipeline_rkey"], b.meta_data["tack:workflow"]): b for b in fake.builds}
    assert len(fake.builds) == 3
    push_record = next(e for e in stack.knot.events if e.rkey == push).event["triggerMetadata"]
    pr_record = next(e for e in stack.knot.events if e.rkey == pr).event["triggerMetadata"]
    push_build = builds[(push, "ci.yml")].request_body or {}
    assert push_build["commit"] == push_record["push"]["newSha"]
    assert push_build["branch"] == "main"
    assert push_build["meta_data"]["tack:knot"] == knot
    assert push_build["env"]["TANGLED_REPO_NAME"] == "hello"
    pr_build = builds[(pr, "ci.yml")].request_body or {}
    assert pr_build["commit"] == pr_record["pullRequest"]["sourceSha"]
    assert pr_build["branch"] == pr_record["pullRequest"]["sourceBranch"]
    assert pr_build["pull_request_base_branch"] == pr_record["pullRequest"]["targetBranch"]

    log = await appview.read_logs(knot, push, "ci.yml", timeout=20)
    assert (log.http_status, log.close_code, log.errors) == (101, 1000, [])
    steps = render(log.lines)
    assert [s.name for s in steps] == [":hammer: build", ":pytest: test"]
    assert all(s.ended for s in steps)
    assert all("\x1b" not in line and "bk;t=" not in line for s in steps for line in s.lines)
    await appview.close()


async def test_a_running_build_streams_its_log_live(stack: Stack) -> None:
    """While a build runs, /logs follows its job live and closes 1000 when the build ends."""
    await registered(stack, OWNER)
    appview = AppviewClient(stack.cp.http)
    await appview.connect_events()
    knot = stack.knot.hostname
    rkey = stack.push(OWNER, "hello", [buildkite_entry("slow.yml", "app-slow")])
    await appview.wait_for(
        lambda: (appview.latest(knot, rkey, "slow.yml") or {}).get("status") == "running", timeout=30
    )
    log = await appview.read_logs(knot, rkey, "slow.yml", timeout=60)
    assert (log.http_status, log.close_code, log.errors) == (101, 1000, [])
    [step] = render(log.lines)
    assert step.name == "slow"
    assert step.ended
    assert len(step.lines) >= 2
    await appview.wait_for(
        lambda: (appview.latest(knot, rkey, "slow.yml") or {}).get("status") == "success", timeout=30
    )
    await appview.close()


async def test_secrets_never_reach_logs_or_metrics(stack: Stack) -> None:
    """After a full run, neither the API token nor the webhook secret appears in any process log or metrics page."""
    await registered(stack, OWNER)
    assert stack.buildkite is not None
    appview = AppviewClient(stack.cp.http)
    await appview.connect_events()
    knot = stack.knot.hostname
    rkey = stack.push(OWNER, "hello", [buildkite_entry("ci.yml", "app-ci")])
    await appview.wait_for(
        lambda: (appview.latest(knot, rkey, "ci.yml") or {}).get("status") in TERMINAL, timeout=60
    )
    await appview.close()
    async with aiohttp.ClientSession() as session:
        pages = []
        for url in (f"{stack.cp.http}/metrics", f"http://127.0.0.1:{stack.buildkite.metrics_port}/metrics"):
            async with session.get(url) as resp:
                pages.append(await resp.text())
    texts = [stack.cp.output(), stack.buildkite.output(), stack.stub.output(), *pages]
    for secret in (DEFAULT_TOKEN, WEBHOOK_SECRET):
        assert not any(secret in text for text in texts)
