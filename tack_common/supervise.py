"""One supervisor for every long-running task of a process: no task ends silently.

A supervised task that raises (or returns, when it should run until stopped)
is logged with its kind, name and traceback, counted in
``tack_task_restarts_total{task=<kind>}`` and started again after a backoff
(0.5 s doubling to 30 s, jittered). While it waits to start again it is
*down*, and the process reports not ready. The same failure of the same kind
is logged at most once a minute, with the number held back since.

A task that keeps failing (each restart failing again within
``stable_after`` seconds) for ``give_up_after`` seconds exhausts the failure
budget: :attr:`Supervisor.gave_up` is set and the process exits with
:data:`EXIT_STATUS` so that its service manager starts it afresh (compose's
``restart: unless-stopped``, systemd's ``Restart=on-failure``).

Kinds name what a task does (``dispatcher``, ``knot``, ``stub_run``) and are
the metric's only label, so it stays bounded; names tell instances apart
(``knot:knot.example.com``) in logs and in the health report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from tack_common import backoff
from tack_common.throttle import LogThrottle


log = logging.getLogger(__name__)

EXIT_STATUS = 70  # EX_SOFTWARE: the process gave up on a task that kept failing.

TASK_RESTARTS = Counter(
    "tack_task_restarts_total", "Supervised tasks restarted after a failure, by kind.", ["task"]
)
TASKS_DOWN = Gauge("tack_tasks_down", "Supervised tasks waiting to be restarted after a failure.", ["task"])

RUNNING, BACKOFF, DONE, STOPPED = "running", "backoff", "done", "stopped"


class InjectedFault(Exception):
    """A failure injected on purpose (fault injection in tests and chaos runs)."""


class TaskEnded(Exception):
    """A task that should run until stopped returned."""


@dataclass
class TaskInfo:
    """What the supervisor knows about one task."""

    name: str
    kind: str
    forever: bool
    state: str = RUNNING
    restarts: int = 0
    failures: int = 0
    """Failures in a row (each restart failing again before ``stable_after``)."""
    last_error: str = ""
    last_error_at: float = 0.0
    """Wall-clock time of the last failure (Unix seconds)."""
    started: float = 0.0
    failing_since: float | None = None
    """Monotonic time of the first failure of the current run of failures."""
    injected: bool = field(default=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        """The task as the health report shows it."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "state": self.state}
        out["restarts"] = self.restarts
        if self.last_error:
            out["last_error"] = self.last_error
            out["last_error_at"] = round(self.last_error_at, 3)
        return out


Factory = Callable[[], Awaitable[object]]


class Supervisor:
    """Runs, watches and restarts the long-running tasks of one process."""

    def __init__(
        self,
        *,
        stable_after: float = 10.0,
        give_up_after: float = 300.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stable_after = stable_after
        self.give_up_after = give_up_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self.throttle = LogThrottle(log_every, clock)
        self.gave_up: TaskInfo | None = None
        """The task whose failures exhausted the budget; the process should exit with EXIT_STATUS."""
        self.failed = asyncio.Event()
        """Set together with :attr:`gave_up`."""
        self._tasks: dict[str, tuple[TaskInfo, asyncio.Task[None]]] = {}
        self._holds: dict[str, float] = {}
        self._kinds: set[str] = set()

    # Running tasks

    def spawn(
        self, kind: str, factory: Factory, *, name: str | None = None, forever: bool = True
    ) -> asyncio.Task[None]:
        """Run ``factory()`` as a supervised task; a ``forever`` task returning counts as a failure.

        ``name`` (default: ``kind``) must be unique among running tasks.
        Cancelling the returned task stops it (as :meth:`stop` does).
        """
        name = name or kind
        if name in self._tasks:
            raise ValueError(f"a supervised task named {name!r} is already running")
        info = TaskInfo(name=name, kind=kind, forever=forever, started=self.clock())
        if kind not in self._kinds:
            self._kinds.add(kind)
            TASKS_DOWN.labels(kind).set_function(lambda: self._down_count(kind))
        task = asyncio.create_task(self._supervise(info, factory), name=name)
        self._tasks[name] = (info, task)
        task.add_done_callback(lambda _: self._forget(name, task))
        return task

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        current = self._tasks.get(name)
        if current is not None and current[1] is task:
            del self._tasks[name]

    def running(self, name: str) -> bool:
        """Whether a task of this name is supervised now (running or waiting to restart)."""
        return name in self._tasks

    async def stop(self, name: str) -> None:
        """Stop one task (no failure: it is not restarted); a no-op for unknown names."""
        entry = self._tasks.pop(name, None)
        if entry is not None:
            entry[0].state = STOPPED
            entry[1].cancel()
            await asyncio.gather(entry[1], return_exceptions=True)

    def cancel(self, name: str) -> None:
        """Stop one task without waiting for it to finish."""
        entry = self._tasks.pop(name, None)
        if entry is not None:
            entry[0].state = STOPPED
            entry[1].cancel()

    async def close(self) -> None:
        """Stop every task and wait for them."""
        entries = list(self._tasks.values())
        self._tasks.clear()
        for info, task in entries:
            info.state = STOPPED
            task.cancel()
        await asyncio.gather(*(task for _, task in entries), return_exceptions=True)

    async def _supervise(self, info: TaskInfo, factory: Factory) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            info.state, info.started, info.injected = RUNNING, self.clock(), False
            error: BaseException
            try:
                if self._held(info.kind):
                    raise InjectedFault(f"injected failure of {info.kind}")
                await factory()
            except asyncio.CancelledError as exc:
                error = self._injected(info, task) or exc
                if info.state == STOPPED or task.cancelling():
                    info.state = STOPPED
                    raise
                # Unless injected, a CancelledError nobody asked for (leaked from an inner operation) is a bug.
            except Exception as exc:
                error = self._injected(info, task) or exc
            else:
                injected = self._injected(info, task)
                if injected is None and not info.forever:
                    info.state = DONE
                    return
                error = injected or TaskEnded(f"{info.kind} returned, but it should run until stopped")
            await self._failed(info, error)

    @staticmethod
    def _injected(info: TaskInfo, task: asyncio.Task[None]) -> InjectedFault | None:
        """The injected failure this task was sent, if any (its cancellation withdrawn)."""
        if not info.injected:
            return None
        info.injected = False
        task.uncancel()
        return InjectedFault(f"injected failure of {info.kind}")

    async def _failed(self, info: TaskInfo, error: BaseException) -> None:
        now = self.clock()
        if info.failing_since is None or now - info.started >= self.stable_after:
            info.failing_since, info.failures = now, 0
        info.failures += 1
        info.restarts += 1
        info.last_error = f"{type(error).__name__}: {error}"[:500]
        info.last_error_at = time.time()
        info.state = BACKOFF
        TASK_RESTARTS.labels(info.kind).inc()
        delay = backoff.delay(info.failures, self.backoff_base, self.backoff_cap)
        held = self.throttle.allow((info.kind, type(error).__name__, str(error)[:200]))
        if held is not None:
            log.error(
                "supervised task failed; restarting it",
                exc_info=error,
                extra={
                    "task": info.name,
                    "kind": info.kind,
                    "failures_in_a_row": info.failures,
                    "restart_in_s": round(delay, 2),
                    "similar_failures_not_logged": held,
                },
            )
        if now - info.failing_since >= self.give_up_after and self.gave_up is None:
            self.gave_up = info
            log.critical(
                "supervised task keeps failing; giving up so the process is restarted",
                extra={
                    "task": info.name,
                    "kind": info.kind,
                    "failing_for_s": round(now - info.failing_since),
                    "exit_status": EXIT_STATUS,
                },
            )
            self.failed.set()
        await asyncio.sleep(delay)

    # What the process reports

    def tasks(self) -> list[TaskInfo]:
        """Every supervised task, in the order started."""
        return [info for info, _ in self._tasks.values()]

    def down(self) -> list[TaskInfo]:
        """Tasks waiting to restart after a failure."""
        return [info for info, _ in self._tasks.values() if info.state == BACKOFF]

    def _down_count(self, kind: str) -> int:
        return sum(1 for info, _ in self._tasks.values() if info.kind == kind and info.state == BACKOFF)

    def ready(self) -> bool:
        """No task is down and the failure budget is not exhausted."""
        return self.gave_up is None and not self.down()

    def problems(self) -> list[str]:
        """One line per reason the process is not ready because of its tasks."""
        lines = [f"task {info.name} is down ({info.last_error})" for info in self.down()]
        if self.gave_up is not None:
            lines.append(f"task {self.gave_up.name} kept failing; the process is exiting")
        return lines

    def report(self) -> list[dict[str, Any]]:
        """Tasks for the health report: every long-running one, and short-lived ones that ever failed."""
        return [info.as_json() for info in self.tasks() if info.forever or info.restarts]

    # Fault injection

    def inject(self, kind: str, hold: float = 0.0) -> list[str]:
        """Make every running task of ``kind`` fail now, and its restarts fail for ``hold`` seconds.

        The failure is delivered where the task is waiting (as a cancellation
        the supervisor turns into :class:`InjectedFault`). Returns the names hit.
        """
        if hold > 0:
            self._holds[kind] = self.clock() + hold
        hit = []
        for info, task in list(self._tasks.values()):
            if info.kind == kind and info.state == RUNNING and not task.done():
                info.injected = True
                task.cancel()
                hit.append(info.name)
        return hit

    def _held(self, kind: str) -> bool:
        until = self._holds.get(kind)
        if until is None:
            return False
        if self.clock() < until:
            return True
        del self._holds[kind]
        return False

    def kinds(self) -> list[str]:
        """The kinds of the tasks supervised now."""
        return sorted({info.kind for info, _ in self._tasks.values()})


async def until_first(*waits: Coroutine[None, None, object]) -> None:
    """Wait until the first of ``waits`` finishes (a stop signal, a supervisor giving up); cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
