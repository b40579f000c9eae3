"""The Buildkite provider: the kit's Provider, wired to Buildkite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from tack_common import backoff, loglines, status as st
from tack_common.pb import provider_pb2 as pb
from tack_provider_buildkite import build_request, workflow_config
from tack_provider_buildkite.api import ApiError, BuildkiteClient, Unreachable
from tack_provider_buildkite.config import Settings
from tack_provider_buildkite.creator import Creator
from tack_provider_buildkite.logs import BuildFeed, JobTail, LogView, Shared
from tack_provider_buildkite.ratelimit import RateLimiter
from tack_provider_buildkite.runs import QUEUED, REJECTED, BuildRef, RunBook
from tack_provider_buildkite.tracker import Tracker
from tack_provider_buildkite.webhooks import WebhookHandler
from tack_provider_kit.provider import Provider, Unavailable
from tack_provider_kit.store import JSONDict, ProviderStore, Run


log = logging.getLogger(__name__)

REQUIRED_SCOPES = ("read_builds", "write_builds")
MAX_CHECK_BACKOFF = 30.0


class BuildkiteProvider(Provider):
    """One Buildkite build per workflow; status by webhook and poll; each job a log step."""

    name = "buildkite"
    description = "Buildkite: one build per workflow on the pipeline named by tack.buildkite.pipeline"
    capabilities = pb.Capabilities(cancel=True, live_logs=True, webhooks=True)

    def __init__(self, store: ProviderStore, settings: Settings) -> None:
        super().__init__(store)
        self.settings = settings
        self.client = BuildkiteClient(
            settings.api_url,
            settings.token,
            RateLimiter(settings.api_budget),
            create_timeout=settings.create_timeout,
        )
        self.book = RunBook(store)
        self.tracker = Tracker(store, self.book, self.client, settings.poll_interval)
        self._ready = asyncio.Event()
        self.creator = Creator(
            store, self.book, self.client, self.tracker, self._ready, settings.create_timeout, self.supervisor
        )
        self.webhooks = WebhookHandler(
            store,
            self.book,
            self.tracker,
            settings.webhook_mode,
            settings.webhook_secret,
            settings.webhook_max_bytes,
        )
        self.feeds: Shared[str, BuildFeed] = Shared()
        self.tails: Shared[tuple[str, str], JobTail] = Shared()

    # Lifecycle

    async def startup(self) -> None:
        """Check the token and org in the background; resume creating builds and polling."""
        await self.client.open()
        self.supervisor.spawn("buildkite_check", self._check_access, forever=False)
        self.supervisor.spawn("buildkite_poller", self._poll_when_ready)
        for run in self.store.active():
            if run.data.get("build") is None and run.data.get("phase") != REJECTED:
                self.creator.launch(run.id, search_first=True)

    async def shutdown(self) -> None:
        """Stop background work; every run's state is durable and resumes at the next start."""
        await self.supervisor.stop("buildkite_check")
        await self.supervisor.stop("buildkite_poller")
        await self.creator.stop()
        await self.client.close()

    def problems(self) -> list[str]:
        """Not serving until Buildkite has accepted the token and the organization."""
        if self._ready.is_set():
            return []
        return [f"Buildkite has not yet accepted the token and organization {self.settings.org!r} (retrying)"]

    async def _check_access(self) -> None:
        org = self.settings.org
        attempt = 0
        while True:
            try:
                token = await self.client.access_token()
                if token.status in (401, 403, 404):
                    self.stop_process(
                        f"TACK_BUILDKITE_TOKEN was refused by Buildkite (HTTP {token.status}: {token.message()})"
                    )
                    return
                if token.status == 200:
                    scopes = token.json().get("scopes") if isinstance(token.json(), dict) else None
                    if isinstance(scopes, list):
                        missing = [s for s in REQUIRED_SCOPES if s not in scopes]
                        if missing:
                            self.stop_process(
                                f"TACK_BUILDKITE_TOKEN lacks the scope(s) {', '.join(missing)}"
                                " (needs read_builds, write_builds and read_build_logs)"
                            )
                            return
                        if "read_build_logs" not in scopes:
                            log.warning(
                                "TACK_BUILDKITE_TOKEN lacks read_build_logs: job logs will be unavailable"
                            )
                    answer = await self.client.organization(org)
                    if answer.status in (401, 403, 404):
                        self.stop_process(
                            f"TACK_BUILDKITE_ORG {org!r} is not usable with this token"
                            f" (HTTP {answer.status}: {answer.message()})"
                        )
                        return
                    if answer.status == 200:
                        self._ready.set()
                        log.info("Buildkite access checked", extra={"org": org})
                        return
                log.warning("Buildkite check inconclusive; retrying", extra={"status": token.status})
            except (ApiError, Unreachable) as exc:
                log.warning("Buildkite unreachable; retrying", extra={"error": str(exc)})
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=MAX_CHECK_BACKOFF))

    async def _poll_when_ready(self) -> None:
        await self._ready.wait()
        await self.tracker.run()

    # Provider contract

    def prepare(self, request: pb.SpawnRequest, workflow: pb.Workflow) -> JSONDict:
        """Validate ``tack.buildkite`` and prepare the create-build call (nothing is sent yet)."""
        config = workflow_config.parse_json(workflow.config_json)
        plan = build_request.plan(
            request, workflow, config, self.settings.org, self.settings.untrusted_pipelines
        )
        return {"org": plan.org, "pipeline": plan.pipeline, "body": plan.body, "phase": QUEUED}

    async def start(self, run: Run) -> None:
        """Create the build in the background."""
        self.creator.launch(run.id, search_first=False)

    async def cancel(self, run: Run) -> st.Status:
        """Cancel the build (or make sure none is created); ``cancelled`` follows by webhook or poll."""
        data = self.book.update(run.id, cancel=True)
        ref = BuildRef.from_json(data.get("build"))
        if ref is None:
            if data.get("phase") == QUEUED:
                self.store.set_status(
                    run.id, st.CANCELLED, "cancelled before the Buildkite build was created"
                )
        else:
            try:
                await self.tracker.cancel(run.id, ref)
            except (ApiError, Unreachable) as exc:
                raise Unavailable(f"Buildkite did not take the cancel: {exc}") from None
        current = self.store.get_by_id(run.id)
        return st.CANCELLED if current is None else current.status

    async def handle_webhook(self, request: pb.HandleWebhookRequest) -> pb.HandleWebhookResponse:
        """Authenticate and apply a Buildkite delivery."""
        return self.webhooks.handle(request)

    async def log(self, run: Run) -> AsyncIterator[Sequence[pb.LogLine]]:
        """Nothing until the build exists; then each job as a step, live until the build finishes."""
        ref = await self._wait_for_build(run.id)
        if ref is None:
            current = self.store.get_by_id(run.id)
            reason = (
                current.error if current is not None and current.error else "no Buildkite build was created"
            )
            yield loglines.synthetic_log("buildkite", reason)
            return
        interval = self.settings.log_poll_interval

        def make_feed() -> BuildFeed:
            return BuildFeed(lambda: self.tracker.read(run.id, "logs"), interval, self.supervisor, ref.id)

        async with self.feeds.use(ref.id, make_feed) as feed:
            view = LogView(
                feed,
                self.tails,
                ref.id,
                lambda job_id, suffix: self.client.job_log(ref.org, ref.pipeline, ref.number, job_id, suffix),
                interval,
                run_over=lambda: self._run_over(run.id),
            )
            async for chunk in view.stream():
                yield chunk

    def _run_over(self, run_id: int) -> bool:
        current = self.store.get_by_id(run_id)
        return current is None or current.terminal

    async def _wait_for_build(self, run_id: int) -> BuildRef | None:
        while True:
            ref = self.book.build_of(run_id)
            if ref is not None:
                return ref
            if self._run_over(run_id):
                return None
            await self.book.attached.wait(1.0)
