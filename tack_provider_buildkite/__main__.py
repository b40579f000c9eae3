"""``python -m tack_provider_buildkite``: serve the Buildkite provider."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from tack_provider_buildkite.config import Settings
from tack_provider_buildkite.provider import BuildkiteProvider
from tack_provider_buildkite.runs import SCHEMA
from tack_provider_kit.server import ProviderFactory, main


def run() -> None:
    """Serve until SIGTERM; exit 2 with a one-line reason when Buildkite refuses the token or org."""

    def make_factory(env: Mapping[str, str]) -> ProviderFactory:
        return partial(BuildkiteProvider, settings=Settings.from_env(env))

    main(
        prefix="TACK_BUILDKITE",
        make_factory=make_factory,
        listen="127.0.0.1:7101",
        metrics_addr="127.0.0.1:9101",
        db_path="tack-buildkite.db",
        extension=SCHEMA,
    )


if __name__ == "__main__":
    run()
