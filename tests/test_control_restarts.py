"""Crashes mid-run: kill -9 of the control plane or of the stub provider loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_provider_kit import status as st
from tests.fakes.appview import AppviewClient
from tests.stack import OWNER, Stack, stub_workflow
from tests.test_control_e2e import TERMINAL, registered, stub_runs


PIPELINES = 20


def script(i: int) -> dict[str, object]:
    """Runs of different lengths (0.6 to 2.5 s), so a crash catches them in every state."""
    return {
        "queue_seconds": 0.1 * (i % 3),
        "steps": [{"name": "work", "output_count": 3, "duration": 0.6 + 0.1 * i}],
    }


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(tmp_path, control_env={"TACK_DISPATCH_GIVE_UP": "120"})
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@contextlib.asynccontextmanager
async def subscribed_appview(stack: Stack) -> AsyncIterator[AppviewClient]:
    """An appview that stays subscribed, reconnecting by its cursor half a second after each drop."""
    client = AppviewClient(stack.cp.http)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run_events(stop, reconnect_delay=0.5))
    async with asyncio.timeout(10):
        while not client.events_connected:
            await asyncio.sleep(0.02)
    try:
        yield client
    finally:
        stop.set()
        await task
        await client.close()


def check_each_workflow_ended_once(appview: AppviewClient, knot: str, rkeys: list[str]) -> None:
    for rkey in rkeys:
        statuses = [r["status"] for r in appview.statuses(knot, rkey, "run.yml")]
        assert statuses[-1] in TERMINAL, (rkey, statuses)
        assert sum(s in TERMINAL for s in statuses) == 1, (rkey, statuses)
        ranks = [st.rank(st.from_name(s)) for s in statuses]
        assert ranks == sorted(set(ranks)), (rkey, statuses)
    assert appview.errors == []


def all_done(appview: AppviewClient, knot: str, rkeys: list[str]) -> bool:
    return all((appview.latest(knot, r, "run.yml") or {}).get("status") in TERMINAL for r in rkeys)


async def test_kill9_of_the_control_plane_mid_run(stack: Stack) -> None:
    """After kill -9 and restart of the control plane, all 20 workflows end exactly once, none spawned twice."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    async with subscribed_appview(stack) as appview:
        rkeys = [stack.push(OWNER, "hello", [stub_workflow("run.yml", script(i))]) for i in range(PIPELINES)]
        await appview.wait_for(lambda: any(r.status == "running" for r in appview.rows), timeout=15)
        stack.cp.kill9()
        more = [stack.push(OWNER, "hello", [stub_workflow("run.yml", script(i))]) for i in range(3)]
        await asyncio.sleep(0.5)
        await stack.cp.start_ready()
        await appview.wait_for(lambda: all_done(appview, knot, rkeys + more), timeout=60)
        check_each_workflow_ended_once(appview, knot, rkeys + more)
    assert stub_runs(stack) == PIPELINES + 3


async def test_kill9_of_the_stub_provider_mid_run(stack: Stack) -> None:
    """After kill -9 and restart of the provider, all 20 workflows end exactly once, none spawned twice."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    async with subscribed_appview(stack) as appview:
        rkeys = [stack.push(OWNER, "hello", [stub_workflow("run.yml", script(i))]) for i in range(PIPELINES)]
        await appview.wait_for(lambda: any(r.status == "running" for r in appview.rows), timeout=15)
        stack.stub.kill9()
        during = [stack.push(OWNER, "hello", [stub_workflow("run.yml", script(i))]) for i in range(3)]
        await asyncio.sleep(1.0)
        await stack.stub.start_serving()
        await appview.wait_for(lambda: all_done(appview, knot, rkeys + during), timeout=60)
        check_each_workflow_ended_once(appview, knot, rkeys + during)
    assert stub_runs(stack) == PIPELINES + 3
