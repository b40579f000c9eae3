"""The control plane end to end: real processes (control plane, stub provider), simulated Tangled.

An appview-like client reads /events and /logs exactly as Tangled's appview does.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tack_common.timefmt import NS_PER_SECOND
from tack_sandbox.knot import pipeline_record, workflow_entry
from tests.fakes.appview import AppviewClient, parse_rfc3339, render
from tests.support.stack import (
    MEMBER,
    OWNER,
    QUICK,
    STRANGER,
    Stack,
    finished,
    metric,
    registered,
    stub_runs,
    stub_workflow,
)


pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path) as s:
        yield s


async def test_push_and_pull_request_run_every_workflow_to_its_scripted_end(
    stack: Stack, appview: AppviewClient
) -> None:
    """A push and a pull request with two workflows each reach their scripted terminal statuses, in order, with logs."""
    await registered(stack)
    knot = stack.knot.hostname
    push = stack.push(
        MEMBER,
        "hello",
        [
            stub_workflow("build.yml", QUICK),
            stub_workflow("lint.yml", {**QUICK, "outcome": "failed", "exit_code": 3}),
        ],
    )
    pr = stack.pull_request(
        MEMBER,
        "hello",
        [stub_workflow("test.yml", QUICK), stub_workflow("slow.yml", {**QUICK, "outcome": "timeout"})],
    )
    expected = {
        (push, "build.yml"): "success",
        (push, "lint.yml"): "failed",
        (pr, "test.yml"): "success",
        (pr, "slow.yml"): "timeout",
    }
    await appview.wait_for(lambda: all(finished(appview, knot, r, [n]) for r, n in expected), timeout=30)
    assert appview.errors == []
    for (rkey, name), outcome in expected.items():
        records = appview.statuses(knot, rkey, name)
        assert [r["status"] for r in records] == ["pending", "running", outcome]
        seconds = [parse_rfc3339(r["createdAt"]) or 0 for r in records]
        assert all(b - a >= NS_PER_SECOND for a, b in itertools.pairwise(seconds)), records
        assert all(r["createdAt"].endswith("Z") for r in records)
        if outcome == "failed":
            assert (records[-1]["error"], records[-1]["exitCode"]) == ("step 'build' exited with status 3", 3)
        else:
            assert "error" not in records[-1]
            assert "exitCode" not in records[-1]
        log = await appview.read_logs(knot, rkey, name)
        assert (log.http_status, log.close_code, log.errors) == (101, 1000, [])
        steps = render(log.lines)
        assert [(s.name, s.command, s.lines[0], s.ended) for s in steps] == [("build", "make", "ok", True)]


async def test_unauthorized_triggers_spawn_nothing_and_are_counted(
    stack: Stack, appview: AppviewClient
) -> None:
    """Triggers for unregistered repos, from the wrong knot, by non-members or after removal never reach a provider."""
    member_key = stack.add_member(MEMBER)
    stack.add_repo(MEMBER, "hello")
    stack.add_repo(STRANGER, "theirs")  # a non-member's record is never even seen
    await stack.wait_knot_connected()
    knot = stack.knot.hostname
    stack.push(MEMBER, "unknown-repo", [stub_workflow("a.yml", QUICK)])
    stack.push(STRANGER, "theirs", [stub_workflow("a.yml", QUICK)])
    wrong = pipeline_record(
        knot="other.knot.example", did=MEMBER, repo="hello", workflows=[stub_workflow("a.yml", QUICK)]
    )
    stack.knot.emit_pipeline(None, wrong)
    await asyncio.sleep(1.0)
    stack.remove_member(member_key)
    await asyncio.sleep(0.5)
    stack.push(MEMBER, "hello", [stub_workflow("a.yml", QUICK)])
    # The owner's repo that stops naming this spindle is unregistered too.
    repo_key = stack.add_repo(OWNER, "mine")
    await asyncio.sleep(0.5)
    stack.add_repo(OWNER, "mine", spindle="elsewhere.example", rkey=repo_key, op="update")
    await asyncio.sleep(0.5)
    stack.push(OWNER, "mine", [stub_workflow("a.yml", QUICK)])
    # A control: the same knot still works for a registered repo.
    ok = stack.push(OWNER, "mine2", [stub_workflow("a.yml", QUICK)])
    stack.add_repo(OWNER, "mine2")
    await asyncio.sleep(0.5)
    ok = stack.push(OWNER, "mine2", [stub_workflow("a.yml", QUICK)])
    await appview.wait_for(lambda: finished(appview, knot, ok, ["a.yml"]), timeout=20)
    assert {row.pipeline_rkey for row in appview.rows} == {ok}
    assert stub_runs(stack) == 1
    assert await metric(stack, 'tack_pipelines_total{decision="unregistered"}') == 4
    assert await metric(stack, 'tack_pipelines_total{decision="wrong_knot"}') == 1
    assert await metric(stack, 'tack_pipelines_total{decision="not_member"}') == 1


async def test_routing_errors_fail_the_workflow_with_the_reason_and_a_synthetic_log(
    stack: Stack, appview: AppviewClient
) -> None:
    """No `tack:` block, an unknown provider or broken YAML fail that workflow with the cause, also shown in /logs."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    workflows = [
        workflow_entry("plain.yml", "engine: nixery\nsteps: []\n"),
        workflow_entry("unknown.yml", "tack:\n  circleci: {}\n"),
        workflow_entry("broken.yml", "tack: [unclosed\n"),
        stub_workflow("good.yml", QUICK),
    ]
    rkey = stack.push(OWNER, "hello", workflows)
    names = [w["name"] for w in workflows]
    await appview.wait_for(lambda: finished(appview, knot, rkey, names), timeout=20)
    reasons = {
        "plain.yml": "no `tack:` block",
        "unknown.yml": "unknown provider 'circleci'",
        "broken.yml": "cannot read the workflow: invalid YAML",
    }
    for name, reason in reasons.items():
        records = appview.statuses(knot, rkey, name)
        assert [r["status"] for r in records] == ["failed"]
        assert reason in records[0]["error"]
        assert "configured providers: stub" in records[0]["error"] or name == "broken.yml"
        log = await appview.read_logs(knot, rkey, name)
        steps = render(log.lines)
        assert log.close_code == 1000
        assert len(steps) == 1
        assert steps[0].ended
        assert reason in " ".join(steps[0].lines)
    assert appview.latest(knot, rkey, "good.yml") == appview.statuses(knot, rkey, "good.yml")[-1]
    assert stub_runs(stack) == 1


async def test_events_cursor_rules(stack: Stack) -> None:
    """No cursor, 0 or garbage is live only; a past cursor drains the whole backlog (over 100 events), then live."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    first = AppviewClient(stack.cp.http)
    await first.connect_events()
    rkeys = [
        stack.push(OWNER, "hello", [stub_workflow(f"w{i}.yml", QUICK) for i in range(12)]) for _ in range(4)
    ]
    await first.wait_for(
        lambda: all(finished(first, knot, r, [f"w{i}.yml" for i in range(12)]) for r in rkeys), timeout=40
    )
    backlog = len(first.rows)
    assert backlog == 4 * 12 * 3 > 100
    await first.close()
    async with aiohttp.ClientSession() as session:
        for query in ("", "?cursor=0", "?cursor=banana", "?cursor=-5"):
            async with session.ws_connect(f"{stack.cp.http}/events{query}") as ws:
                with pytest.raises(TimeoutError):
                    await ws.receive(timeout=0.5)
    late = AppviewClient(stack.cp.http)
    late.cursor = 1  # an appview whose cursor is far in the past
    await late.connect_events()
    await late.wait_for(lambda: len(late.rows) == backlog, timeout=10)
    assert {r.rkey for r in late.rows} == {r.rkey for r in first.rows}
    live = stack.push(OWNER, "hello", [stub_workflow("live.yml", QUICK)])
    await late.wait_for(lambda: finished(late, knot, live, ["live.yml"]), timeout=20)
    assert late.duplicates == 0
    await late.close()


async def test_logs_unknown_is_404_and_running_streams_live_until_1000(
    stack: Stack, appview: AppviewClient
) -> None:
    """/logs answers 404 without upgrading for unknown workflows; a running one streams live and closes 1000 at its end."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    missing = await appview.read_logs(knot, "3nonexistent22", "build.yml")
    assert missing.http_status == 404
    odd = await appview.read_logs(knot, "..", "build.yml")
    assert odd.http_status == 404
    script = {"queue_seconds": 0, "steps": [{"name": "slow", "output_count": 6, "duration": 2.5}]}
    rkey = stack.push(OWNER, "hello", [stub_workflow("slow.yml", script)])
    await appview.wait_for(
        lambda: (appview.latest(knot, rkey, "slow.yml") or {}).get("status") == "running", timeout=10
    )
    log = await appview.read_logs(knot, rkey, "slow.yml", timeout=15)
    assert (log.http_status, log.close_code, log.errors) == (101, 1000, [])
    [step] = render(log.lines)
    assert step.lines == [f"slow: line {i}" for i in range(1, 7)]
    assert step.ended
    assert (appview.latest(knot, rkey, "slow.yml") or {}).get("status") in ("running", "success")


async def test_bad_knot_frames_are_skipped_and_the_stream_continues(
    stack: Stack, appview: AppviewClient
) -> None:
    """Malformed, binary, oversized and foreign frames from a knot spawn nothing and crash nothing."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    for frame in (
        "not json",
        b"\x00\xff binary",
        '{"rkey": "3abc", "nsid": "sh.tangled.pipeline", "event": {"workflows": []}}',
        '{"rkey": "../../etc", "nsid": "sh.tangled.pipeline", "event": {}}',
        '{"rkey": "3abc", "nsid": "sh.tangled.git.refUpdate", "event": {"ref": "refs/heads/main"}}',
        "[" * 100_000,
        '{"rkey": "3abd", "nsid": "sh.tangled.pipeline", "event": {"triggerMetadata": {"kind": 7}}}',
    ):
        await stack.knot.send_raw(frame)
    stack.knot.emit("sh.tangled.repo.issue", None, {"title": "hello"})
    rkey = stack.push(OWNER, "hello", [stub_workflow("after.yml", QUICK)])
    await appview.wait_for(lambda: finished(appview, knot, rkey, ["after.yml"]), timeout=20)
    assert stub_runs(stack) == 1
    assert stack.cp.alive()
    assert await metric(stack, 'tack_knot_frames_total{outcome="malformed"}') >= 5


async def test_xrpc_owner_secrets_and_webhooks(stack: Stack) -> None:
    """XRPC answers the owner; secrets methods refuse unauthenticated callers (401); webhooks reach only known providers and within the size limit."""
    base = stack.cp.http
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/xrpc/sh.tangled.owner") as resp:
            assert (resp.status, await resp.json()) == (200, {"owner": OWNER})
        async with session.get(
            f"{base}/xrpc/sh.tangled.repo.listSecrets", params={"repo": "at://x/y/z"}
        ) as resp:
            assert (resp.status, (await resp.json())["error"]) == (401, "AuthRequired")
        async with session.post(
            f"{base}/xrpc/sh.tangled.repo.addSecret",
            json={"key": "K", "value": "V"},
            headers={"Authorization": "Bearer e30.e30.AA"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 401
            assert body["message"].startswith("bad_alg")
        async with session.get(f"{base}/xrpc/sh.tangled.nope") as resp:
            assert resp.status == 404
            assert set(await resp.json()) == {"error", "message"}
        async with session.post(f"{base}/webhooks/nobody", data=b"{}") as resp:
            assert resp.status == 404
        async with session.post(f"{base}/webhooks/stub", data=io.BytesIO(b"x" * (2 << 20))) as resp:
            assert resp.status == 413
        async with session.post(f"{base}/webhooks/stub", data=b"{}") as resp:
            assert (resp.status, await resp.json()) == (202, {"ok": True, "queued": True})
    # Stored, then forwarded: the stub takes no webhooks and answers 404, which is counted.
    deadline = asyncio.get_running_loop().time() + 10
    while await metric(stack, 'tack_webhooks_forwarded_total{code="404",provider="stub"}') < 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
