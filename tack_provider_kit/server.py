"""Running a provider: gRPC server with health and reflection, metrics port, signals, pruning."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client.aiohttp import make_aiohttp_handler

from tack_common import env, logsetup
from tack_common.client import MAX_MESSAGE_BYTES
from tack_common.heap import freeze_startup_heap
from tack_common.pb import provider_pb2 as pb, provider_pb2_grpc as pb_grpc
from tack_common.sqlite import Schema
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

    @classmethod
    def from_env(
        cls, env_map: Mapping[str, str], prefix: str, listen: str, metrics_addr: str, db_path: str
    ) -> ProviderSettings:
        """Read ``<prefix>_`` + LISTEN_ADDR, METRICS_ADDR, DB_PATH, RETENTION_DAYS, TLS_CERT_FILE,
        TLS_KEY_FILE, and TACK_LOG_LEVEL."""
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
        )


ProviderFactory = Callable[[ProviderStore], Provider]


async def _track_health(provider: Provider, health: health_aio.HealthServicer) -> None:
    serving: bool | None = None
    while True:
        ready = provider.ready()
        if ready != serving:
            state = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await health.set("", state)
            await health.set(SERVICE_NAME, state)
            log.info("health", extra={"serving": ready})
            serving = ready
        await asyncio.sleep(0.5)


async def _prune(store: ProviderStore, retention_s: float) -> None:
    while True:
        runs, updates = store.prune(time.time_ns() - int(retention_s * 1e9))
        if runs or updates:
            log.info("pruned", extra={"runs": runs, "updates": updates})
        await asyncio.sleep(3600)


async def serve(
    factory: ProviderFactory, settings: ProviderSettings, stop: asyncio.Event, extension: Schema | None = None
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully (health NOT_SERVING first)."""
    store = ProviderStore(settings.db_path, extension=extension)
    provider = factory(store)
    store.provider = provider.name
    metrics.BUILD_INFO.info({"provider": provider.name, "version": provider.version})

    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_ProviderServicer_to_server(ProviderServicer(provider), server)
    health = health_aio.HealthServicer()
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

    tasks: list[asyncio.Task[None]] = []
    try:
        await provider.startup()
        freeze_startup_heap()
        tasks.append(asyncio.create_task(_track_health(provider, health)))
        tasks.append(asyncio.create_task(_prune(store, settings.retention_s)))
        await stop.wait()
    finally:
        log.info("shutting down", extra={"provider": provider.name})
        await health.enter_graceful_shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop(grace=5)
        await provider.shutdown()
        await runner.cleanup()
        store.close()
        log.info("stopped", extra={"provider": provider.name})


def main(
    prefix: str,
    make_factory: Callable[[Mapping[str, str]], ProviderFactory],
    listen: str,
    metrics_addr: str,
    db_path: str,
    extension: Schema | None = None,
) -> None:
    """Entry point of ``python -m <provider>``: configure from the environment, serve until SIGTERM/SIGINT.

    A configuration error prints one line naming the variable and exits with status 2.
    """
    try:
        settings = ProviderSettings.from_env(os.environ, prefix, listen, metrics_addr, db_path)
        factory = make_factory(os.environ)
    except env.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logsetup.configure(settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(factory, settings, stop, extension)

    asyncio.run(run())
