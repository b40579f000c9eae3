"""The supervisor (tack_common.supervise): failures logged, counted, restarted; readiness; the budget."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY

from tack_common.supervise import EXIT_STATUS, InjectedFault, Supervisor


def restarts(kind: str) -> float:
    return REGISTRY.get_sample_value("tack_task_restarts_total", {"task": kind}) or 0.0


def down_gauge(kind: str) -> float:
    return REGISTRY.get_sample_value("tack_tasks_down", {"task": kind}) or 0.0


def fast(stable_after: float = 10.0, give_up_after: float = 300.0) -> Supervisor:
    return Supervisor(
        backoff_base=0.05, backoff_cap=0.1, stable_after=stable_after, give_up_after=give_up_after
    )


async def wait_until(predicate: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_a_failing_task_is_logged_counted_restarted_and_finishes_its_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first run raises; the failure is logged with the task's name, counted, the task is down
    while it waits, and the restart does the work."""
    supervisor = fast()
    before = restarts("unit_work")
    done = asyncio.Event()
    attempts = 0

    async def work() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("one odd record")
        done.set()
        await asyncio.Event().wait()

    supervisor.spawn("unit_work", work, name="unit_work:a")
    await wait_until(lambda: bool(supervisor.down()))
    assert not supervisor.ready()
    assert down_gauge("unit_work") == 1
    assert supervisor.problems() == ["task unit_work:a is down (ValueError: one odd record)"]
    await asyncio.wait_for(done.wait(), 2)
    assert supervisor.ready()
    assert restarts("unit_work") == before + 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("supervised task failed")]
    assert record.levelno == logging.ERROR
    assert (record.task, record.kind) == ("unit_work:a", "unit_work")  # type: ignore[attr-defined]
    assert record.exc_info is not None and "one odd record" in str(record.exc_info[1])
    [info] = supervisor.report()
    assert (info["state"], info["restarts"], info["last_error"]) == (
        "running",
        1,
        "ValueError: one odd record",
    )
    await supervisor.close()


async def test_a_task_meant_to_run_forever_that_returns_is_a_failure() -> None:
    """A forever task that returns is restarted and its ending counted, never silently gone."""
    supervisor = fast()
    before = restarts("unit_returns")
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.Event().wait()

    supervisor.spawn("unit_returns", quits)
    await wait_until(lambda: runs == 2)
    assert restarts("unit_returns") == before + 1
    assert "returned, but it should run until stopped" in supervisor.report()[0]["last_error"]
    await supervisor.close()


async def test_a_finished_short_lived_task_is_forgotten_and_stop_is_not_a_failure() -> None:
    """A finite task that completes leaves the supervisor; stopping a task counts nothing."""
    supervisor = fast()
    before = restarts("unit_finite")

    async def short() -> None:
        await asyncio.sleep(0.01)

    supervisor.spawn("unit_finite", short, name="finite", forever=False)
    assert supervisor.running("finite")
    await wait_until(lambda: not supervisor.running("finite"))

    supervisor.spawn("unit_finite", asyncio.Event().wait, name="stopped")
    await asyncio.sleep(0.01)
    await supervisor.stop("stopped")
    assert not supervisor.running("stopped")
    assert restarts("unit_finite") == before
    assert supervisor.ready()


async def test_a_leaked_cancellation_is_a_failure_not_an_ending() -> None:
    """A CancelledError the supervisor did not ask for (an inner operation's) restarts the task."""
    supervisor = fast()
    before = restarts("unit_leak")
    runs = 0

    async def leaks() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError
        await asyncio.Event().wait()

    supervisor.spawn("unit_leak", leaks)
    await wait_until(lambda: runs == 2)
    assert restarts("unit_leak") == before + 1
    await supervisor.close()


async def test_an_injected_fault_interrupts_the_task_where_it_waits_and_the_hold_keeps_it_down() -> None:
    """inject() fails the running task at its await point; restarts fail until the hold ends, then it runs."""
    supervisor = fast()
    before = restarts("unit_inject")
    starts = 0
    cleaned = 0

    async def waits() -> None:
        nonlocal starts, cleaned
        starts += 1
        try:
            await asyncio.Event().wait()
        finally:
            cleaned += 1

    supervisor.spawn("unit_inject", waits, name="unit_inject:1")
    await wait_until(lambda: starts == 1)
    assert supervisor.inject("unit_inject", hold=0.4) == ["unit_inject:1"]
    await wait_until(lambda: bool(supervisor.down()))
    assert cleaned == 1
    assert supervisor.report()[0]["last_error"].startswith("InjectedFault: injected failure of unit_inject")
    await asyncio.sleep(0.3)
    assert starts == 1 and not supervisor.ready()
    await wait_until(lambda: starts == 2 and supervisor.ready(), timeout=3)
    assert restarts("unit_inject") >= before + 2
    await supervisor.close()
    assert cleaned == 2


async def test_a_task_failing_past_the_budget_makes_the_supervisor_give_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failures in a row for longer than give_up_after set gave_up and the failed event (exit 70)."""
    supervisor = fast(give_up_after=0.3, stable_after=5.0)

    async def broken() -> None:
        raise OSError("disk on fire")

    supervisor.spawn("unit_budget", broken)
    await asyncio.wait_for(supervisor.failed.wait(), 3)
    assert supervisor.gave_up is not None and supervisor.gave_up.kind == "unit_budget"
    assert not supervisor.ready()
    assert EXIT_STATUS == 70
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    await supervisor.close()


async def test_a_task_that_runs_stably_between_failures_never_exhausts_the_budget() -> None:
    """Failures separated by stable runs start a new count: no give-up."""
    supervisor = fast(give_up_after=0.3, stable_after=0.05)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)
        raise RuntimeError("occasional")

    supervisor.spawn("unit_flaky", flaky)
    await wait_until(lambda: runs >= 5, timeout=5)
    assert supervisor.gave_up is None
    await supervisor.close()


async def test_the_same_failure_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A task failing the same way over and over logs one line per interval, not one per failure."""
    supervisor = fast()
    runs = 0

    async def full() -> None:
        nonlocal runs
        runs += 1
        raise InjectedFault("database or disk is full")

    supervisor.spawn("unit_quiet", full)
    await wait_until(lambda: runs >= 6, timeout=5)
    logged = [r for r in caplog.records if r.getMessage().startswith("supervised task failed")]
    assert len(logged) == 1
    await supervisor.close()


async def test_two_tasks_may_not_share_a_name() -> None:
    """Names identify tasks in logs and reports, so a duplicate is refused."""
    supervisor = fast()
    supervisor.spawn("unit_dup", asyncio.Event().wait, name="same")
    with pytest.raises(ValueError, match="already running"):
        supervisor.spawn("unit_dup", asyncio.Event().wait, name="same")
    await supervisor.close()
