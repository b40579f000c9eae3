"""The provider contract suite against ``python -m tack_provider_tekton`` and the fake Kubernetes API server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import CHECKS, Flavour, ProviderTarget
from tests.support.tekton_harness import TektonProcess, fake_kubernetes, tekton_workflow


pytestmark = pytest.mark.e2e

PIPELINE_OF: dict[Flavour, str] = {"quick": "build", "long": "forever", "queued": "held"}


class TektonTarget:
    """The Tekton provider process (and its fake cluster) as a ProviderTarget."""

    def __init__(self, proc: TektonProcess) -> None:
        self.proc = proc
        self.address = proc.address

    def workflow(self, name: str, flavour: Flavour) -> pb.Workflow:
        return tekton_workflow(name, PIPELINE_OF[flavour])

    async def kill9_and_restart(self) -> None:
        self.proc.kill9()
        await self.proc.start_serving()


@pytest.fixture
async def tekton_target(tmp_path: Path) -> AsyncIterator[ProviderTarget]:
    fake = await fake_kubernetes(bookmark_interval=0.5)
    proc = TektonProcess(tmp_path, fake)
    await proc.start_serving()
    try:
        yield TektonTarget(proc)
    finally:
        proc.kill9()
        await fake.stop()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_tekton_meets_provider_contract(
    tekton_target: ProviderTarget, check: Callable[[ProviderTarget], Awaitable[None]]
) -> None:
    """The Tekton provider passes each check of the provider contract suite."""
    await check(tekton_target)
