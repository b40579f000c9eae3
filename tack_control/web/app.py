"""The control plane's aiohttp application: routes, state under AppKeys, background work in cleanup_ctx."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from tack_control import metrics
from tack_control.config import Settings
from tack_control.core import Core
from tack_control.web import ci, events, keys, logs, sender, webhooks, xrpc
from tack_control.web.ci import didweb
from tack_control.web.logframes import BUDGET_BYTES, LogFrames


log = logging.getLogger(__name__)

VERSION = "0.1.0"


async def _background(app: web.Application) -> AsyncIterator[None]:
    core = app[keys.CORE]
    jobs: list[Callable[[], Coroutine[None, None, None]]] = [
        core.release_held_statuses,
        core.dispatcher.run,
        core.check_providers,
        core.prune,
        core.jetstream.run,
        core.verifier.run,
        core.reconciler.run,
        core.cancels.run,
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
    core = request.app[keys.CORE]
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
    providers = ", ".join(request.app[keys.CORE].providers) or "no provider"
    return web.Response(text=f"This is a tack spindle ({VERSION}): Tangled CI handed to {providers}.\n")


def build_app(settings: Settings) -> web.Application:
    """The application for ``settings``; background tasks start with it and stop on cleanup."""
    app = web.Application(client_max_size=settings.webhook_max_bytes)
    core = Core(settings)
    app[keys.SETTINGS] = settings
    app[keys.CORE] = core
    app[keys.EVENTS] = core.events
    app[keys.DB] = core.conn
    app[keys.PROVIDERS] = core.providers
    app[keys.LOG_FRAMES] = LogFrames(BUDGET_BYTES)
    app[keys.OWNER] = settings.owner_did
    app[keys.SOCKETS] = weakref.WeakSet()
    app[keys.SERVICE_AUTH] = core.service_auth
    app[keys.PDS] = core.pds
    app[keys.REGISTRY] = core.registry
    app[keys.LOAD_WORKFLOWS] = None
    metrics.BUILD_INFO.info({"version": VERSION})
    rewind_ns = int(settings.events_rewind_s * 1e9)
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler())
    app.router.add_get(
        "/events", events.make_handler(settings.ping_interval_s, settings.send_timeout_s, rewind_ns)
    )
    app.router.add_get(
        "/logs/{knot}/{rkey}/{workflow}",
        logs.make_handler(settings.ping_interval_s, settings.send_timeout_s, settings.logs_connect_timeout_s),
    )
    app.router.add_post(
        "/webhooks/{provider}",
        webhooks.make_handler(settings.webhook_max_bytes, body_timeout=settings.webhook_body_timeout_s),
    )
    app.router.add_get("/.well-known/did.json", didweb.make_handler(settings.hostname, settings.dev))
    xrpc.add_routes(app, ci.methods(settings))
    app.on_shutdown.append(sender.close_all)
    app.cleanup_ctx.append(_background)
    return app
