"""The read loop: due runs read a few at a time; a run picked again mid-read is handed on; a failure ends it."""

from __future__ import annotations

import asyncio

import pytest

from tack_provider_kit.readloop import read_loop


async def test_reads_are_bounded_and_a_run_picked_again_mid_read_is_handed_on() -> None:
    """At most `concurrency` reads at once; a cancel picked while its run's read is under way goes to later()."""
    picks = [{1: "poll", 2: "poll", 3: "poll"}, {1: "cancel", 2: "poll"}]
    running = 0
    most = 0
    reads = 0
    release = asyncio.Event()
    later: list[tuple[int, str]] = []
    wake = asyncio.Event()

    def pick() -> dict[int, str]:
        return picks.pop(0) if picks else {}

    async def read(run_id: int, reason: str) -> None:
        nonlocal running, most, reads
        running += 1
        reads += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    loop = asyncio.create_task(
        read_loop(pick, read, lambda r, why: later.append((r, why)), wake, concurrency=2, tick=0.01)
    )
    try:
        for _ in range(100):
            if later:
                break
            await asyncio.sleep(0.01)
        assert later == [(1, "cancel")]
        assert most == 2
        release.set()
        for _ in range(500):
            if running == 0 and reads == 3:
                break
            await asyncio.sleep(0.01)
        assert (running, reads) == (0, 3)
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_a_failed_read_ends_the_loop_with_its_error() -> None:
    """An unexpected error in a read is raised by the loop (for its supervisor to restart it)."""

    async def read(run_id: int, reason: str) -> None:
        raise RuntimeError("database refused a write")

    with pytest.raises(RuntimeError, match="database refused"):
        await asyncio.wait_for(
            read_loop(
                lambda: {7: "poll"}, read, lambda r, why: None, asyncio.Event(), concurrency=1, tick=0.01
            ),
            5,
        )
