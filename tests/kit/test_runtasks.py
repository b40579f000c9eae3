"""Per-run background work: one task per run at a time, tried again with backoff until done."""

from __future__ import annotations

import asyncio

import pytest

from tack_common.supervise import Supervisor
from tack_provider_kit.runtasks import RunTasks, until_done


async def test_one_task_per_run_at_a_time_and_stop_cancels_them() -> None:
    """A second launch for a run under way is refused; another run gets its own task; stop() ends all."""
    supervisor = Supervisor()
    tasks = RunTasks(supervisor, "create")
    blocker = asyncio.Event()

    async def block() -> None:
        await blocker.wait()

    first = tasks.launch(1, block)
    assert first is not None
    assert tasks.launch(1, block) is None
    second = tasks.launch(2, block)
    assert second is not None
    await tasks.stop()
    assert first.cancelled() and second.cancelled()
    done = asyncio.Event()

    async def finish() -> None:
        done.set()

    again = tasks.launch(1, finish)
    assert again is not None
    await asyncio.wait_for(again, 5)
    assert done.is_set()
    await supervisor.close()


async def test_until_done_waits_for_ready_and_retries_until_the_step_says_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing runs before ready is set; a step answering False is tried again after a backoff."""
    monkeypatch.setattr("tack_common.backoff.delay", lambda attempt, base, cap: 0.0)
    ready = asyncio.Event()
    answers = [False, False, True]
    calls: list[bool] = []

    async def step() -> bool:
        calls.append(answers[len(calls)])
        return calls[-1]

    task = asyncio.create_task(until_done(ready, step, max_backoff=1))
    await asyncio.sleep(0.05)
    assert calls == []
    ready.set()
    await asyncio.wait_for(task, 5)
    assert calls == [False, False, True]


async def test_launch_until_done_runs_the_step_of_that_run_until_it_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task calls step(run_id) once ready, again after each False, and ends at the first True."""
    monkeypatch.setattr("tack_common.backoff.delay", lambda attempt, base, cap: 0.0)
    supervisor = Supervisor()
    ready = asyncio.Event()
    ready.set()
    seen: list[int] = []

    async def step(run_id: int) -> bool:
        seen.append(run_id)
        return len(seen) == 2

    task = RunTasks(supervisor, "create").launch_until_done(9, ready, step, max_backoff=1)
    assert task is not None
    await asyncio.wait_for(task, 5)
    assert seen == [9, 9]
    await supervisor.close()
