"""Running a provider: gRPC server with health and reflection, metrics port, signals, pruning, supervision.

Every background task runs under the provider's supervisor. gRPC health says
SERVING only while the provider is ready, no supervised task is down and the
database takes a real write; the metrics port also serves ``/healthz``
(``?verbose=1``: the JSON health report) and ``/readyz``. A task that exhausts
its failure budget makes the process exit with status 70.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client.aiohttp import make_aiohttp_handler

from tack_common import env, logsetup
from tack_common.client import MAX_MESSAGE_BYTES
from tack_common.faults import FaultInjector
from tack_common.heap import freeze_startup_heap
from tack_common.pb import provider_pb2 as pb, provider_pb2_grpc as pb_grpc
from tack_common.sqlite import Schema
from tack_common.storage import WriteProbe
from tack_common.supervise import EXIT_STATUS, until_first
from tack_provider_kit import metrics
from tack_provider_kit.provider import Provider
from tack_provider_kit.servicer import ProviderServicer
from tack_provider_kit.store import ProviderStore


log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Provider"].full_name


SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
DAY = 86_400.0


@dataclass(frozen=True)
class ProviderSettings:
    """Where a provider listens and keeps its state."""

    listen: tuple[str, int]
    metrics: tuple[str, int]
    db_path: str
    retention_s: float
    log_level: str
    tls: tuple[bytes, bytes] | None = None
    task_give_up_s: float = 300.0
    fault_injection: bool = False

    @classmethod
    def from_env(
        cls, env_map: Mapping[str, str], prefix: str, listen: str, metrics_addr: str, db_path: str
    ) -> ProviderSettings:
        """Read ``<prefix>_`` + LISTEN_ADDR, METRICS_ADDR, DB_PATH, RETENTION_DAYS, TLS_CERT_FILE,
        TLS_KEY_FILE, and TACK_LOG_LEVEL, TACK_TASK_GIVE_UP, TACK_FAULT_INJECTION."""
        cert = env.file_bytes(env_map, f"{prefix}_TLS_CERT_FILE")
        key = env.file_bytes(env_map, f"{prefix}_TLS_KEY_FILE")
        if (cert is None) != (key is None):
            raise env.ConfigError(f"{prefix}_TLS_CERT_FILE and {prefix}_TLS_KEY_FILE must be set together")
        return cls(
            tls=None if cert is None or key is None else (key, cert),
            listen=env.address(env_map, f"{prefix}_LISTEN_ADDR", listen),
            metrics=env.address(env_map, f"{prefix}_METRICS_ADDR", metrics_addr),
            db_path=env.text(env_map, f"{prefix}_DB_PATH", db_path),
            retention_s=env.number(env_map, f"{prefix}_RETENTION_DAYS", 21.0, 0.001, 3650.0) * DAY,
            log_level=env.choice(env_map, "TACK_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            task_give_up_s=env.number(env_map, "TACK_TASK_GIVE_UP", 300.0, 1, 86400),
            fault_injection=env.flag(env_map, "TACK_FAULT_INJECTION"),
        )


ProviderFactory = Callable[[ProviderStore], Provider]


class Readiness:
    """Whether the provider can serve: its own ``ready()``, no supervised task down, a writable database."""

    def __init__(self, provider: Provider, probe: WriteProbe) -> None:
        self.provider = provider
        self.probe = probe

    def problems(self) -> list[str]:
        """Why the provider is not ready (empty when it is)."""
        found = self.provider.problems()
        if not found and not self.provider.ready():
            found = [f"{self.provider.name} is not ready (see its log)"]
        found += self.provider.supervisor.problems()
        self.probe.check(max_age=5.0)
        return found + self.probe.problems()

    def report(self) -> dict[str, Any]:
        """The JSON health report of the metrics port."""
        found = self.problems()
        return {
            "live": True,
            "ready": not found,
            "problems": found,
            "provider": self.provider.name,
            "tasks": self.provider.supervisor.report(),
            "database": self.probe.as_json(),
        }


class _Health(health_aio.HealthServicer):
    """gRPC health whose Check answers NOT_SERVING at once while the provider is not ready."""

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        if response.status == health_pb2.HealthCheckResponse.SERVING and self.readiness.problems():
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return response


async def _track_health(readiness: Readiness, health: health_aio.HealthServicer) -> None:
    """Keep the stored status (what Watch streams) in step with readiness; log each change."""
    serving: bool | None = None
    while True:
        problems = readiness.problems()
        ready = not problems
        if ready != serving:
            state = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await health.set("", state)
            await health.set(SERVICE_NAME, state)
            log.info("health", extra={"serving": ready, "problems": "; ".join(problems)[:500]})
            serving = ready
        await asyncio.sleep(0.5)


async def _prune(store: ProviderStore, retention_s: float) -> None:
    while True:
        runs, updates = store.prune(time.time_ns() - int(retention_s * 1e9))
        if runs or updates:
            log.info("pruned", extra={"runs": runs, "updates": updates})
        await asyncio.sleep(3600)


def _health_routes(app: web.Application, readiness: Readiness) -> None:
    async def healthz(request: web.Request) -> web.Response:
        if request.query.get("verbose", "") not in ("", "0", "false"):
            return web.json_response(readiness.report())
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        found = readiness.problems()
        if found:
            return web.json_response({"ready": False, "problems": found}, status=503)
        return web.json_response({"ready": True})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def serve(
    factory: ProviderFactory, settings: ProviderSettings, stop: asyncio.Event, extension: Schema | None = None
) -> int:
    """Serve until ``stop`` is set, then shut down gracefully (health NOT_SERVING first).

    Returns the process's exit status: 0, 2 when the provider stopped itself (``fatal``, printed), or
    70 when a supervised task exhausted its failure budget.
    """
    store = ProviderStore(settings.db_path, extension=extension)
    provider = factory(store)
    store.provider = provider.name
    supervisor = provider.supervisor
    supervisor.give_up_after = settings.task_give_up_s
    probe = WriteProbe(store.conn)
    readiness = Readiness(provider, probe)
    metrics.BUILD_INFO.info({"provider": provider.name, "version": provider.version})

    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_ProviderServicer_to_server(ProviderServicer(provider), server)
    health = _Health(readiness)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    host, port = settings.listen
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if settings.tls is None:
        bound = server.add_insecure_port(target)
    else:
        bound = server.add_secure_port(target, grpc.ssl_server_credentials([settings.tls]))
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()

    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler())
    _health_routes(app, readiness)
    if settings.fault_injection:
        log.warning("fault injection is enabled (TACK_FAULT_INJECTION): for tests only")
        FaultInjector(supervisor, store.conn).add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics[0], settings.metrics[1])
    await site.start()
    log.info(
        "serving",
        extra={
            "provider": provider.name,
            "grpc_port": bound,
            "metrics_port": settings.metrics[1],
            "pid": os.getpid(),
        },
    )

    try:
        await provider.startup()
        freeze_startup_heap()
        supervisor.spawn("health", lambda: _track_health(readiness, health))
        supervisor.spawn("prune", lambda: _prune(store, settings.retention_s))
        supervisor.spawn("storage", probe.run)
        await until_first(stop.wait(), supervisor.failed.wait())
    finally:
        log.info("shutting down", extra={"provider": provider.name})
        await health.enter_graceful_shutdown()
        await supervisor.close()
        await server.stop(grace=5)
        await provider.shutdown()
        await runner.cleanup()
        store.close()
        log.info("stopped", extra={"provider": provider.name})
    if provider.fatal:
        print(f"configuration error: {provider.fatal}", file=sys.stderr)
        return 2
    return 0 if supervisor.gave_up is None else EXIT_STATUS


def main(
    prefix: str,
    make_factory: Callable[[Mapping[str, str]], ProviderFactory],
    listen: str,
    metrics_addr: str,
    db_path: str,
    extension: Schema | None = None,
) -> None:
    """Entry point of ``python -m <provider>``: configure from the environment, serve until SIGTERM/SIGINT.

    A configuration error prints one line naming the variable and exits with status 2 (also when the
    provider stops itself, :meth:`Provider.stop_process`); a supervised task that exhausted its failure
    budget makes it exit with status 70 (after a graceful shutdown).
    """
    try:
        settings = ProviderSettings.from_env(os.environ, prefix, listen, metrics_addr, db_path)
        factory = make_factory(os.environ)
    except env.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logsetup.configure(settings.log_level)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(factory, settings, stop, extension)

    status = asyncio.run(run())
    if status:
        raise SystemExit(status)
