"""The provider contract suite against ``python -m tack_provider_buildkite`` and the fake Buildkite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import CHECKS, Flavour, ProviderTarget
from tests.fakes.buildkite import FakeBuildkite, PipelineSpec
from tests.support.buildkite_harness import (
    WEBHOOK_SECRET,
    BuildkiteProcess,
    WebhookRelay,
    buildkite_workflow,
    drive_long_builds,
    fake_buildkite,
)


pytestmark = pytest.mark.e2e


STEPS = [{"name": "unit", "step_key": "unit", "command": "pytest -q"}]
PIPELINES = {
    "quick": PipelineSpec(steps=STEPS, auto_scenario="pass"),
    "long": PipelineSpec(steps=STEPS),
    "queued": PipelineSpec(steps=STEPS),
}


class BuildkiteTarget:
    """The Buildkite provider process (and its fake Buildkite) as a ProviderTarget."""

    def __init__(self, proc: BuildkiteProcess) -> None:
        self.proc = proc
        self.address = proc.address

    def workflow(self, name: str, flavour: Flavour) -> pb.Workflow:
        return buildkite_workflow(name, flavour)

    async def kill9_and_restart(self) -> None:
        self.proc.kill9()
        await self.proc.start_serving()


@pytest.fixture
async def buildkite_target(tmp_path: Path) -> AsyncIterator[ProviderTarget]:
    fake: FakeBuildkite = await fake_buildkite(PIPELINES, auto_tick_s=0.02)
    proc = BuildkiteProcess(tmp_path, fake.url)
    await proc.start_serving()
    # The relay's channel is opened once the provider listens (see tack_provider_kit.contract.checks.ready_channel).
    relay = WebhookRelay(proc.address)
    await relay.start()
    fake.add_webhook_target(relay.url, WEBHOOK_SECRET)
    driver = asyncio.create_task(drive_long_builds(fake, "long"))
    try:
        yield BuildkiteTarget(proc)
    finally:
        proc.kill9()
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
        await relay.stop()
        await fake.stop()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_buildkite_meets_provider_contract(
    buildkite_target: ProviderTarget, check: Callable[[ProviderTarget], Awaitable[None]]
) -> None:
    """The Buildkite provider passes each check of the provider contract suite."""
    await check(buildkite_target)
