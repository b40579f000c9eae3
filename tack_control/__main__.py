"""``python -m tack_control``: serve the spindle; ``doctor``: check the configuration; ``token``: sign a service-auth token."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from tack_common import logsetup
from tack_common.env import ConfigError
from tack_common.heap import freeze_startup_heap
from tack_common.supervise import EXIT_STATUS, until_first
from tack_control.config import Settings
from tack_control.web import keys, sender
from tack_control.web.app import build_app


log = logging.getLogger("tack_control")


def serve() -> None:
    """Configure from the environment and serve until SIGTERM/SIGINT (then shut down gracefully)."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logsetup.configure(settings.log_level)
    asyncio.run(run(settings))


async def run(settings: Settings) -> None:
    """Serve inside the running loop (gRPC channels bind to it) until a signal asks to stop.

    Exits with status 70 (after shutting down as for SIGTERM) when a supervised
    task exhausted its failure budget, so that the service manager restarts tack.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build_app(settings)
    supervisor = app[keys.CORE].supervisor
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    host, port = settings.listen
    await web.TCPSite(runner, host, port).start()
    freeze_startup_heap()
    log.info("serving", extra={"hostname": settings.hostname, "listen": f"{host}:{port}", "pid": os.getpid()})
    try:
        await until_first(stop.wait(), supervisor.failed.wait())
    finally:
        log.info("shutting down")
        for site in list(runner.sites):
            await site.stop()
        await sender.go_away(app)
        await runner.cleanup()
        log.info("stopped")
    if supervisor.gave_up is not None:
        raise SystemExit(EXIT_STATUS)


def main(argv: list[str]) -> None:
    """Dispatch the subcommand."""
    if argv[:1] == ["doctor"]:
        from tack_control.doctor import main as doctor

        raise SystemExit(doctor(argv[1:]))
    if argv[:1] == ["token"]:
        from tack_control.token import main as token

        raise SystemExit(token(argv[1:]))
    if argv:
        print("usage: python -m tack_control [doctor | token --lxm NSID]", file=sys.stderr)
        raise SystemExit(2)
    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
