"""Scripted runs that drive a build the way agents would, one tick at a time.

The command jobs that are runnable together (or already running) start
together, print a few lines each, then finish in order. ``fail`` fails the first of them and
``timeout`` times it out while the others still run (so the build goes
``failing`` first when there are several); ``slow`` prints a progress bar
with bare ``\\r`` over many ticks, which gives mid-line timestamp markers
once a tick gap exceeds one second. A scenario gives up quietly when the
build is canceled or someone else moves its jobs.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from tests.fakes.buildkite.config import Scenario
from tests.fakes.buildkite.logs import GREEN, RED, RESET
from tests.fakes.buildkite.state import Build, Job, StateError


class Driver(Protocol):
    """What a scenario needs from the fake."""

    def build(self, ref: Build | str | int) -> Build:
        """The live build."""
        ...

    def advance(
        self,
        build: Build | str | int,
        job: str | None = None,
        to: str | None = None,
        *,
        exit_status: int | None = None,
        log_append: str | None = None,
    ) -> Build:
        """Move a job and append output."""
        ...


def _title(job: Job) -> str:
    return job.name or job.step_key or "command"


async def play(driver: Driver, build_id: str, scenario: Scenario, tick_s: float = 0.05) -> None:
    """Run ``scenario`` on the build until it is finished (or taken over)."""
    misfired = False
    previous: list[str] = []
    while True:
        build = driver.build(build_id)
        if build.terminal or build.state == "canceling":
            return
        group = [
            j.id for j in build.current_jobs() if j.type == "script" and j.state in ("scheduled", "running")
        ]
        if not group or group == previous:
            return
        previous = group
        await asyncio.sleep(tick_s)
        _step(driver, build_id, group, "running", f"--- {{title}}\nrunning on {build.branch}\n")
        ticks = 8 if scenario == "slow" else 1
        for tick in range(ticks):
            await asyncio.sleep(tick_s)
            if scenario == "slow":
                percent = (tick + 1) * 100 // ticks
                text = f"\rDownloading dependencies {percent:3d}%" + ("\n" if tick == ticks - 1 else "")
            else:
                text = "collected 3 items\n"
            _step(driver, build_id, group, None, text)
        for index, job_id in enumerate(group):
            await asyncio.sleep(tick_s)
            if index == 0 and not misfired and scenario == "fail":
                misfired = True
                text = f"+++ :rotating_light: Failures\n{RED}1 failed{RESET}, 2 passed in 0.52s\r\n"
                _step(driver, build_id, [job_id], "failed", text, exit_status=1)
            elif index == 0 and not misfired and scenario == "timeout":
                misfired = True
                _step(driver, build_id, [job_id], "timing_out", "still waiting for the database...\n")
                await asyncio.sleep(tick_s)
                _step(driver, build_id, [job_id], "timed_out", None)
            else:
                _step(driver, build_id, [job_id], "passed", f"{GREEN}3 passed{RESET} in 0.41s\r\n")


def _step(
    driver: Driver,
    build_id: str,
    job_ids: list[str],
    to: str | None,
    text: str | None,
    *,
    exit_status: int | None = None,
) -> None:
    for job_id in job_ids:
        job = driver.build(build_id).job(job_id)
        output = None if text is None else text.replace("{title}", _title(job))
        if to is None and job.state != "running":
            continue
        try:
            driver.advance(build_id, job_id, to, exit_status=exit_status, log_append=output)
        except StateError:
            continue
