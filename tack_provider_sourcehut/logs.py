"""A run's log: the job's setup log as a system step, then one Tangled step per manifest task, in order
(docs/sourcehut-api.md §4, §7).

The setup log (boot, packages, sources) is shown until the first task starts or the job ends. Each task
is shown once it has started, its log file followed while it runs, then closed with how it ended when
it did not pass; a task that never ran (a finished job's later tasks stay ``PENDING``) is one line
saying so, a skipped one (``complete-build``) likewise. Files are read from the last offset with
``Range`` in chunks of at most ``LOG_CHUNK`` bytes, so a viewer holds one chunk and one partial line at
most. The job's state comes from the shared :class:`~tack_provider_sourcehut.tracker.Tracker`, which
reads it every ``log_interval`` while anyone watches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.logtext import LogCleaner
from tack_provider_sourcehut import metrics, states
from tack_provider_sourcehut.api import LOG_CHUNK, ApiError, SourcehutClient, Unreachable
from tack_provider_sourcehut.tracker import Tracker


log = logging.getLogger(__name__)

FINAL_READ_TRIES = 3
NO_LOG = "no log URL: the token may lack builds.sr.ht/LOGS:RO"


def _url(item: Mapping[str, Any]) -> str | None:
    found = item.get("log")
    url = found.get("fullURL") if isinstance(found, Mapping) else None
    return url if isinstance(url, str) and url else None


class LogView:
    """One viewer's stream of one run's job."""

    def __init__(
        self,
        client: SourcehutClient,
        tracker: Tracker,
        run_id: int,
        tasks: Sequence[str],
        interval: float,
        run_over: Callable[[], bool],
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.run_id = run_id
        self.tasks = list(tasks)
        self.interval = interval
        self.run_over = run_over
        self.steps = loglines.StepLog()

    def _job(self) -> dict[str, Any] | None:
        return self.tracker.jobs.get(self.run_id)

    def _task(self, name: str) -> Mapping[str, Any]:
        for task in states.tasks_of(self._job() or {}):
            if task["name"] == name:
                return task
        return {}

    async def _changed(self) -> None:
        """Wait for a new read of this run's job (not of any job: that would read logs as often as every job
        is polled), or ``interval`` seconds."""
        before = self._job()
        deadline = time.monotonic() + self.interval
        while self._job() is before:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self.tracker.changed.wait(left)

    async def stream(self) -> AsyncIterator[Sequence[pb.LogLine]]:
        """The setup log, then each task as it starts, until the job has ended and every task was shown."""
        with self.tracker.watching(self.run_id):
            while self._job() is None:
                if self.run_over():
                    # Nothing polls a finished run's job any more: read it here rather than wait for a poll.
                    for _ in range(FINAL_READ_TRIES):
                        await self.tracker.read(self.run_id, "log")
                        if self._job() is not None or self.tracker.book.job_of(self.run_id) is None:
                            break
                        await self._changed()
                    if self._job() is None:
                        yield loglines.synthetic_log("sourcehut", self._no_job())
                        return
                    break
                await self._changed()
            async for chunk in self._setup():
                yield chunk
            for name in self.tasks:
                async for chunk in self._one_task(name):
                    yield chunk

    def _no_job(self) -> str:
        if self.tracker.book.job_of(self.run_id) is None:
            return "no builds.sr.ht job was created for this run"
        return "the builds.sr.ht job could not be read"

    def _setup_over(self) -> bool:
        job = self._job() or {}
        return states.is_final(job) or any(t.get("status") != "PENDING" for t in states.tasks_of(job))

    async def _setup(self) -> AsyncIterator[Sequence[pb.LogLine]]:
        while _url(self._job() or {}) is None and not self._setup_over():
            await self._changed()
        yield self.steps.start("setup", kind=loglines.SYSTEM)
        async for lines in self._follow(lambda: _url(self._job() or {}), self._setup_over):
            yield lines
        yield self.steps.end()

    async def _one_task(self, name: str) -> AsyncIterator[Sequence[pb.LogLine]]:
        while True:
            task, final = self._task(name), states.is_final(self._job() or {})
            status = task.get("status")
            if status not in (None, "PENDING") or final:
                break
            await self._changed()
        opening = self.steps.start(name, kind=loglines.USER)
        if status == "SKIPPED":
            yield [
                *opening,
                self.steps.data("skipped (an earlier task ran complete-build)"),
                *self.steps.end(),
            ]
            return
        if status in (None, "PENDING"):
            yield [*opening, self.steps.data("not run"), *self.steps.end()]
            return
        yield opening

        def over() -> bool:
            return self._task(name).get("status") in states.TASK_DONE or states.is_final(self._job() or {})

        async for lines in self._follow(lambda: _url(self._task(name)), over):
            yield lines
        closing = []
        if self._task(name).get("status") == "FAILED":
            closing.append(self.steps.data("task failed", loglines.STDERR))
        yield [*closing, *self.steps.end()]

    async def _follow(
        self, url_of: Callable[[], str | None], over: Callable[[], bool]
    ) -> AsyncIterator[Sequence[pb.LogLine]]:
        """A log file's lines from the start, until ``over()`` held before a read that found nothing new."""
        cleaner = LogCleaner()
        offset = 0
        failures = 0
        metrics.LOG_READS.inc()
        try:
            while True:
                ended = over()
                url = url_of()
                if url is None:
                    if ended:
                        yield [self.steps.data(NO_LOG, loglines.STDERR)]
                        return
                    await self._changed()
                    continue
                try:
                    reply = await self.client.log(url, offset)
                except (ApiError, Unreachable) as exc:
                    failures += 1
                    (log.warning if failures == 1 else log.debug)(
                        "log read failed; retrying", extra={"url": url, "error": str(exc)[:300]}
                    )
                    if ended and failures >= FINAL_READ_TRIES:
                        yield [self.steps.data(f"log unavailable: {exc}"[:500], loglines.STDERR)]
                        return
                    await self._changed()
                    continue
                data = b""
                if reply.status == 206:
                    data = reply.body
                elif reply.status == 200:
                    data = reply.body[offset:] if len(reply.body) > offset else b""
                elif reply.status not in (404, 416):
                    failures += 1
                    if ended and failures >= FINAL_READ_TRIES:
                        yield [self.steps.data(f"log unavailable: HTTP {reply.status}", loglines.STDERR)]
                        return
                offset += len(data)
                lines = cleaner.feed(data) if data else []
                if lines:
                    yield [self.steps.data(line.text) for line in lines]
                if len(data) >= LOG_CHUNK:
                    continue
                if ended and reply.status in (200, 206, 404, 416):
                    tail = cleaner.flush()
                    if tail:
                        yield [self.steps.data(line.text) for line in tail]
                    return
                await self._changed()
        finally:
            metrics.LOG_READS.dec()
