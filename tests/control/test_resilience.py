"""The control plane against a flaky world: providers down, dropped streams, idle sockets, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from tests.fakes.appview import AppviewClient
from tests.support.faults import eventually, metric, report
from tests.support.stack import MEMBER, OWNER, QUICK, Stack, registered, stub_workflow


pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Stack, AppviewClient]]:
    async with Stack(tmp_path, control_env=env) as stack, AppviewClient(stack.cp.http) as appview:
        await appview.connect_events()
        yield stack, appview


def status_of(appview: AppviewClient, knot: str, rkey: str, name: str) -> str:
    return str((appview.latest(knot, rkey, name) or {}).get("status", ""))


async def test_work_waits_for_a_provider_that_is_down_and_runs_when_it_returns(tmp_path: Path) -> None:
    """A trigger that arrives while the provider is down stays pending and runs once it is back."""
    async with running(tmp_path) as (stack, appview):
        await registered(stack, OWNER)
        knot = stack.knot.hostname
        stack.stub.kill9()
        rkey = stack.push(OWNER, "hello", [stub_workflow("w.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "w.yml") == "pending", timeout=10)
        await asyncio.sleep(2)
        assert status_of(appview, knot, rkey, "w.yml") == "pending"
        await stack.stub.start_serving()
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "w.yml") == "success", timeout=30)


async def test_a_provider_down_past_the_give_up_time_fails_the_workflow_with_the_reason(
    tmp_path: Path,
) -> None:
    """After TACK_DISPATCH_GIVE_UP the waiting workflow is failed, saying the provider was unavailable."""
    async with running(tmp_path, TACK_DISPATCH_GIVE_UP="2") as (stack, appview):
        await registered(stack, OWNER)
        knot = stack.knot.hostname
        stack.stub.kill9()
        rkey = stack.push(OWNER, "hello", [stub_workflow("w.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "w.yml") == "failed", timeout=40)
        record = appview.latest(knot, rkey, "w.yml") or {}
        assert "provider 'stub' unavailable" in record["error"]
        assert "gave up after 2s" in record["error"]
        log = await appview.read_logs(knot, rkey, "w.yml")
        assert log.close_code == 1000
        assert any("gave up" in line["content"] for line in log.lines)


async def test_a_dropped_knot_stream_resumes_by_cursor_and_misses_nothing(tmp_path: Path) -> None:
    """Pipelines emitted while the knot connection is down run after the reconnect (cursor in ns)."""
    async with running(tmp_path) as (stack, appview):
        await registered(stack, MEMBER)
        knot = stack.knot.hostname
        await stack.knot.drop_connections()
        rkey = stack.push(MEMBER, "hello", [stub_workflow("gap.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "gap.yml") == "success", timeout=30)
        cursors = [c for c in stack.knot.connect_cursors if c is not None]
        assert cursors
        assert 1.6e18 < int(cursors[-1]) < time.time_ns()


async def test_jetstream_resumes_from_its_saved_cursor_rewound(tmp_path: Path) -> None:
    """After a drop Jetstream is re-dialled with the saved µs cursor minus the rewind; records still apply."""
    async with running(tmp_path, TACK_JETSTREAM_REWIND="5") as (stack, appview):
        await registered(stack, MEMBER)
        last_us = stack.jetstream.events[-1]["time_us"]
        await asyncio.sleep(6)  # the cursor is also saved every few seconds while idle
        await stack.jetstream.drop_connections()
        await stack.jetstream.wait_connected(1, timeout=30)
        query = parse_qs(urlparse("ws://x/?" + stack.jetstream.connect_queries[-1]).query)
        cursor = int(query["cursor"][0])
        assert last_us - 5_000_000 <= cursor <= last_us + 1 - 5_000_000 + 10_000_000
        assert sorted(query["wantedCollections"]) == sorted(
            [
                "sh.tangled.spindle.member",
                "sh.tangled.repo",
                "sh.tangled.repo.collaborator",
                "sh.tangled.repo.pull",
                "sh.tangled.repo.pull.status",
            ]
        )
        stack.add_repo(MEMBER, "second")
        knot = stack.knot.hostname
        await asyncio.sleep(0.5)
        rkey = stack.push(MEMBER, "second", [stub_workflow("w.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "w.yml") == "success", timeout=30)


async def test_malformed_jetstream_records_are_skipped_and_the_next_applies(tmp_path: Path) -> None:
    """A member record without a subject and a binary frame are skipped; the next records still apply."""
    async with running(tmp_path) as (stack, appview):
        stack.jetstream.commit(
            OWNER, "sh.tangled.spindle.member", "3bad", "create", {"instance": stack.cp.hostname}
        )
        await stack.jetstream.send_raw(b"\x00\x01 not json")
        await stack.jetstream.send_raw("{not json")
        await registered(stack, MEMBER)
        knot = stack.knot.hostname
        rkey = stack.push(MEMBER, "hello", [stub_workflow("w.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "w.yml") == "success", timeout=30)


async def test_idle_sockets_get_pings_and_shutdown_closes_them_1001(tmp_path: Path) -> None:
    """Idle /events and /logs sockets are pinged; SIGTERM closes them with 1001 and exits cleanly."""
    async with running(tmp_path, TACK_PING_INTERVAL="0.5") as (stack, appview):
        await registered(stack, OWNER)
        knot = stack.knot.hostname
        script = {"queue_seconds": 30}
        rkey = stack.push(OWNER, "hello", [stub_workflow("idle.yml", script)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "idle.yml") == "pending", timeout=10)
        async with aiohttp.ClientSession() as session:
            events = await session.ws_connect(f"{stack.cp.http}/events", autoping=False)
            logs = await session.ws_connect(f"{stack.cp.http}/logs/{knot}/{rkey}/idle.yml", autoping=False)
            for ws in (events, logs):
                message = await ws.receive(timeout=5)
                assert message.type == aiohttp.WSMsgType.PING
                await ws.pong(message.data)
            assert stack.cp.popen is not None
            stack.cp.popen.send_signal(signal.SIGTERM)
            for ws in (events, logs):
                while (message := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.PING:
                    pass
                assert message.type == aiohttp.WSMsgType.CLOSE
                assert message.data == 1001
        assert await asyncio.to_thread(stack.cp.popen.wait, 15) == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/"])
async def test_operational_endpoints_answer(tmp_path: Path, path: str) -> None:
    """Health, readiness (providers SERVING), metrics and the banner answer 200."""
    async with running(tmp_path) as (stack, _):
        deadline = time.monotonic() + 15
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(stack.cp.http + path) as resp:
                    if resp.status == 200 or time.monotonic() > deadline:
                        assert resp.status == 200, await resp.text()
                        break
                await asyncio.sleep(0.2)


async def test_a_provider_that_lost_its_database_is_followed_again(tmp_path: Path) -> None:
    """After a provider's database is lost, /logs of its old workflows is 404 (its NOT_FOUND), and new
    workflows still report: the new status log (new outbox id, seq from 1) is replayed from the start."""
    async with running(tmp_path) as (stack, appview):
        await registered(stack, OWNER)
        knot = stack.knot.hostname
        rkey = stack.push(OWNER, "hello", [stub_workflow("lost.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, rkey, "lost.yml") == "success", timeout=30)
        stack.stub.kill9()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{stack.stub.db_path}{suffix}").unlink(missing_ok=True)
        await stack.stub.start_serving()
        log = await appview.read_logs(knot, rkey, "lost.yml")
        assert log.http_status == 404
        assert log.lines == []
        fresh = stack.push(OWNER, "hello", [stub_workflow("fresh.yml", QUICK)])
        await appview.wait_for(lambda: status_of(appview, knot, fresh, "fresh.yml") == "success", timeout=30)


async def test_the_health_report_and_gauges_show_each_input_streams_connection(tmp_path: Path) -> None:
    """/healthz?verbose=1 lists Jetstream and each followed knot: connected, a Jetstream reconnect is a new
    connect, a knot gone is disconnected for a growing time; the gauges say the same."""
    async with running(tmp_path) as (stack, _):
        await registered(stack, OWNER)
        base, knot = stack.cp.http, stack.knot.hostname

        async def inputs() -> dict[str, Any]:
            found: dict[str, Any] = (await report(base))["inputs"]
            return found

        async def knot_connected() -> bool:
            return bool((await inputs())["knots"].get(knot, {}).get("connected"))

        await eventually(knot_connected, 15, "the knot is listed as connected")
        jetstream = (await inputs())["jetstream"]
        assert jetstream["connected"] and jetstream["seconds_disconnected"] == 0
        assert jetstream["seconds_since_connect"] is not None
        assert await metric(base, "tack_input_disconnected_seconds", {"stream": "jetstream"}) == 0
        assert await metric(base, "tack_input_disconnected_seconds", {"stream": "knots"}) == 0

        async def connected_a_while() -> bool:
            return float((await inputs())["jetstream"]["seconds_since_connect"]) >= 2.0

        await eventually(connected_a_while, 15, "Jetstream has been connected for 2 s")
        await stack.jetstream.drop_connections()
        await stack.jetstream.wait_connected(1, timeout=30)

        async def reconnected() -> bool:
            now = (await inputs())["jetstream"]
            return bool(now["connected"]) and float(now["seconds_since_connect"]) < 2.0

        await eventually(reconnected, 15, "the report shows the new Jetstream connection")

        await stack.knot.stop()

        async def knot_gone() -> bool:
            entry = (await inputs())["knots"][knot]
            return not entry["connected"] and float(entry["seconds_disconnected"]) > 0

        await eventually(knot_gone, 15, "the report shows the knot disconnected")
        assert await metric(base, "tack_input_disconnected_seconds", {"stream": "knots"}) > 0
        assert await metric(base, "tack_input_last_event_age_seconds", {"stream": "knots"}) > 0
        assert await metric(base, "tack_input_disconnected_seconds", {"stream": "jetstream"}) == 0
