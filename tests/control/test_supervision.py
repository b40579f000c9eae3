"""Every supervised task of the control plane and of a provider, failed on purpose (TACK_FAULT_INJECTION):
the failure is logged and counted, the process is not ready while the task is down, the task is
restarted, and the work it was doing gets done. Real processes: the control plane and the stub provider."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from tack_common import client, health
from tests.fakes.appview import AppviewClient
from tests.support.faults import crash, eventually, metric, readiness, report
from tests.support.stack import OWNER, QUICK, Stack, registered, stub_workflow


pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]

HOLD = 3.0
ENV = {"TACK_FAULT_INJECTION": "1"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with Stack(tmp_path_factory.mktemp("supervision"), control_env=ENV, stub_env=ENV) as s:
        await registered(s, OWNER)
        yield s


def stub_base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.stub.metrics_port}"


def logged_failure(output: str, kind: str) -> bool:
    """Whether the process logged a failure of a task of ``kind`` (one JSON line, with its traceback)."""
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("msg", "").startswith("supervised task failed") and record.get("kind") == kind:
                return "InjectedFault" in record.get("exc", "")
    return False


async def status_of(appview: AppviewClient, knot: str, rkey: str, name: str) -> str:
    return str((appview.latest(knot, rkey, name) or {}).get("status", ""))


# What each task of the control plane is doing while it is down, and how to see it done afterwards.

Check = Callable[[], Awaitable[None]]


async def pipeline_work(stack: Stack) -> Check:
    """A pipeline pushed while the task is down; it must still run to success."""
    appview = AppviewClient(stack.cp.http)
    await appview.connect_events()
    rkey = stack.push(OWNER, "hello", [stub_workflow("w.yml", QUICK)])

    async def check() -> None:
        try:
            await appview.wait_for(
                lambda: (appview.latest(stack.knot.hostname, rkey, "w.yml") or {}).get("status") == "success",
                timeout=30,
            )
        finally:
            await appview.close()

    return check


async def repo_work(stack: Stack) -> Check:
    """A repo registered on Jetstream while the follower is down: its pipelines must run afterwards."""
    name = f"late{time.monotonic_ns()}"
    stack.add_repo(OWNER, name)

    async def check() -> None:
        appview = AppviewClient(stack.cp.http)
        await appview.connect_events()

        def seen(rkey: str) -> bool:
            return appview.latest(stack.knot.hostname, rkey, "r.yml") is not None

        try:
            deadline = time.monotonic() + 30
            while True:
                rkey = stack.push(OWNER, name, [stub_workflow("r.yml", QUICK)])
                with contextlib.suppress(TimeoutError):
                    await appview.wait_for(functools.partial(seen, rkey), timeout=2)
                    return
                assert time.monotonic() < deadline, (
                    "the repo written while Jetstream was down never registered"
                )
        finally:
            await appview.close()

    return check


async def webhook_work(stack: Stack) -> Check:
    """A webhook received while the forwarder is down: stored, then forwarded."""
    import aiohttp

    labels = {"provider": "stub", "code": "404"}
    before = await metric(stack.cp.http, "tack_webhooks_forwarded_total", labels)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.cp.http}/webhooks/stub", data=b"{}") as r,
    ):
        assert r.status == 202

    async def forwarded() -> bool:
        return await metric(stack.cp.http, "tack_webhooks_forwarded_total", labels) == before + 1

    async def check() -> None:
        await eventually(forwarded, 20, "the webhook stored while the forwarder was down is forwarded")

    return check


async def health_work(stack: Stack) -> Check:
    """Provider health keeps being checked after the restart."""
    started = time.monotonic()

    async def fresh() -> bool:
        body = await report(stack.cp.http)
        age = body["providers"]["stub"]["checked_s_ago"]
        return age is not None and age < time.monotonic() - started

    async def check() -> None:
        await eventually(fresh, 15, "provider health checked again after the restart")

    return check


def _old_row(db: Path, insert: str, params: tuple[Any, ...], table: str, column: str) -> Check:
    """Write a row older than any retention straight into ``db``; the check waits until it was pruned."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        conn.execute(insert, params)
        conn.commit()

    async def pruned() -> bool:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} < 100").fetchone()[0]) == 0

    async def check() -> None:
        await eventually(pruned, 15, f"the old {table} row is pruned")

    return check


async def prune_work(stack: Stack) -> Check:
    """An event older than the retention, written while pruning is down: pruned after the restart."""
    return _old_row(
        stack.cp.db_path,
        "INSERT INTO events (created, rkey, nsid, frame) VALUES (?, ?, ?, ?)",
        (7, "3old", "x", "{}"),
        "events",
        "created",
    )


async def probe_work(stack: Stack) -> Check:
    """The database write probe runs again after the restart."""

    async def probed() -> bool:
        return await metric(stack.cp.http, "tack_database_writable") == 1

    async def check() -> None:
        await eventually(probed, 15, "the write probe ran")

    return check


CONTROL_TASKS: dict[str, Callable[[Stack], Awaitable[Check]]] = {
    "dispatcher": pipeline_work,
    "statuses": pipeline_work,
    "knot": pipeline_work,
    "watch_status": pipeline_work,
    "jetstream": repo_work,
    "webhook_forwarder": webhook_work,
    "provider_health": health_work,
    "prune": prune_work,
    "storage": probe_work,
}


@pytest.mark.parametrize("kind", sorted(CONTROL_TASKS))
async def test_each_control_plane_task_recovers_from_a_failure(stack: Stack, kind: str) -> None:
    """The task kind fails (and keeps failing for 2 s): logged with its traceback, counted, /readyz 503
    naming it, restarted, and its work (e.g. a pipeline pushed meanwhile) done afterwards."""
    base = stack.cp.http
    before = await metric(base, "tack_task_restarts_total", {"task": kind})
    hit = await crash(base, kind, hold=HOLD)
    assert hit, f"no {kind} task was running"
    work = await CONTROL_TASKS[kind](stack)
    status, body = await readiness(base)
    assert status == 503
    assert any(f"task {hit[0]} is down" in problem for problem in body["problems"]), body
    tasks = {t["name"]: t for t in (await report(base))["tasks"]}
    assert tasks[hit[0]]["state"] == "backoff"
    assert tasks[hit[0]]["last_error"].startswith("InjectedFault")

    async def ready() -> bool:
        return (await readiness(base))[0] == 200

    await eventually(ready, 20, "ready again")
    await work()
    assert await metric(base, "tack_task_restarts_total", {"task": kind}) >= before + 2
    assert logged_failure(stack.cp.output(), kind)
    assert (await report(base))["tasks"] and all(
        t["state"] == "running" for t in (await report(base))["tasks"]
    )


# The stub provider's tasks.


async def serving(stack: Stack) -> bool:
    async with client.channel(stack.stub.address) as channel:
        try:
            return await health.check(channel, timeout=2) == health.SERVING
        except grpc.aio.AioRpcError:
            return False


async def test_a_failed_stub_run_is_restarted_and_finishes_its_run(stack: Stack) -> None:
    """A running stub run fails: NOT_SERVING while it is down, then it resumes where it was and succeeds."""
    appview = AppviewClient(stack.cp.http)
    await appview.connect_events()
    knot = stack.knot.hostname
    script = {"queue_seconds": 0, "steps": [{"name": "long", "output_count": 50, "duration": 3.0}]}
    rkey = stack.push(OWNER, "hello", [stub_workflow("long.yml", script)])
    try:
        await appview.wait_for(
            lambda: (appview.latest(knot, rkey, "long.yml") or {}).get("status") == "running", 20
        )
        before = await metric(stub_base(stack), "tack_task_restarts_total", {"task": "stub_run"})
        hit = await crash(stub_base(stack), "stub_run", hold=HOLD)
        assert hit
        assert not await serving(stack)
        status, body = await readiness(stub_base(stack))
        assert status == 503 and any("stub_run" in p for p in body["problems"])
        await appview.wait_for(
            lambda: (appview.latest(knot, rkey, "long.yml") or {}).get("status") == "success", 30
        )
        assert await serving(stack)
        assert await metric(stub_base(stack), "tack_task_restarts_total", {"task": "stub_run"}) >= before + 1
        assert logged_failure(stack.stub.output(), "stub_run")
        log = await appview.read_logs(knot, rkey, "long.yml", timeout=10)
        texts = [line["content"] for line in log.lines]
        assert "[stub] provider restarted; resuming this step" in texts
        assert log.close_code == 1000
    finally:
        await appview.close()


@pytest.mark.parametrize("kind", ["health", "prune", "storage"])
async def test_each_provider_kit_task_recovers_from_a_failure(stack: Stack, kind: str) -> None:
    """The provider kit's task fails: logged, counted, gRPC health NOT_SERVING and /readyz 503 while it
    is down, SERVING again after the restart, and its work done (health tracked, old runs pruned, probes)."""
    base = stub_base(stack)
    pruned = None
    if kind == "prune":
        pruned = _old_row(
            stack.stub.db_path,
            "INSERT INTO runs (knot, pipeline_rkey, workflow, status, data, created_ns, updated_ns)"
            " VALUES (?, ?, ?, 3, '{}', 1, 1)",
            ("old.example", "3old", "w.yml"),
            "runs",
            "updated_ns",
        )
    before = await metric(base, "tack_task_restarts_total", {"task": kind})
    assert await crash(base, kind, hold=HOLD)
    assert not await serving(stack)
    assert (await readiness(base))[0] == 503
    await eventually(lambda: serving(stack), 20, "SERVING again")
    assert await metric(base, "tack_task_restarts_total", {"task": kind}) >= before + 2
    assert logged_failure(stack.stub.output(), kind)
    if pruned is not None:
        await pruned()
    assert (await report(base))["database"]["writable"]
