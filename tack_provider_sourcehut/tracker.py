"""Following every unfinished run's job by polling, on a budget (docs/sourcehut-api.md §4, §6, §10).

builds.sr.ht has no completion webhook (its only user webhook event is JOB_CREATED), so one loop reads
``job(id)`` for every run that has a job and is not finished. A job is read when nothing was heard of
it for ``poll_interval`` seconds, an interval that doubles (up to 8x) while reads find it unchanged,
and at once after a submit or a cancel; while someone watches a run's log it is read every
``log_interval``. Reads are background requests, paced by the shared pacer, a few at a time.

Statuses only move forward (the kit's store refuses regressions), so late or repeated reads are
harmless. Reads that keep failing (``FAILING_AFTER`` in a row) make the provider not ready until one
works; that is logged once each way. A job that no longer answers (``job`` null: deleted, or the token lost it) fails its run.
builds.sr.ht cancels only running jobs, so a cancel asked for a pending job is sent when a read finds it
running. A cancel builds.sr.ht took is not sent again for ``CANCEL_RESEND_S``: the API answers CANCELLED
at once but the job reads RUNNING until its runner has killed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from tack_common import status as st
from tack_common.notify import Notifier
from tack_provider_kit.readloop import read_loop
from tack_provider_kit.store import ProviderStore
from tack_provider_sourcehut import metrics, states
from tack_provider_sourcehut.api import ApiError, SourcehutClient, Unreachable, error_text
from tack_provider_sourcehut.runs import RunBook


log = logging.getLogger(__name__)

CONCURRENT_READS = 4
MAX_QUIET_DOUBLINGS = 3
CANCEL_RESEND_S = 60.0
FAILING_AFTER = 3


class Tracker:
    """Reads jobs and keeps every unfinished run's status converging."""

    def __init__(
        self,
        store: ProviderStore,
        book: RunBook,
        client: SourcehutClient,
        poll_interval: float,
        log_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.book = book
        self.client = client
        self.poll_interval = poll_interval
        self.log_interval = log_interval
        self.clock = clock
        self.jobs: dict[int, dict[str, Any]] = {}
        """The latest read of each run's job (for log viewers), by run id."""
        self.changed = Notifier()
        self.watchers: dict[int, int] = {}
        self._heard: dict[int, float] = {}
        self._due: dict[int, str] = {}
        self._wake = asyncio.Event()
        self._quiet: dict[int, int] = {}
        self._last_status: dict[int, object] = {}
        self._unknown: set[str] = set()
        self._partial_logged = False
        self._cancel_taken: dict[int, float] = {}
        self.failing = False
        """True while job reads keep failing (the provider is then not ready)."""
        self._failures = 0

    def due(self, run_id: int, reason: str) -> None:
        """Read the run's job soon."""
        self._due.setdefault(run_id, reason)
        self._wake.set()

    @contextlib.contextmanager
    def watching(self, run_id: int) -> Any:
        """While inside, the run's job is read every ``log_interval`` (someone follows its log)."""
        self.watchers[run_id] = self.watchers.get(run_id, 0) + 1
        self.due(run_id, "log")
        try:
            yield
        finally:
            left = self.watchers[run_id] - 1
            if left:
                self.watchers[run_id] = left
            else:
                del self.watchers[run_id]
                run = self.store.get_by_id(run_id)
                if run is None or run.terminal:
                    self.jobs.pop(run_id, None)

    def observe(self, run_id: int, job: Mapping[str, Any]) -> None:
        """Apply a read of the run's job."""
        self.jobs[run_id] = dict(job)
        self.changed.notify()
        run = self.store.get_by_id(run_id)
        if run is None or run.terminal:
            self._forget(run_id)
            return
        self._heard[run_id] = self.clock()
        if self._last_status.get(run_id) != job.get("status"):
            self._last_status[run_id] = job.get("status")
            self._quiet[run_id] = 0
        verdict = states.verdict(job)
        if verdict.status is None:
            name = str(job.get("status"))[:50]
            if name not in self._unknown:
                self._unknown.add(name)
                log.warning(
                    "unknown job status; treated as not finished", extra={"run": str(run.key), "status": name}
                )
            return
        if st.is_terminal(verdict.status) and run.status == st.PENDING:
            self.store.set_status(run_id, st.RUNNING)
        if self.store.set_status(run_id, verdict.status, verdict.error):
            log.info(
                "status", extra={"run": str(run.key), "status": st.name(verdict.status), "job": job.get("id")}
            )
        if st.is_terminal(verdict.status):
            self._forget(run_id)

    def _forget(self, run_id: int) -> None:
        for memory in (self._heard, self._quiet, self._last_status, self._cancel_taken):
            memory.pop(run_id, None)
        if run_id not in self.watchers:
            self.jobs.pop(run_id, None)

    async def cancel(self, run_id: int, job_id: int) -> bool:
        """Ask builds.sr.ht to cancel the job; True when it took the cancel.

        builds.sr.ht refuses (an error entry) for a job that is not running: the cancel stays asked
        for and is sent again once a read finds the job running. Raises ApiError/Unreachable when
        builds.sr.ht could not be asked.
        """
        self._cancel_taken[run_id] = self.clock()  # also keeps a concurrent read from sending another
        try:
            answer = await self.client.cancel(job_id)
        except BaseException:
            self._cancel_taken.pop(run_id, None)
            raise
        cancelled = answer.data.get("cancel") if isinstance(answer.data, dict) else None
        if isinstance(cancelled, dict):
            self.due(run_id, "cancel")
            return True
        self._cancel_taken.pop(run_id, None)
        if answer.errors and not any("no running jobs" in str(e.get("message", "")) for e in answer.errors):
            raise ApiError("cancel", 200, error_text(answer.errors), answer.errors)
        self.due(run_id, "cancel")
        return False

    async def read(self, run_id: int, reason: str) -> None:
        """Read the run's job and apply it (failures are logged; the next poll tries again)."""
        job_id = self.book.job_of(run_id)
        if job_id is None:
            return
        metrics.POLLS.labels(reason).inc()
        try:
            answer = await self.client.job(job_id, background=reason not in ("cancel", "submitted"))
        except (ApiError, Unreachable) as exc:
            self._read_failed(job_id, str(exc)[:500])
            return
        job = answer.data.get("job") if isinstance(answer.data, dict) else None
        if not isinstance(job, dict):
            if answer.errors:
                self._read_failed(job_id, error_text(answer.errors))
                return
            metrics.JOBS.labels("gone").inc()
            self.store.set_status(
                run_id, st.FAILED, f"builds.sr.ht job #{job_id} is gone (deleted, or the token lost access)"
            )
            return
        self._read_worked()
        if answer.errors and not self._partial_logged:
            self._partial_logged = True
            log.warning(
                "job read partly denied (LOGS:RO missing?); logged once",
                extra={"job": job_id, "error": error_text(answer.errors)},
            )
        self.observe(run_id, job)
        data = self.book.data(run_id) or {}
        taken = self._cancel_taken.get(run_id)
        resend = taken is None or self.clock() - taken >= CANCEL_RESEND_S
        if data.get("cancel") and job.get("status") == "RUNNING" and resend:
            try:
                await self.cancel(run_id, job_id)
            except (ApiError, Unreachable) as exc:
                log.warning("cancel failed; will retry", extra={"job": job_id, "error": str(exc)[:500]})

    def _read_failed(self, job_id: int, error: str) -> None:
        """Count a failed read; log the first few, then once when reads keep failing (not ready meanwhile)."""
        metrics.READ_FAILURES.inc()
        self._failures += 1
        if self.failing:
            log.debug("job read failed", extra={"job": job_id, "error": error})
        elif self._failures >= FAILING_AFTER:
            self.failing = True
            log.error(
                "builds.sr.ht job reads keep failing; not ready until one works",
                extra={"job": job_id, "error": error, "failures": self._failures},
            )
        else:
            log.warning("job read failed", extra={"job": job_id, "error": error})

    def _read_worked(self) -> None:
        if self.failing:
            log.info("builds.sr.ht job reads work again", extra={"failures": self._failures})
        self.failing = False
        self._failures = 0

    def _interval(self, run_id: int) -> float:
        if run_id in self.watchers:
            return min(self.log_interval, self.poll_interval)
        return self.poll_interval * float(2 ** min(self._quiet.get(run_id, 0), MAX_QUIET_DOUBLINGS))

    def _pick(self) -> dict[int, str]:
        now = self.clock()
        picked, self._due = self._due, {}
        for run in self.store.active():
            if run.id in picked or run.data.get("job") is None:
                continue
            if now - self._heard.get(run.id, -float("inf")) >= self._interval(run.id):
                picked[run.id] = "poll"
                self._quiet[run.id] = self._quiet.get(run.id, 0) + 1
        for run_id in picked:
            self._heard[run_id] = now
        return picked

    def _later(self, run_id: int, reason: str) -> None:
        self._due.setdefault(run_id, reason)

    async def run(self) -> None:
        """The polling loop (runs until cancelled; run it supervised)."""
        await read_loop(
            self._pick,
            self.read,
            self._later,
            self._wake,
            concurrency=CONCURRENT_READS,
            tick=min(self.poll_interval, self.log_interval, 1.0),
        )
