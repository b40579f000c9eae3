"""/logs against a provider that sends exactly the bytes a test chooses: sharing and malformed messages.

The control plane runs as its own process; the provider is a real gRPC server
on loopback (tests/fakes/provider.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tests.fakes.appview import AppviewClient, render
from tests.fakes.provider import RawLogsProvider
from tests.support.stack import OWNER, QUICK, Stack, metric, registered, stub_workflow


BASE_NS = 1_700_000_000_000_000_000
STEP = loglines.StepLog()
FIRST = pb.LogsResponse(
    lines=[*STEP.start("build", "make", ns=BASE_NS), STEP.data("compiling", ns=BASE_NS + 1)]
).SerializeToString()
LAST = pb.LogsResponse(
    lines=[STEP.data("linking", ns=BASE_NS + 2), *STEP.end(ns=BASE_NS + 3)]
).SerializeToString()


pytestmark = pytest.mark.e2e
# A LogsResponse whose first line claims 127 bytes that are not there.
TRUNCATED = b"\x0a\x7f\x08\x01"


@pytest.fixture
async def provider() -> AsyncIterator[RawLogsProvider]:
    fake = RawLogsProvider([FIRST, LAST])
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def stack(tmp_path: Path, provider: RawLogsProvider) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, control_env={"TACK_PROVIDERS": f"stub={provider.address}"}) as s:
        yield s


async def _accepted(stack: Stack, appview: AppviewClient) -> tuple[str, str]:
    """Push one workflow and wait until the provider accepted it (pending on /events)."""
    await registered(stack, OWNER)
    knot = stack.knot.hostname
    rkey = stack.push(OWNER, "hello", [stub_workflow("build.yml", QUICK)])
    await appview.wait_for(
        lambda: (appview.latest(knot, rkey, "build.yml") or {}).get("status") == "pending", timeout=10
    )
    return knot, rkey


async def test_viewers_of_one_log_share_each_message_encoding(
    stack: Stack, appview: AppviewClient, provider: RawLogsProvider
) -> None:
    """Three viewers get identical frames; each provider message is encoded once and shared twice."""
    knot, rkey = await _accepted(stack, appview)
    logs = [await appview.read_logs(knot, rkey, "build.yml", timeout=10) for _ in range(3)]
    assert provider.logs_calls == 3
    for log in logs:
        assert (log.http_status, log.close_code, log.errors) == (101, 1000, [])
        [step] = render(log.lines)
        assert (step.name, step.lines, step.ended) == ("build", ["compiling", "linking"], True)
        assert log.lines == logs[0].lines
    assert await metric(stack, 'tack_logs_messages_total{source="encoded"}') == 2
    assert await metric(stack, 'tack_logs_messages_total{source="shared"}') == 4


async def test_a_malformed_provider_message_ends_the_log_cleanly_after_what_came_before(
    stack: Stack, appview: AppviewClient, provider: RawLogsProvider
) -> None:
    """Lines before a malformed message are delivered, nothing after it, the socket closes 1000, tack stays up."""
    provider.messages = [FIRST, TRUNCATED, LAST]
    knot, rkey = await _accepted(stack, appview)
    for _ in range(2):
        log = await appview.read_logs(knot, rkey, "build.yml", timeout=10)
        assert (log.http_status, log.close_code, log.errors) == (101, 1000, [])
        assert [line["content"] for line in log.lines] == ["build", "compiling"]
    assert stack.cp.alive()
    assert "provider sent a malformed Logs message" in stack.cp.output()
    provider.messages = [FIRST, LAST]
    log = await appview.read_logs(knot, rkey, "build.yml", timeout=10)
    assert [line["content"] for line in log.lines] == ["build", "compiling", "linking", "build"]
