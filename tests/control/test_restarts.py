"""Crashes mid-run: kill -9 of the control plane or of the stub provider loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_common import status as st
from tests.fakes.appview import AppviewClient
from tests.support.stack import OWNER, TERMINAL, Stack, registered, stub_runs, stub_workflow


pytestmark = pytest.mark.e2e


PIPELINES = 20


def script(i: int) -> dict[str, object]:
    """Runs of different lengths (0.6 to 2.5 s), so a crash catches them in every state."""
    return {
        "queue_seconds": 0.1 * (i % 3),
        "steps": [{"name": "work", "output_count": 3, "duration": 0.6 + 0.1 * i}],
    }


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, control_env={"TACK_DISPATCH_GIVE_UP": "120"}) as s:
        yield s


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


@pytest.mark.parametrize("victim", ["control plane", "stub provider"])
async def test_kill9_mid_run_loses_and_duplicates_nothing(stack: Stack, victim: str) -> None:
    """After kill -9 and restart of the control plane or the provider, every workflow ends exactly once and
    none is spawned twice, including those triggered while it was down."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    proc, restart = (
        (stack.cp, stack.cp.start_ready)
        if victim == "control plane"
        else (stack.stub, stack.stub.start_serving)
    )
    async with subscribed_appview(stack) as appview:
        rkeys = [stack.push(OWNER, "hello", [stub_workflow("run.yml", script(i))]) for i in range(PIPELINES)]
        await appview.wait_for(lambda: any(r.status == "running" for r in appview.rows), timeout=15)
        proc.kill9()
        rkeys += [stack.push(OWNER, "hello", [stub_workflow("run.yml", script(i))]) for i in range(3)]
        await asyncio.sleep(0.5)
        await restart()
        await appview.wait_for(lambda: all_done(appview, knot, rkeys), timeout=60)
        check_each_workflow_ended_once(appview, knot, rkeys)
    assert stub_runs(stack) == PIPELINES + 3
