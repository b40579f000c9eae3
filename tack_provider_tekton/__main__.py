"""``python -m tack_provider_tekton``: serve the Tekton provider; ``... check``: check cluster access and exit."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from tack_provider_kit import command
from tack_provider_kit.server import ProviderFactory, main
from tack_provider_tekton import access
from tack_provider_tekton.config import Settings
from tack_provider_tekton.kube import Kube, KubeError, Unreachable
from tack_provider_tekton.provider import TektonProvider
from tack_provider_tekton.runs import SCHEMA


async def _check(settings: Settings) -> int:
    kube = Kube(settings)
    try:
        await kube.open()
        found = await access.problems(kube)
    except (KubeError, Unreachable, OSError, ValueError) as exc:
        print(f"FAIL cluster unreachable or refusing: {exc}")
        return 1
    finally:
        await kube.close()
    verbs = sum(len(p.verbs) for p in access.PERMISSIONS)
    return command.report(
        found, f"Tekton v1 served in namespace {settings.namespace}; all {verbs} permissions granted"
    )


def check() -> int:
    """Check the cluster as configured; one line per finding, exit 1 when anything is missing."""
    return command.check(Settings.from_env, _check)


def run() -> None:
    """Serve until SIGTERM; exit 2 with a one-line reason when the cluster configuration cannot be loaded."""

    def make_factory(env: Mapping[str, str]) -> ProviderFactory:
        return partial(TektonProvider, settings=Settings.from_env(env))

    main(
        prefix="TACK_TEKTON",
        make_factory=make_factory,
        listen="127.0.0.1:7104",
        metrics_addr="127.0.0.1:9104",
        db_path="tack-tekton.db",
        extension=SCHEMA,
    )


if __name__ == "__main__":
    command.dispatch(run, check)
