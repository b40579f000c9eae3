"""A run's log: each Buildkite job of its build is one Tangled step.

What each job shows:

- command (``script``) jobs: a user step named after the job (its command as
  the step command) holding the job's cleaned log; a job that never ran shows
  one line saying why ("not run: skipped"); a job that did not pass ends with
  a line saying how ("exit status 2", "timed out", "canceled"); a job that is
  retried while shown ends "retried", and the new attempt is a step of its own;
- block (``manual``) steps: a one-line step, "waiting for unblock" while
  blocked, then who unblocked it;
- trigger jobs: a one-line step linking the triggered build, then its end state;
- wait steps (``waiter``): not shown.

Steps appear in the build's job order, each once it has started, one after
another (Tangled shows one open step at a time): a job running in parallel
with the one being followed is shown, from its start, when that one ends.
The stream ends once the build has finished and every job was shown.

Upstream reads are shared: one :class:`BuildFeed` per build refreshes the
build (and feeds the status tracker) every ``interval`` while anyone watches,
and one :class:`JobTail` per job polls its log for every viewer of that job,
fetching only the new tail (``Range: bytes=-N``) when Buildkite allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from tack_common import loglines
from tack_common.notify import Notifier
from tack_common.pb import provider_pb2 as pb
from tack_common.supervise import Supervisor
from tack_provider_buildkite import metrics
from tack_provider_buildkite.api import ApiError, Reply, Unreachable
from tack_provider_buildkite.states import JOB_RUNNING, JOB_TERMINAL, build_is_final, job_label, parse_time
from tack_provider_kit.logtext import LogCleaner, LogText


log = logging.getLogger(__name__)

JSONDict = dict[str, Any]
MIN_SUFFIX = 4096
MAX_SUFFIX = 1 << 20
FINAL_FETCH_TRIES = 3
# A job missing from the build's jobs was retried (only the latest attempt is listed); its log stays readable.
GONE_JOB: JSONDict = {"state": "finished", "started_at": "retried"}
NOT_STARTED = frozenset(
    {
        "pending",
        "waiting",
        "limiting",
        "limited",
        "platform_limiting",
        "platform_limited",
        "scheduled",
        "reserved",
        "assigned",
        "accepted",
    }
)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)")


def content_range(value: str | None) -> tuple[int, int] | None:
    """(first byte, total size) of a ``Content-Range: bytes S-E/T`` header."""
    found = _CONTENT_RANGE.fullmatch((value or "").strip())
    return None if found is None else (int(found.group(1)), int(found.group(3)))


class Worker(Protocol):
    """Something :class:`Shared` starts for its first user and stops after its last."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


K = TypeVar("K", bound=Hashable)
W = TypeVar("W", bound=Worker)


class Shared(Generic[K, W]):
    """One worker per key, shared by everyone using that key at the same time."""

    def __init__(self) -> None:
        self._items: dict[K, tuple[W, int]] = {}

    @contextlib.asynccontextmanager
    async def use(self, key: K, make: Callable[[], W]) -> AsyncIterator[W]:
        """The key's worker, started on first use, stopped when the last user leaves."""
        if key in self._items:
            worker, users = self._items[key]
        else:
            worker, users = make(), 0
            worker.start()
        self._items[key] = (worker, users + 1)
        try:
            yield worker
        finally:
            worker, users = self._items[key]
            if users <= 1:
                del self._items[key]
                await worker.stop()
            else:
                self._items[key] = (worker, users - 1)

    def __len__(self) -> int:
        return len(self._items)


class BuildFeed:
    """The latest REST view of one build (with jobs), refreshed every ``interval`` until it is final."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[JSONDict | None]],
        interval: float,
        supervisor: Supervisor | None = None,
        name: str = "",
    ) -> None:
        self._fetch = fetch
        self.interval = interval
        self.build: JSONDict | None = None
        self.changed = Notifier()
        self.supervisor = supervisor or Supervisor()
        self.name = f"buildkite_feed:{name or format(id(self), 'x')}"

    def start(self) -> None:
        self.supervisor.spawn("buildkite_feed", self._run, name=self.name, forever=False)

    async def stop(self) -> None:
        await self.supervisor.stop(self.name)

    def job(self, job_id: str) -> JSONDict | None:
        """The job's latest state."""
        for job in jobs_of(self.build or {}):
            if job.get("id") == job_id:
                return job
        return None

    async def _run(self) -> None:
        while True:
            build = await self._fetch()
            if build is not None:
                self.build = build
                self.changed.notify()
                if build_is_final(build):
                    return
            await asyncio.sleep(self.interval)


def jobs_of(build: Mapping[str, Any]) -> list[JSONDict]:
    """The build's jobs that have an id, in order."""
    jobs = build.get("jobs")
    if not isinstance(jobs, list):
        return []
    return [j for j in jobs if isinstance(j, dict) and isinstance(j.get("id"), str)]


class JobTail:
    """One job's log as clean lines, polled once per interval for all its viewers.

    While the job runs, only the log's new end is fetched (a suffix range sized
    from the last growth; a full fetch when that range misses bytes or ranges
    are refused). Once the feed shows the job finished, one final fetch.
    """

    def __init__(
        self,
        feed: BuildFeed,
        job_id: str,
        fetch: Callable[[int | None], Awaitable[Reply]],
        interval: float,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.feed = feed
        self.supervisor = supervisor or feed.supervisor
        self.name = f"buildkite_log_tail:{job_id}:{id(self):x}"
        self.job_id = job_id
        self._fetch = fetch
        self.interval = interval
        self.lines: list[LogText] = []
        self.done = False
        self.changed = Notifier()
        self._cleaner = LogCleaner()
        self._seen = 0
        self._growth = 0
        self._ranges = True

    def start(self) -> None:
        metrics.LOG_TAILS.inc()
        self.supervisor.spawn("buildkite_log_tail", self._run, name=self.name, forever=False)

    async def stop(self) -> None:
        metrics.LOG_TAILS.dec()
        await self.supervisor.stop(self.name)

    def _take(self, reply: Reply) -> bytes:
        """New bytes of a full-log answer."""
        if reply.status in (404, 416):
            return b""
        if reply.status != 200:
            raise ApiError("job_log", reply.status, reply.message())
        if len(reply.body) < self._seen:
            return b""
        return reply.body[self._seen :]

    async def _get(self, suffix: int | None) -> Reply:
        reply = await self._fetch(suffix)
        if reply.status in (200, 206):
            metrics.LOG_BYTES.inc(len(reply.body))
        return reply

    async def _fetch_new(self) -> bytes:
        if self._seen == 0 or not self._ranges:
            return self._take(await self._get(None))
        reply = await self._get(int(min(MAX_SUFFIX, max(MIN_SUFFIX, 2 * self._growth))))
        if reply.status == 206:
            span = content_range(reply.headers.get("Content-Range"))
            if span is not None:
                start, total = span
                if total <= self._seen:
                    return b""
                if start <= self._seen:
                    return reply.body[self._seen - start :]
            return self._take(await self._get(None))
        if reply.status == 400:
            self._ranges = False
            return self._take(await self._get(None))
        return self._take(reply)

    async def _poll(self) -> bool:
        try:
            data = await self._fetch_new()
        except (ApiError, Unreachable) as exc:
            log.warning("job log fetch failed", extra={"job": self.job_id, "error": str(exc)})
            return False
        self._growth = len(data)
        if data:
            self._seen += len(data)
            self.lines.extend(self._cleaner.feed(data))
            self.changed.notify()
        return True

    async def _run(self) -> None:
        final_tries = 0
        while True:
            job = self.feed.job(self.job_id)
            if job is None and self.feed.build is not None:
                job = GONE_JOB
            job = job or {}
            state = job.get("state")
            finished = state in JOB_TERMINAL
            if job.get("started_at") or state in JOB_RUNNING or (finished and state != "skipped"):
                ok = await self._poll()
                if finished and not ok and (final_tries := final_tries + 1) < FINAL_FETCH_TRIES:
                    await asyncio.sleep(self.interval)
                    continue
            if finished:
                self.lines.extend(self._cleaner.flush())
                self.done = True
                self.changed.notify()
                return
            await self.feed.changed.wait(self.interval * 2)


def _ns(ms: int | None) -> int | None:
    return None if ms is None else ms * 1_000_000


def _showable(job: Mapping[str, Any], build_final: bool) -> bool:
    return build_final or job.get("state") not in NOT_STARTED


OUTCOME_LINES = {
    "failed": "exit status {exit}",
    "timed_out": "timed out",
    "canceled": "canceled",
    "expired": "expired before an agent took it",
}


class LogView:
    """Builds one viewer's stream from the shared feeds and tails."""

    def __init__(
        self,
        feed: BuildFeed,
        tails: Shared[tuple[str, str], JobTail],
        build_id: str,
        fetch_log: Callable[[str, int | None], Awaitable[Reply]],
        interval: float,
        run_over: Callable[[], bool],
    ) -> None:
        self.run_over = run_over
        self.feed = feed
        self.tails = tails
        self.build_id = build_id
        self.fetch_log = fetch_log
        self.interval = interval
        self.steps = loglines.StepLog()

    async def stream(self) -> AsyncIterator[Sequence[pb.LogLine]]:
        """Steps of every job as they start, until the build is final and all were shown."""
        shown: set[str] = set()
        while True:
            build = self.feed.build
            if build is None:
                if not await self.feed.changed.wait(30) and self.run_over():
                    yield loglines.synthetic_log("buildkite", "the Buildkite build could not be read")
                    return
                continue
            final = build_is_final(build)
            pending = [j for j in jobs_of(build) if j["id"] not in shown]
            shown.update(j["id"] for j in pending if j.get("type") == "waiter")
            ready = [j for j in pending if j["id"] not in shown and _showable(j, final)]
            if not ready:
                if final and all(j["id"] in shown for j in jobs_of(build)):
                    return
                await self.feed.changed.wait(30)
                continue
            shown.add(ready[0]["id"])
            async for chunk in self._job(ready[0]):
                yield chunk

    async def _until(self, job_id: str, done: Callable[[JSONDict], bool]) -> JSONDict:
        """The job's state once ``done`` holds for it (or the build is final)."""
        while True:
            job = self.feed.job(job_id) or {}
            if done(job) or build_is_final(self.feed.build or {}):
                return job
            await self.feed.changed.wait(30)

    async def _job(self, job: JSONDict) -> AsyncIterator[Sequence[pb.LogLine]]:
        kind = job.get("type")
        if kind == "manual":
            async for chunk in self._block(job):
                yield chunk
        elif kind == "trigger":
            async for chunk in self._trigger(job):
                yield chunk
        else:
            async for chunk in self._script(job):
                yield chunk

    async def _block(self, job: JSONDict) -> AsyncIterator[Sequence[pb.LogLine]]:
        yield self.steps.start(job_label(job), kind=loglines.USER)
        if job.get("state") == "blocked":
            yield [self.steps.data("waiting for unblock")]
            job = await self._until(job["id"], lambda j: j.get("state") != "blocked")
        by = job.get("unblocked_by")
        name = by.get("name") if isinstance(by, dict) else None
        state = job.get("state")
        text = (
            f"unblocked by {name}"
            if name
            else ("unblocked" if state in ("passed", "unblocked") else f"{state}")
        )
        yield [self.steps.data(text), *self.steps.end(ns=parse_time(job.get("unblocked_at")))]

    async def _trigger(self, job: JSONDict) -> AsyncIterator[Sequence[pb.LogLine]]:
        yield self.steps.start(job_label(job), kind=loglines.USER)
        target = job.get("triggered_build")
        url = target.get("web_url") if isinstance(target, dict) else None
        yield [self.steps.data(f"triggered {url}" if url else "trigger step")]
        job = await self._until(job["id"], lambda j: j.get("state") in JOB_TERMINAL)
        yield [self.steps.data(f"trigger {job.get('state', 'ended')}"), *self.steps.end()]

    async def _script(self, job: JSONDict) -> AsyncIterator[Sequence[pb.LogLine]]:
        job_id = job["id"]
        command = job.get("command") if isinstance(job.get("command"), str) else ""
        yield self.steps.start(
            job_label(job), command or "", loglines.USER, ns=parse_time(job.get("started_at"))
        )
        state = job.get("state")
        if state in JOB_TERMINAL and not job.get("started_at"):
            reason = job.get("broken_reason")
            detail = f"not run: {state}" + (f" ({reason})" if isinstance(reason, str) and reason else "")
            yield [self.steps.data(detail), *self.steps.end()]
            return

        def make() -> JobTail:
            return JobTail(
                self.feed,
                job_id,
                lambda suffix: self.fetch_log(job_id, suffix),
                self.interval,
                self.feed.supervisor,
            )

        async with self.tails.use((self.build_id, job_id), make) as tail:
            index = 0
            while True:
                if index < len(tail.lines):
                    batch = tail.lines[index:]
                    index += len(batch)
                    yield [self.steps.data(line.text, ns=_ns(line.ms)) for line in batch]
                    continue
                if tail.done:
                    break
                await tail.changed.wait(30)
        latest = self.feed.job(job_id)
        final = latest or job
        closing: list[pb.LogLine] = []
        outcome = OUTCOME_LINES.get(str(final.get("state"))) if latest is not None else "retried"
        if outcome is not None and not final.get("soft_failed"):
            text = outcome.format(exit=final.get("exit_status"))
            closing.append(self.steps.data(text, loglines.STDERR))
        closing.extend(self.steps.end(ns=parse_time(final.get("finished_at"))))
        yield closing
