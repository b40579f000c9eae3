"""The loop that keeps a provider's runs in step with its CI: reads of the runs that are due, a few at a time.

A read that fails unexpectedly (the database refused a write) ends the loop with its error: run it
supervised; the runs are read again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping


async def read_loop(
    pick: Callable[[], Mapping[int, str]],
    read: Callable[[int, str], Awaitable[object]],
    later: Callable[[int, str], object],
    wake: asyncio.Event,
    *,
    concurrency: int,
    tick: float,
) -> None:
    """Until cancelled: ``read`` each run ``pick`` names (with why), at most ``concurrency`` at once; a run
    picked again while its read is under way is handed to ``later`` (but for a plain ``"poll"``). Picks
    again when ``wake`` is set, and at least every ``tick`` seconds."""
    limit = asyncio.Semaphore(concurrency)
    inflight: dict[int, asyncio.Task[None]] = {}
    failures: list[Exception] = []

    async def one(run_id: int, reason: str) -> None:
        try:
            async with limit:
                await read(run_id, reason)
        except Exception as exc:
            failures.append(exc)
            wake.set()
        finally:
            inflight.pop(run_id, None)

    try:
        while True:
            if failures:
                raise failures[0]
            for run_id, reason in pick().items():
                if run_id in inflight:
                    if reason != "poll":
                        later(run_id, reason)
                    continue
                inflight[run_id] = asyncio.create_task(one(run_id, reason))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), tick)
            wake.clear()
    finally:
        for task in list(inflight.values()):
            task.cancel()
        await asyncio.gather(*inflight.values(), return_exceptions=True)
