"""``python -m tack_provider_sourcehut``: serve the sourcehut provider; ``... check``: check the token and exit."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from tack_provider_kit import command
from tack_provider_kit.pacing import Pacer
from tack_provider_kit.server import ProviderFactory, main
from tack_provider_sourcehut import access
from tack_provider_sourcehut.api import ApiError, SourcehutClient, Unreachable
from tack_provider_sourcehut.config import Settings
from tack_provider_sourcehut.provider import SourcehutProvider
from tack_provider_sourcehut.runs import SCHEMA


async def _check(settings: Settings) -> int:
    client = SourcehutClient(
        settings.instance, settings.token, Pacer(settings.api_budget), timeout=settings.request_timeout
    )
    try:
        found, logs_proven = await access.check(client)
    except (ApiError, Unreachable) as exc:
        print(f"FAIL builds.sr.ht at {settings.instance} unreachable or refusing: {exc}")
        return 1
    finally:
        await client.close()
    logs = "logs" if logs_proven else "logs unproven (no job on the account yet: LOGS:RO assumed)"
    return command.report(
        found, f"{settings.instance} accepts the token; it reads jobs (JOBS:RW assumed) and {logs}"
    )


def check() -> int:
    """Check the token as configured; one line per finding, exit 1 when anything is missing."""
    return command.check(Settings.from_env, _check)


def run() -> None:
    """Serve until SIGTERM; exit 2 with a one-line reason when the configuration is unusable."""

    def make_factory(env: Mapping[str, str]) -> ProviderFactory:
        return partial(SourcehutProvider, settings=Settings.from_env(env))

    main(
        prefix="TACK_SOURCEHUT",
        make_factory=make_factory,
        listen="127.0.0.1:7105",
        metrics_addr="127.0.0.1:9105",
        db_path="tack-sourcehut.db",
        extension=SCHEMA,
    )


if __name__ == "__main__":
    command.dispatch(run, check)
