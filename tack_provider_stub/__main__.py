"""``python -m tack_provider_stub``: serve the stub provider."""

from __future__ import annotations

from collections.abc import Mapping

from tack_provider_kit.server import ProviderFactory, main
from tack_provider_stub.provider import SCHEMA, StubProvider


def _factory(env: Mapping[str, str]) -> ProviderFactory:
    del env
    return StubProvider


if __name__ == "__main__":
    main(
        prefix="TACK_STUB",
        make_factory=_factory,
        listen="127.0.0.1:7102",
        metrics_addr="127.0.0.1:9102",
        db_path="tack-stub.db",
        extension=SCHEMA,
    )
