"""Submitting each run's job exactly once, in the background (docs/sourcehut-api.md §3, §5).

Submitting is not idempotent and takes no client key, so the intent is stored before the call (phase
``submitting``). When the outcome is unknown (timeout, reset, 5xx), and after a restart that finds a
run ``submitting``, the token owner's jobs are searched, newest first, for the run's unique tag
before anything is sent again. The search waits until ``submit_timeout`` after the submit was sent
(the longest it could still be in flight), stops at the first job older than that submit (then
nothing was created: submit again), and gives up after ``MAX_PAGES`` pages without deciding (try
again later; never submit while unsure). A submit is sent again without searching only when the
previous one surely did nothing (no connection at all, or a 429).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

from tack_common import status as st
from tack_common.supervise import Supervisor
from tack_provider_kit.runtasks import RunTasks
from tack_provider_kit.store import ProviderStore
from tack_provider_sourcehut import metrics
from tack_provider_sourcehut.api import ApiError, OutcomeUnknown, SourcehutClient, Unreachable, error_text
from tack_provider_sourcehut.job_request import is_run_job
from tack_provider_sourcehut.runs import QUEUED, REJECTED, SUBMITTING, RunBook
from tack_provider_sourcehut.tracker import Tracker


log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
SETTLE_MARGIN = 1.0
CLOCK_SKEW = 120.0
MAX_PAGES = 40


def created_ns(job: Mapping[str, Any]) -> int | None:
    """A job's ``created`` time in Unix ns (None when absent or malformed)."""
    text = job.get("created")
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1e9)


class Submitter:
    """One supervised task per run that still needs its job."""

    def __init__(
        self,
        store: ProviderStore,
        book: RunBook,
        client: SourcehutClient,
        tracker: Tracker,
        ready: asyncio.Event,
        submit_timeout: float,
        supervisor: Supervisor,
    ) -> None:
        self.store = store
        self.book = book
        self.client = client
        self.tracker = tracker
        self.ready = ready
        self.submit_timeout = submit_timeout
        self.supervisor = supervisor
        self._tasks = RunTasks(supervisor, "sourcehut_submit")

    def launch(self, run_id: int) -> None:
        """Start giving the run its job unless that is under way."""
        self._tasks.launch_until_done(run_id, self.ready, self._step, max_backoff=MAX_BACKOFF)

    async def stop(self) -> None:
        """Cancel every submission (their state is durable; the next start resumes them)."""
        await self._tasks.stop()

    def _reject(self, run_id: int, reason: str) -> None:
        metrics.JOBS.labels("rejected").inc()
        data = self.book.update(run_id, phase=REJECTED)
        self.store.set_status(run_id, st.FAILED, f"builds.sr.ht refused the job: {reason}"[:1000], data=data)
        log.warning("submit rejected", extra={"run_id": run_id, "reason": reason[:500]})

    async def _adopt(self, run_id: int, job: Mapping[str, Any], how: str) -> None:
        job_id = job.get("id")
        assert isinstance(job_id, int)
        outcome = self.book.attach(run_id, job_id)
        if outcome == "other":
            log.error("run already has another job", extra={"run_id": run_id, "job": job_id})
            return
        if outcome == "attached":
            metrics.JOBS.labels(how).inc()
            log.info(f"job {how}", extra={"run_id": run_id, "job": job_id})
        self.tracker.due(run_id, "submitted")

    async def _step(self, run_id: int) -> bool:
        """Give the run its job unless it has one or needs none; True when nothing more is to be done."""
        run = self.store.get_by_id(run_id)
        data = self.book.data(run_id)
        if run is None or data is None or run.terminal or data.get("job") or data.get("phase") == REJECTED:
            return True
        return await self._attempt(run_id, data)

    async def _search(self, run_id: int, data: Mapping[str, Any]) -> Mapping[str, Any] | bool | None:
        """The run's job (found), False (surely none: submit), or None (undecided: try later)."""
        sent_ns = data.get("sent_ns")
        sent = sent_ns if isinstance(sent_ns, int) else time.time_ns()
        settle = sent / 1e9 + self.submit_timeout + SETTLE_MARGIN - time.time()
        if settle > 0:
            log.info(
                "waiting before looking for the job", extra={"run_id": run_id, "seconds": round(settle, 1)}
            )
            await asyncio.sleep(settle)
        tag = data["run_tag"]
        oldest = sent - int(CLOCK_SKEW * 1e9)
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            jobs, cursor = await self.client.jobs(cursor)
            for job in jobs:
                if is_run_job(job.get("tags"), tag) and isinstance(job.get("id"), int):
                    return job
                created = created_ns(job)
                if created is not None and created < oldest:
                    return False
            if cursor is None:
                return False
        log.warning("the job list is too long to decide; will look again", extra={"run_id": run_id})
        return None

    async def _attempt(self, run_id: int, data: dict[str, Any]) -> bool:
        """One try at giving the run a job; True when nothing more is to be done."""
        if data.get("phase") == SUBMITTING:
            try:
                found = await self._search(run_id, data)
            except (ApiError, Unreachable) as exc:
                log.warning("looking for the job failed", extra={"run_id": run_id, "error": str(exc)[:500]})
                return False
            if found is None:
                return False
            if found is not False:
                assert not isinstance(found, bool)
                await self._adopt(run_id, found, "found")
                return True
            data = self.book.update(run_id, phase=QUEUED)
        if data.get("cancel"):
            self.store.set_status(run_id, st.CANCELLED, "cancelled before the builds.sr.ht job was submitted")
            return True
        self.book.update(run_id, phase=SUBMITTING, sent_ns=time.time_ns())
        try:
            job = await self.client.submit(
                data["manifest"], data["tags"], data["note"], data.get("secrets"), data.get("visibility")
            )
        except OutcomeUnknown as exc:
            log.warning(
                "submit outcome unknown; will look for the job", extra={"run_id": run_id, "error": str(exc)}
            )
            return False
        except Unreachable as exc:
            log.warning("submit failed; retrying", extra={"run_id": run_id, "error": str(exc)})
            self.book.update(run_id, phase=QUEUED)
            return False
        except ApiError as exc:
            self.book.update(run_id, phase=QUEUED)
            if exc.auth:
                log.error(
                    "builds.sr.ht refused the token; retrying (see `python -m tack_provider_sourcehut check`)",
                    extra={"run_id": run_id, "error": exc.message[:500]},
                )
                return False
            if exc.status >= 500 or exc.status == 429:
                return False
            reason = error_text(exc.errors) if exc.errors else exc.message
            if any("Access denied" in str(e.get("message", "")) for e in exc.errors):
                # The token works but may not do this: retrying cannot help, and the workflow must end.
                needs = "builds.sr.ht/JOBS:RW" + (
                    " and SECRETS:RO (secrets: true)" if data.get("secrets") else ""
                )
                reason = f"{reason} (the token needs {needs})"
            self._reject(run_id, reason)
            return True
        await self._adopt(run_id, job, "submitted")
        return True
