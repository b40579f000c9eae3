"""The provider contract suite against ``python -m tack_provider_sourcehut`` and the fake builds.sr.ht."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import CHECKS, Flavour, ProviderTarget
from tests.support.sourcehut_harness import SourcehutProcess, fake_sourcehut, manifest, sourcehut_workflow


pytestmark = pytest.mark.e2e

MANIFEST_OF: dict[Flavour, str] = {
    "quick": manifest("build", "test"),
    "long": manifest("hang"),
    "queued": manifest("never", image="held"),
}


class SourcehutTarget:
    """The sourcehut provider process (and its fake builds.sr.ht) as a ProviderTarget."""

    def __init__(self, proc: SourcehutProcess) -> None:
        self.proc = proc
        self.address = proc.address

    def workflow(self, name: str, flavour: Flavour) -> pb.Workflow:
        return sourcehut_workflow(name, MANIFEST_OF[flavour])

    async def kill9_and_restart(self) -> None:
        self.proc.kill9()
        await self.proc.start_serving()


@pytest.fixture
async def sourcehut_target(tmp_path: Path) -> AsyncIterator[ProviderTarget]:
    fake = await fake_sourcehut()
    proc = SourcehutProcess(tmp_path, fake)
    await proc.start_serving()
    try:
        yield SourcehutTarget(proc)
    finally:
        proc.kill9()
        await fake.stop()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_sourcehut_meets_provider_contract(
    sourcehut_target: ProviderTarget, check: Callable[[ProviderTarget], Awaitable[None]]
) -> None:
    """The sourcehut provider passes each check of the provider contract suite."""
    await check(sourcehut_target)
