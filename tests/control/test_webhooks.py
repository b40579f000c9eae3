"""Webhooks are stored, answered 202 and forwarded: a delivery sent while its provider is down reaches
the provider once it is back, exactly once. Real processes: the control plane and the Buildkite provider,
the fake Buildkite sending its webhooks to the control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.appview import AppviewClient
from tests.support.faults import eventually, metric
from tests.support.stack import OWNER, Stack, buildkite_entry, registered


pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Polls far apart: what the provider learns after its restart comes from the stored webhooks.
    async with Stack(tmp_path, buildkite=True, buildkite_env={"TACK_BUILDKITE_POLL_INTERVAL": "60"}) as s:
        yield s


async def test_a_webhook_sent_while_its_provider_is_down_is_forwarded_once_it_is_back(stack: Stack) -> None:
    """Deliveries made while the Buildkite provider is down are answered 202 and stored; after its
    restart each is forwarded once (none twice), in order, and the workflow ends success."""
    assert stack.fake_buildkite is not None and stack.buildkite is not None
    fake, provider = stack.fake_buildkite, stack.buildkite
    cp = stack.cp.http
    await registered(stack, OWNER)
    appview = AppviewClient(cp)
    await appview.connect_events()
    knot = stack.knot.hostname
    try:
        rkey = stack.push(OWNER, "hello", [buildkite_entry("m.yml", "app-manual")])
        await fake.wait_until(lambda: len(fake.builds) == 1, timeout=20)
        build = fake.builds[0]
        fake.advance(build, "manual", "running", log_append="working\n")
        await appview.wait_for(
            lambda: (appview.latest(knot, rkey, "m.yml") or {}).get("status") == "running", 20
        )
        await fake.wait_webhooks_idle()

        provider.kill9()
        stored = {"provider": "buildkite", "code": "202"}
        before = await metric(cp, "tack_webhooks_total", stored)
        forwarded_before = await metric(cp, "tack_webhooks_forwarded_total", {"provider": "buildkite"})
        fake.advance(build, "manual", "passed", log_append="done\n")
        await fake.wait_webhooks_idle()
        sent = await metric(cp, "tack_webhooks_total", stored) - before
        assert sent >= 1, "Buildkite's deliveries were answered 202 while the provider was down"
        assert await metric(cp, "tack_webhooks_queued", {"provider": "buildkite"}) == sent
        assert (appview.latest(knot, rkey, "m.yml") or {}).get("status") == "running"

        await provider.start_serving()

        async def drained() -> bool:
            return await metric(cp, "tack_webhooks_queued", {"provider": "buildkite"}) == 0

        await eventually(drained, 20, "the stored deliveries are forwarded")
        forwarded = await metric(cp, "tack_webhooks_forwarded_total", {"provider": "buildkite"})
        assert forwarded - forwarded_before == sent
        base = f"http://127.0.0.1:{provider.metrics_port}"
        # The restarted provider saw each stored delivery exactly once.
        assert await metric(base, "tack_buildkite_webhooks_total") == sent
        assert await metric(base, "tack_buildkite_webhooks_total", {"outcome": "duplicate"}) == 0
        assert await metric(base, "tack_buildkite_webhooks_total", {"outcome": "accepted"}) >= 1
        await appview.wait_for(
            lambda: (appview.latest(knot, rkey, "m.yml") or {}).get("status") == "success", 20
        )
        statuses = [s["status"] for s in appview.statuses(knot, rkey, "m.yml")]
        assert statuses == ["pending", "running", "success"]
    finally:
        await appview.close()
