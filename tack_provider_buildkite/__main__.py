"""``python -m tack_provider_buildkite``: serve the Buildkite provider."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from tack_provider_buildkite.config import Settings
from tack_provider_buildkite.provider import BuildkiteProvider
from tack_provider_buildkite.runs import SCHEMA
from tack_provider_kit.server import ProviderFactory, main
from tack_provider_kit.store import ProviderStore


def run() -> None:
    """Serve until SIGTERM; exit 2 with a one-line reason when Buildkite refuses the token or org."""
    started: list[BuildkiteProvider] = []

    def make_factory(env: Mapping[str, str]) -> ProviderFactory:
        settings = Settings.from_env(env)

        def factory(store: ProviderStore) -> BuildkiteProvider:
            provider = BuildkiteProvider(store, settings)
            started.append(provider)
            return provider

        return factory

    main(
        prefix="TACK_BUILDKITE",
        make_factory=make_factory,
        listen="127.0.0.1:7101",
        metrics_addr="127.0.0.1:9101",
        db_path="tack-buildkite.db",
        extension=SCHEMA,
    )
    if started and started[0].fatal:
        print(f"configuration error: {started[0].fatal}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    run()
