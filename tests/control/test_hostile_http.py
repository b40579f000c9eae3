"""Hostile requests against the control plane: odd paths, absurd cursors, many and unread connections,
oversized gRPC messages. Each gets a clean answer or drop; the rest keeps working."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from tack_common import client
from tack_common.pb import provider_pb2 as pb
from tack_control.engine.db import open_db
from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tack_control.engine.statuses import StatusBook, status_record
from tack_provider_kit.contract.checks import spawn_request
from tests.chaos.procstats import rss_bytes
from tests.fakes.appview import AppviewClient
from tests.support.stack import OWNER, QUICK, Stack, metric, registered, stub_workflow


pytestmark = pytest.mark.e2e


BACKLOG = 8_000


def fill_events(db_path: Path, count: int) -> None:
    """Store ``count`` status events (about 4 KB each, valid records with an extra field) before the control plane starts."""
    conn = open_db(str(db_path))
    events = EventLog(conn)
    book = StatusBook(conn, events)
    with book.transaction() as tx:
        for i in range(count):
            record = status_record(
                "knot.example", f"3rkey{i:08d}", "w.yml", "pending", 1_700_000_000, "", None
            )
            events.insert(tx, STATUS_NSID, {**record, "pad": "x" * 4000})
    conn.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    fill_events(tmp_path / "tack.db", BACKLOG)
    async with Stack(tmp_path, control_env={"TACK_SEND_TIMEOUT": "1"}) as s:
        yield s


async def test_odd_log_paths_are_404_without_upgrade(stack: Stack) -> None:
    """Traversal, encoded slashes and junk in /logs paths answer 404 (or 400 for no upgrade), never 5xx."""
    base = stack.cp.http
    paths = [
        "/logs/..%2F..%2Fetc/passwd/x",
        "/logs/knot/%2e%2e/build.yml",
        "/logs/knot/rkey/..",
        "/logs/knot/rkey/a%2Fb",
        "/logs/knot/rkey/%00",
        "/logs/" + "k" * 5000 + "/r/w",
        "/logs/knot/rkey",
        "/logs/knot%20with%20spaces/rkey/w.yml",
    ]
    async with aiohttp.ClientSession() as session:
        for path in paths:
            headers = {
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            }
            async with session.get(
                base + path, headers=headers, skip_auto_headers=["Accept-Encoding"]
            ) as resp:
                assert resp.status in (404, 400, 414, 431), (path, resp.status)
    assert stack.cp.alive()


async def test_absurd_cursors_are_live_only_or_backlog_and_never_crash(stack: Stack) -> None:
    """Huge, negative, fractional and non-numeric cursors never crash /events; oversized ones are live only."""
    async with aiohttp.ClientSession() as session:
        for cursor in (
            "99999999999999999999999999999",
            "-1",
            "1e30",
            "\u0661\u0662\u0663",
            "0x10",
            "%00",
            "9" * 5000,
        ):
            async with session.ws_connect(f"{stack.cp.http}/events?cursor={cursor}") as ws:
                with pytest.raises(TimeoutError):
                    await ws.receive(timeout=0.3)
    assert stack.cp.alive()


async def test_a_client_that_never_reads_is_dropped_and_others_are_served(stack: Stack) -> None:
    """A subscriber that never reads a huge backlog is closed after the send timeout; memory stays bounded."""
    await registered(stack, OWNER)
    start_rss = rss_bytes(stack.cp.pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.cp.port)
    request = (
        "GET /events?cursor=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    # Meanwhile a well-behaved appview gets the whole backlog and live events.
    appview = AppviewClient(stack.cp.http)
    appview.cursor = 1
    await appview.connect_events()
    await appview.wait_for(lambda: len(appview.rows) >= BACKLOG, timeout=60)
    knot = stack.knot.hostname
    rkey = stack.push(OWNER, "hello", [stub_workflow("live.yml", QUICK)])
    await appview.wait_for(
        lambda: (appview.latest(knot, rkey, "live.yml") or {}).get("status") == "success", timeout=20
    )
    deadline = time.monotonic() + 20
    while await metric(stack, 'tack_ws_closed_slow_total{endpoint="events"}') < 1:
        assert time.monotonic() < deadline, "the unread subscriber was never dropped"
        await asyncio.sleep(0.2)
    assert rss_bytes(stack.cp.pid) - start_rss < 50e6
    writer.close()
    await appview.close()


async def test_thousands_of_connections_do_not_stop_service(stack: Stack) -> None:
    """1,500 idle /events connections are held; the stream still delivers and /healthz answers."""
    await registered(stack, OWNER)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = await asyncio.gather(*(session.ws_connect(f"{stack.cp.http}/events") for _ in range(1500)))
        assert await metric(stack, 'tack_ws_clients{endpoint="events"}') >= 1500
        appview = AppviewClient(stack.cp.http)
        await appview.connect_events()
        knot = stack.knot.hostname
        rkey = stack.push(OWNER, "hello", [stub_workflow("busy.yml", QUICK)])
        await appview.wait_for(
            lambda: (appview.latest(knot, rkey, "busy.yml") or {}).get("status") == "success", timeout=30
        )
        first = await sockets[0].receive(timeout=10)
        assert json.loads(first.data)["event"]["workflow"] == "busy.yml"
        async with session.get(stack.cp.http + "/healthz") as resp:
            assert resp.status == 200
        await asyncio.gather(*(ws.close() for ws in sockets))
        await appview.close()


async def test_grpc_messages_over_the_size_limit_are_refused_and_the_provider_stays_up(stack: Stack) -> None:
    """A 10 MiB Spawn is refused with RESOURCE_EXHAUSTED; the provider keeps serving."""
    async with client.channel(stack.stub.address) as channel:
        stub = client.provider_stub(channel)
        workflow = pb.Workflow(name="huge.yml", raw="x" * (10 << 20), config_json="{}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Spawn(spawn_request([workflow]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = await stub.Describe(pb.DescribeRequest(), timeout=5)
        assert reply.name == "stub"


async def test_a_slow_loris_webhook_body_is_cut_off(tmp_path: Path) -> None:
    """A webhook whose body trickles in is answered 408 after the body timeout; others are served meanwhile."""
    async with Stack(tmp_path, control_env={"TACK_WEBHOOK_BODY_TIMEOUT": "1"}) as stack:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.cp.port)
        writer.write(b"POST /webhooks/stub HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        await writer.drain()
        async with aiohttp.ClientSession() as session, session.get(stack.cp.http + "/healthz") as resp:
            assert resp.status == 200
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 408")
        writer.close()
        assert await metric(stack, 'tack_http_rejected_total{reason="webhook_body_timeout"}') == 1
