"""The sourcehut provider: the kit's Provider, wired to builds.sr.ht's GraphQL API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from tack_common import backoff, loglines, status as st
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.pacing import Pacer
from tack_provider_kit.provider import Provider, Unavailable
from tack_provider_kit.store import JSONDict, ProviderStore, Run
from tack_provider_sourcehut import job_request, workflow_config
from tack_provider_sourcehut.access import problems
from tack_provider_sourcehut.api import ApiError, SourcehutClient, Unreachable
from tack_provider_sourcehut.config import Settings
from tack_provider_sourcehut.logs import LogView
from tack_provider_sourcehut.runs import QUEUED, SUBMITTING, RunBook
from tack_provider_sourcehut.submitter import Submitter
from tack_provider_sourcehut.tracker import Tracker


log = logging.getLogger(__name__)

RECHECK_S = 300.0


class SourcehutProvider(Provider):
    """One builds.sr.ht job per workflow; statuses by polling; each manifest task a log step."""

    name = "sourcehut"
    description = "builds.sr.ht: one job per workflow, of the manifest in tack.sourcehut.manifest"
    capabilities = pb.Capabilities(cancel=True, live_logs=True, webhooks=False)

    def __init__(self, store: ProviderStore, settings: Settings) -> None:
        super().__init__(store)
        self.settings = settings
        self.client = SourcehutClient(
            settings.instance,
            settings.token,
            Pacer(settings.api_budget),
            timeout=settings.request_timeout,
            submit_timeout=settings.submit_timeout,
        )
        self.book = RunBook(store)
        self.tracker = Tracker(
            store, self.book, self.client, settings.poll_interval, settings.log_poll_interval
        )
        self._checked = asyncio.Event()
        self.submitter = Submitter(
            store,
            self.book,
            self.client,
            self.tracker,
            self._checked,
            settings.submit_timeout,
            self.supervisor,
        )
        self.access_problems: list[str] = []

    # Lifecycle

    async def startup(self) -> None:
        """Check the token in the background; resume submissions and polling."""
        await self.client.open()
        self.supervisor.spawn("sourcehut_check", self._check_access)
        self.supervisor.spawn("sourcehut_poll", self.tracker.run)
        for run in self.store.active():
            if run.data.get("phase") in (QUEUED, SUBMITTING) and run.data.get("job") is None:
                self.submitter.launch(run.id)

    async def shutdown(self) -> None:
        """Stop background work; every run's state is durable and resumes at the next start."""
        await self.supervisor.stop("sourcehut_check")
        await self.supervisor.stop("sourcehut_poll")
        await self.submitter.stop()
        await self.client.close()

    def problems(self) -> list[str]:
        """Not serving until builds.sr.ht has accepted the token with the scopes the provider needs, nor
        while job reads keep failing."""
        found = [f"builds.sr.ht access: {problem}" for problem in self.access_problems]
        if not found and not self._checked.is_set():
            found.append("builds.sr.ht has not answered the access check yet (retrying)")
        if self.tracker.failing:
            found.append("builds.sr.ht is failing job reads (retrying)")
        return found

    async def _check_access(self) -> None:
        """Check the token until it works, then every few minutes (tokens expire and are revoked)."""
        attempt = 0
        while True:
            try:
                found = await problems(self.client)
            except (ApiError, Unreachable) as exc:
                attempt += 1
                log.warning("builds.sr.ht unreachable; retrying", extra={"error": str(exc)[:500]})
                await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=30.0))
                continue
            attempt = 0
            if found != self.access_problems:
                for problem in found:
                    log.error("builds.sr.ht access check failed", extra={"problem": problem})
                if not found:
                    log.info("builds.sr.ht access checked", extra={"instance": self.settings.instance})
            self.access_problems = found
            if found:
                self._checked.clear()
            else:
                self._checked.set()
            await asyncio.sleep(30.0 if found else RECHECK_S)

    # Provider contract

    def prepare(self, request: pb.SpawnRequest, workflow: pb.Workflow) -> JSONDict:
        """Validate ``tack.sourcehut`` and its manifest and prepare the job (nothing is sent yet)."""
        config = workflow_config.parse_json(workflow.config_json)
        plan = job_request.plan(request, workflow, config, self.settings.untrusted)
        return {**plan.to_json(), "phase": QUEUED}

    async def start(self, run: Run) -> None:
        """Submit the job in the background."""
        self.submitter.launch(run.id)

    async def cancel(self, run: Run) -> st.Status:
        """Cancel the job (or make sure none is submitted); ``cancelled`` follows when the job says so.

        builds.sr.ht cancels only running jobs: a pending job's cancel is sent again once it runs.
        """
        data = self.book.update(run.id, cancel=True)
        job_id = data.get("job")
        if not isinstance(job_id, int):
            if data.get("phase") == QUEUED:
                self.store.set_status(
                    run.id, st.CANCELLED, "cancelled before the builds.sr.ht job was submitted"
                )
            # phase submitting: the submitter finds (or rules out) the job first, then the poller cancels it.
        else:
            try:
                await self.tracker.cancel(run.id, job_id)
            except (ApiError, Unreachable) as exc:
                raise Unavailable(f"builds.sr.ht did not take the cancel: {exc}") from None
        current = self.store.get_by_id(run.id)
        return st.CANCELLED if current is None else current.status

    async def log(self, run: Run) -> AsyncIterator[Sequence[pb.LogLine]]:
        """Nothing until the job exists; then its setup log and each task, live until the job ends."""
        while self.book.job_of(run.id) is None:
            current = self.store.get_by_id(run.id)
            if current is None or current.terminal:
                reason = (
                    current.error
                    if current is not None and current.error
                    else "no builds.sr.ht job was submitted"
                )
                yield loglines.synthetic_log("sourcehut", reason)
                return
            await self.book.attached.wait(1.0)
        tasks = run.data.get("tasks")
        view = LogView(
            self.client,
            self.tracker,
            run.id,
            [str(t) for t in tasks] if isinstance(tasks, list) else [],
            self.settings.log_poll_interval,
            lambda: self._run_over(run.id),
        )
        async for chunk in view.stream():
            yield chunk

    def _run_over(self, run_id: int) -> bool:
        current = self.store.get_by_id(run_id)
        return current is None or current.terminal
