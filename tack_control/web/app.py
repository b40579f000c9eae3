"""The control plane's aiohttp application: routes, state under AppKeys, background work in cleanup_ctx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from tack_common.faults import FaultInjector
from tack_control import metrics
from tack_control.config import Settings
from tack_control.core import Core
from tack_control.web import ci, events, health, keys, logs, sender, webhooks, xrpc
from tack_control.web.ci import didweb
from tack_control.web.logframes import BUDGET_BYTES, LogFrames


log = logging.getLogger(__name__)

VERSION = "0.1.0"


async def _background(app: web.Application) -> AsyncIterator[None]:
    core = app[keys.CORE]
    core.start()
    yield
    await core.close()


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
    app[keys.WEBHOOK_QUEUE] = core.webhooks
    app[keys.LOG_FRAMES] = LogFrames(BUDGET_BYTES)
    app[keys.OWNER] = settings.owner_did
    app[keys.SOCKETS] = set()
    app[keys.SERVICE_AUTH] = core.service_auth
    app[keys.PDS] = core.pds
    app[keys.REGISTRY] = core.registry
    app[keys.LOAD_WORKFLOWS] = core.load_workflows
    app[keys.FORK_KNOT] = core.fork_knot
    metrics.BUILD_INFO.info({"version": VERSION})
    rewind_ns = int(settings.events_rewind_s * 1e9)
    app.router.add_get("/", root)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
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
        webhooks.make_handler(settings.webhook_max_bytes, settings.webhook_body_timeout_s),
    )
    app.router.add_get("/.well-known/did.json", didweb.make_handler(settings.hostname, settings.dev))
    xrpc.add_routes(app, ci.methods(settings))
    health.export_lag_metrics(core)
    if settings.fault_injection:
        log.warning("fault injection is enabled (TACK_FAULT_INJECTION): for tests only")
        FaultInjector(core.supervisor, core.conn).add_routes(app)
    app.on_shutdown.append(sender.close_all)
    app.cleanup_ctx.append(_background)
    return app
