"""The control plane's aiohttp application: routes, state under AppKeys, background work in cleanup_ctx."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from tack_control import events_ws, logs_ws, metrics, retention, webhooks, wsutil, xrpc
from tack_control.config import Settings
from tack_control.db import open_db
from tack_control.dispatch import Dispatcher
from tack_control.eventlog import EventLog
from tack_control.intake import Intake
from tack_control.jetstream import JetstreamIngest
from tack_control.knots import KnotConsumers
from tack_control.logframes import BUDGET_BYTES, LogFrames
from tack_control.providers import ProviderClient, StatusWatcher
from tack_control.registry import Registry
from tack_control.statuses import StatusBook
from tack_provider_kit.sqlite import BackgroundCheckpoints


log = logging.getLogger(__name__)

VERSION = "0.1.0"
SETTINGS = web.AppKey("settings", Settings)


class Core:
    """Every long-lived part of the control plane, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn = open_db(settings.db_path)
        self.checkpoints = BackgroundCheckpoints(self.conn, settings.db_path)
        self.events = EventLog(self.conn)
        self.book = StatusBook(self.conn, self.events)
        self.registry = Registry(self.conn, settings.hostname, settings.owner_did)
        self.providers = {
            name: ProviderClient(name, addr, settings.provider_tls_ca)
            for name, addr in settings.providers.items()
        }
        self.dispatcher = Dispatcher(
            self.book,
            self.providers,
            spawn_timeout_s=settings.spawn_timeout_s,
            give_up_s=settings.dispatch_give_up_s,
            reconcile_after_s=settings.reconcile_after_s,
        )
        self.watchers = [StatusWatcher(p, self.book) for p in self.providers.values()]
        self.intake = Intake(
            self.registry, self.book, list(self.providers), settings.default_provider, self.dispatcher.poke
        )
        self.knots = KnotConsumers(self.conn, settings.dev, self.intake.handle, settings.knot_rewind_s)
        self.jetstream = JetstreamIngest(
            settings.jetstream_url,
            self.registry,
            self.book,
            lambda: self.knots.sync(self.registry.knots()),
            settings.jetstream_rewind_s,
        )

    async def release_held_statuses(self) -> None:
        """Publish statuses held for their createdAt second, as their seconds begin.

        A status is only held for a second that has not begun, so the queue is
        read once per second boundary, not again for every status held
        meanwhile (with thousands held, that rereading was most of the work).
        """
        while True:
            due = self.book.release_due()
            metrics.STATUSES_HELD.set(self.book.held())
            if due is None:
                await self.book.held_changed.wait(5.0)
                due = math.floor(time.time()) + 1
            await asyncio.sleep(max(0.0, due - time.time()))

    async def check_providers(self) -> None:
        """Keep each provider's health fresh for /readyz and the metrics."""
        while True:
            await asyncio.gather(*(p.check() for p in self.providers.values()))
            await asyncio.sleep(5)

    async def prune(self) -> None:
        """Drop events and finished workflows older than the retention window, hourly."""
        while True:
            cutoff = time.time_ns() - int(self.settings.retention_days * 86400 * 1e9)
            pruned = retention.prune(self.book, self.events, cutoff)
            if pruned.events or pruned.workflows:
                log.info("pruned", extra=vars(pruned))
            await asyncio.sleep(3600)

    async def close(self) -> None:
        """Stop consumers and close channels and the database."""
        await self.knots.close()
        await self.dispatcher.close()
        for provider in self.providers.values():
            await provider.close()
        self.checkpoints.close()
        self.conn.close()


CORE: web.AppKey[Core] = web.AppKey("core")


async def _background(app: web.Application) -> AsyncIterator[None]:
    core = app[CORE]
    jobs: list[Callable[[], Coroutine[None, None, None]]] = [
        core.release_held_statuses,
        core.dispatcher.run,
        core.check_providers,
        core.prune,
        core.jetstream.run,
        *(w.run for w in core.watchers),
    ]
    tasks = [asyncio.create_task(job(), name=getattr(job, "__qualname__", "job")) for job in jobs]
    core.knots.sync(core.registry.knots())
    for task in tasks:
        task.add_done_callback(_crash_on_failure)
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await core.close()


def _crash_on_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task died", exc_info=task.exception(), extra={"task": task.get_name()})


async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """The database answers and every provider is SERVING (as last checked)."""
    core = request.app[CORE]
    problems = []
    try:
        core.conn.execute("SELECT 1").fetchone()
    except Exception as exc:
        problems.append(f"database: {exc}")
    for provider in core.providers.values():
        if not provider.up:
            problems.append(f"provider {provider.name} ({provider.address}) is not SERVING")
    if problems:
        return web.json_response({"ready": False, "problems": problems}, status=503)
    return web.json_response({"ready": True})


async def root(request: web.Request) -> web.Response:
    """A banner, like stock spindles."""
    providers = ", ".join(request.app[CORE].providers) or "no provider"
    return web.Response(text=f"This is a tack spindle ({VERSION}): Tangled CI handed to {providers}.\n")


def build_app(settings: Settings) -> web.Application:
    """The application for ``settings``; background tasks start with it and stop on cleanup."""
    app = web.Application(client_max_size=settings.webhook_max_bytes)
    core = Core(settings)
    app[SETTINGS] = settings
    app[CORE] = core
    app[events_ws.EVENTS] = core.events
    app[logs_ws.DB] = core.conn
    app[logs_ws.PROVIDERS] = core.providers
    app[logs_ws.FRAMES] = LogFrames(BUDGET_BYTES)
    app[xrpc.OWNER] = settings.owner_did
    app[wsutil.SOCKETS] = weakref.WeakSet()
    metrics.BUILD_INFO.info({"version": VERSION})
    rewind_ns = int(settings.events_rewind_s * 1e9)
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler())
    app.router.add_get(
        "/events", events_ws.make_handler(settings.ping_interval_s, settings.send_timeout_s, rewind_ns)
    )
    app.router.add_get(
        "/logs/{knot}/{rkey}/{workflow}",
        logs_ws.make_handler(
            settings.ping_interval_s, settings.send_timeout_s, settings.logs_connect_timeout_s
        ),
    )
    app.router.add_post(
        "/webhooks/{provider}",
        webhooks.make_handler(settings.webhook_max_bytes, body_timeout=settings.webhook_body_timeout_s),
    )
    xrpc.add_routes(app)
    app.on_shutdown.append(wsutil.close_all)
    app.cleanup_ctx.append(_background)
    return app
