"""FakeBuildkite: the server object tests start, drive and inspect."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.fakes.buildkite.app import RequestRecord, build_app
from tests.fakes.buildkite.config import (
    DEFAULT_ORG_ID,
    DEFAULT_STEPS,
    DEFAULT_TOKEN,
    WEBHOOK_SENDER_ID,
    WEBHOOK_SENDER_NAME,
    JobTemplate,
    JsonObject,
    Knobs,
    PipelineLike,
    RateLimitScope,
    Scenario,
    TemplateLike,
    TokenInfo,
    pipeline_spec,
)
from tests.fakes.buildkite.ratelimit import RateLimiter
from tests.fakes.buildkite.render import FORMATTERS, Renderer
from tests.fakes.buildkite.scenarios import play
from tests.fakes.buildkite.state import Build, Event, Job, StateError, World
from tests.fakes.buildkite.webhooks import (
    TokenMode,
    WebhookDelivery,
    WebhookEmitter,
    WebhookTarget,
    ping_payload,
)


BuildRef = Build | str | int


class FakeBuildkite:
    """A fake Buildkite (REST API v2, job logs, webhooks) on 127.0.0.1, per docs/buildkite-api.md §10.

    ``pipelines`` maps slugs to a ``PipelineSpec`` or a bare list of job
    templates; ``tokens`` maps API tokens to ``TokenInfo`` (by default one
    all-scopes token, ``DEFAULT_TOKEN``). ``clock`` is the wall clock used for
    timestamps, log markers, rate-limit windows and signatures.
    """

    def __init__(
        self,
        org: str = "acme",
        pipelines: Mapping[str, PipelineLike] | None = None,
        tokens: Mapping[str, TokenInfo] | None = None,
        *,
        knobs: Knobs | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        web_base: str = "https://buildkite.com",
        org_name: str | None = None,
        org_id: str = DEFAULT_ORG_ID,
    ) -> None:
        self._knobs = knobs if knobs is not None else Knobs()
        self.clock = clock
        self.tokens: dict[str, TokenInfo] = (
            dict(tokens) if tokens is not None else {DEFAULT_TOKEN: TokenInfo()}
        )
        specs = {slug: pipeline_spec(p) for slug, p in (pipelines or {"ci": DEFAULT_STEPS}).items()}
        self.world = World(org, specs, clock)
        self.org_id = org_id
        self.rng = random.Random(seed)
        self.limiter = RateLimiter(clock)
        self.emitter = WebhookEmitter(self._knobs, clock, self.rng)
        self.renderer = Renderer(
            self.world, f"http://{host}:{port}", web_base, org_id, org_name or org.title()
        )
        self.sender: JsonObject = {"id": WEBHOOK_SENDER_ID, "name": WEBHOOK_SENDER_NAME}
        self.requests: list[RequestRecord] = []
        self.create_calls: Counter[tuple[str, str]] = Counter()
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # lifecycle

    async def start(self) -> None:
        """Listen on ``host`` (an ephemeral port unless one was given) and start the webhook workers."""
        runner = web.AppRunner(build_app(self), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self.renderer.api_base = self.url
        await self.emitter.start()

    async def stop(self) -> None:
        """Stop scenarios, timers and webhook workers, then the server."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.emitter.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def knobs(self) -> Knobs:
        """The runtime switches; change fields, or assign a whole new ``Knobs``."""
        return self._knobs

    @knobs.setter
    def knobs(self, value: Knobs) -> None:
        self._knobs = value
        self.emitter.knobs = value

    @property
    def url(self) -> str:
        """The API base URL (use it where ``https://api.buildkite.com`` would go)."""
        if self._runner is None:
            raise RuntimeError("FakeBuildkite not started")
        return f"http://{self._host}:{self._port}"

    @property
    def org(self) -> str:
        """The organization slug."""
        return self.world.org

    # webhooks

    def add_webhook_target(
        self,
        url: str,
        token: str,
        token_mode: TokenMode = "token",
        events: Iterable[str] | None = None,
        *,
        ping: bool = True,
    ) -> WebhookTarget:
        """Configure a webhook notification service; a ``ping`` goes out unless ``ping=False``."""
        if token_mode not in ("token", "signature"):
            raise ValueError(f"token_mode must be 'token' or 'signature', not {token_mode!r}")
        target = WebhookTarget(url, token, token_mode, None if events is None else frozenset(events))
        self.emitter.add_target(target)
        if ping:
            payload = ping_payload(target, self.org_id, self.org, self.sender)
            self.emitter.enqueue("ping", lambda: payload, only=target)
        return target

    @property
    def webhook_targets(self) -> list[WebhookTarget]:
        """The configured targets."""
        return self.emitter.targets

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every delivery attempted or dropped, in dispatch order."""
        return self.emitter.deliveries

    async def wait_webhooks_idle(self, timeout: float = 5.0) -> None:
        """Wait until every queued webhook has been delivered or dropped."""
        await self.emitter.wait_idle(timeout)

    def emit(self, events: Iterable[Event]) -> None:
        """Queue the webhooks for state changes (called after every mutation)."""
        for event in events:
            self.emitter.enqueue(
                event.name,
                self._payload_maker(event),
                build_id=event.build.id,
                job_id=None if event.job is None else event.job.id,
            )

    def _payload_maker(self, event: Event) -> Callable[[], JsonObject]:
        def make() -> JsonObject:
            fmt = FORMATTERS[self.knobs.webhook_timestamp_format]
            build = self.world.resolve(event.build.id) if self.knobs.webhook_live_build else event.build
            payload: JsonObject = {"event": event.name}
            if event.job is not None:
                payload["job"] = self.renderer.job(build, event.job, fmt)
            payload["build"] = self.renderer.build(build, fmt, webhook=True)
            pipeline = self.world.pipelines[build.pipeline]
            payload["pipeline"] = self.renderer.pipeline(pipeline, fmt, steps=True)
            payload["sender"] = dict(self.sender)
            return payload

        return make

    # introspection

    @property
    def builds(self) -> list[Build]:
        """Every build, oldest first; ``request_body`` is the create body exactly as received."""
        return list(self.world.builds)

    def build(self, ref: BuildRef) -> Build:
        """A build by object, UUID, number (when unique) or ``"pipeline/number"``."""
        return self.world.resolve(ref)

    def job(self, build: BuildRef, job: str | None = None) -> Job:
        """A job by id or step key (or the only command job)."""
        target = self.build(build)
        if job is not None:
            try:
                return target.job(job)
            except KeyError:
                raise KeyError(f"build {target.number} has no job {job!r}") from None
        scripts = [j for j in target.current_jobs() if j.type == "script"]
        if len(scripts) != 1:
            raise StateError(f"build {target.number} has {len(scripts)} command jobs; name one")
        return scripts[0]

    def log(self, build: BuildRef, job: str | None = None) -> bytes:
        """The raw stored log bytes of a job."""
        return bytes(self.job(build, job).log.data)

    def builds_with_meta(self, key: str, value: str) -> list[Build]:
        """Builds whose meta-data has ``key`` set to ``value``."""
        return [b for b in self.world.builds if b.meta_data.get(key) == value]

    def render_build(self, build: BuildRef) -> JsonObject:
        """The build as ``GET`` shows it, with every job attempt."""
        return self.renderer.build(self.build(build), retried=True)

    # driving

    def advance(
        self,
        build: BuildRef,
        job: str | None = None,
        to: str | None = None,
        *,
        exit_status: int | None = None,
        log_append: str | None = None,
    ) -> Build:
        """Move a job (by step key or id; optional when there is one command job) and append output.

        ``to``: ``assigned``, ``accepted``, ``running``, ``passed``, ``failed``,
        ``timing_out``, ``timed_out``, ``canceling`` or ``canceled``; terminal
        targets start the job first if needed. ``log_append`` is raw command output.
        """
        target = self.build(build)
        self.emit(
            self.world.advance(
                target, self.job(target, job), to, exit_status=exit_status, log_append=log_append
            )
        )
        return target

    def add_jobs(self, build: BuildRef, templates: Iterable[TemplateLike]) -> Build:
        """Add jobs to a running build, as a ``pipeline upload`` step does."""
        target = self.build(build)
        normalised = [t if isinstance(t, JobTemplate) else JobTemplate.from_mapping(t) for t in templates]
        self.emit(self.world.add_jobs(target, normalised))
        return target

    def cancel(self, build: BuildRef) -> Build:
        """Cancel as ``PUT .../cancel`` does (raises ``ApiError`` 422 when refused)."""
        target = self.build(build)
        self.emit(self.world.cancel(target))
        if target.state == "canceling" and self.knobs.cancel_delay_s is not None:
            self._spawn(self._finish_cancel_later(target, self.knobs.cancel_delay_s))
        return target

    def finish_cancel(self, build: BuildRef) -> Build:
        """Stop the ``canceling`` jobs now: they and the build end ``canceled``."""
        target = self.build(build)
        self.emit(self.world.finish_cancel(target))
        return target

    def retry_job(self, build: BuildRef, job: str | None = None) -> Job:
        """Retry a failed or timed-out job as ``PUT .../jobs/{id}/retry`` does; returns the new job."""
        target = self.build(build)
        new, events = self.world.retry_job(target, self.job(target, job))
        self.emit(events)
        return new

    def created(self, build: Build) -> None:
        """Hook run after a build is created or rebuilt: starts the auto scenario, if any."""
        spec = self.world.pipelines[build.pipeline].spec
        scenario = spec.auto_scenario or self.knobs.auto_scenario
        if scenario is not None:
            self.start_scenario(build, scenario, self.knobs.auto_tick_s)

    async def run_scenario(self, build: BuildRef, scenario: Scenario, tick_s: float = 0.05) -> Build:
        """Play ``pass``, ``fail``, ``timeout`` or ``slow`` on the build and return when it is done."""
        target = self.build(build)
        await play(self, target.id, scenario, tick_s)
        return target

    def start_scenario(self, build: BuildRef, scenario: Scenario, tick_s: float = 0.05) -> asyncio.Task[None]:
        """Play a scenario in the background."""
        return self._spawn(play(self, self.build(build).id, scenario, tick_s))

    # fault injection

    def force_429(self, n: int = 1, scope: RateLimitScope = "rest_user") -> None:
        """Answer the next ``n`` authenticated API requests with 429 for ``scope``."""
        self.knobs.force_429_next_n = n
        self.knobs.force_429_scope = scope

    def fail_next(self, n: int = 1, status: int = 502, *, after_effect: bool = False) -> None:
        """Answer the next ``n`` API requests with a gateway error (after the effect, if asked)."""
        self.knobs.fail_next_n = n
        self.knobs.fail_status = status
        self.knobs.fail_after_effect = after_effect

    # waiting

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` until it holds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    async def wait_build_state(self, build: BuildRef, *states: str, timeout: float = 5.0) -> Build:
        """Wait until the build is in one of ``states``."""
        target = self.build(build)
        await self.wait_until(lambda: target.state in states, timeout)
        return target

    # internals

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _finish_cancel_later(self, build: Build, delay: float) -> None:
        await asyncio.sleep(delay)
        if build.state == "canceling":
            self.finish_cancel(build)
