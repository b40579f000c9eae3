"""Background work per run that must get done exactly once (creating a run's build, job or PipelineRun):
one supervised task per run at a time, each trying again with backoff until it is done.

The state is durable in the provider's store, so a task that fails unexpectedly is restarted by the
supervisor, and :meth:`RunTasks.stop` may simply cancel them: the next start resumes them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from tack_common import backoff
from tack_common.supervise import Supervisor


class RunTasks:
    """The tasks of one kind of per-run work (``kind`` names them in supervision metrics and logs)."""

    def __init__(self, supervisor: Supervisor, kind: str) -> None:
        self.supervisor = supervisor
        self.kind = kind
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def launch(self, run_id: int, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None] | None:
        """Start ``work`` for the run unless a task for it is under way (then None)."""
        if run_id in self._tasks:
            return None
        task = self.supervisor.spawn(self.kind, work, name=f"{self.kind}:{run_id}", forever=False)
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))
        return task

    def launch_until_done(
        self,
        run_id: int,
        ready: asyncio.Event,
        step: Callable[[int], Awaitable[bool]],
        *,
        max_backoff: float,
    ) -> asyncio.Task[None] | None:
        """:meth:`launch` a task that runs ``step(run_id)`` whenever ``ready`` is set until it answers True."""
        return self.launch(
            run_id,
            functools.partial(until_done, ready, functools.partial(step, run_id), max_backoff=max_backoff),
        )

    async def stop(self) -> None:
        """Cancel every task."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until_done(
    ready: asyncio.Event, step: Callable[[], Awaitable[bool]], *, max_backoff: float
) -> None:
    """Run ``step`` whenever ``ready`` is set until it answers True (nothing more to do), backing off
    (up to ``max_backoff`` seconds) after each try that answers False."""
    attempt = 0
    while True:
        await ready.wait()
        if await step():
            return
        attempt += 1
        await asyncio.sleep(backoff.delay(attempt, base=1.0, cap=max_backoff))
