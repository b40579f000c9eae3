"""The provider contract suite against the stub provider, as a separate process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import CHECKS, Flavour, ProviderTarget
from tests.support.procs import ROOT, StubProcess


pytestmark = pytest.mark.e2e


# The same workflows the contract command takes for the stub (README "Writing a provider").
SCRIPTS: dict[str, object] = json.loads((ROOT / "tack_provider_stub" / "contract_workflows.json").read_text())


class StubTarget:
    """The stub provider process as a ProviderTarget."""

    def __init__(self, proc: StubProcess) -> None:
        self.proc = proc
        self.address = proc.address

    def workflow(self, name: str, flavour: Flavour) -> pb.Workflow:
        config = SCRIPTS[flavour]
        return pb.Workflow(name=name, engine="tack", raw="engine: tack\n", config_json=json.dumps(config))

    async def kill9_and_restart(self) -> None:
        self.proc.kill9()
        await self.proc.start_serving()


@pytest.fixture
async def stub_target(tmp_path: Path) -> AsyncIterator[ProviderTarget]:
    proc = StubProcess(tmp_path)
    await proc.start_serving()
    try:
        yield StubTarget(proc)
    finally:
        proc.kill9()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_stub_meets_provider_contract(
    stub_target: ProviderTarget, check: Callable[[ProviderTarget], Awaitable[None]]
) -> None:
    """The stub provider passes each check of the provider contract suite."""
    await check(stub_target)
