"""``python -m tack_control``: serve the spindle."""

from __future__ import annotations

import os
import sys

from aiohttp import web

from tack_control.app import build_app
from tack_control.config import Settings
from tack_provider_kit import logsetup
from tack_provider_kit.env import ConfigError


def serve() -> None:
    """Configure from the environment and serve until SIGTERM/SIGINT (then shut down gracefully)."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logsetup.configure(settings.log_level)
    host, port = settings.listen
    web.run_app(build_app(settings), host=host, port=port, print=None, access_log=None, shutdown_timeout=10)


def main(argv: list[str]) -> None:
    """Dispatch the subcommand."""
    if argv:
        print("usage: python -m tack_control", file=sys.stderr)
        raise SystemExit(2)
    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
