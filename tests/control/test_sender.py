"""Serving sockets (tack_control.web.sender), with /events on a real socket and a real SQLite event log:
a writer that fails closes the socket with 1011 and the client resumes by cursor without a gap; the server
waits for the client's close reply before closing TCP; a cursor from the future still gets later events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from tack_common.sqlite import Transaction
from tack_control.engine.db import open_db
from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tack_control.web import events, keys, sender
from tests.support.rawws import RawWebSocket


REWIND_NS = 2_000_000_000


@dataclass
class Server:
    log: EventLog
    conn: sqlite3.Connection
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def publish(self, count: int) -> list[str]:
        """Append ``count`` status records in one transaction; their rkeys."""
        rkeys = []
        with Transaction(self.conn):
            for i in range(count):
                _, rkey = self.log.insert(self.conn, STATUS_NSID, {"status": "running", "n": i})
                rkeys.append(rkey)
        self.log.flush()
        return rkeys

    def fail_next_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The writer's next read of the log raises (as a corrupted row or an I/O error would)."""
        real = self.log.after

        def after(cursor: int, limit: int = 1000) -> list[tuple[int, str]]:
            monkeypatch.setattr(self.log, "after", real)
            raise OSError("disk read failed")

        monkeypatch.setattr(self.log, "after", after)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    conn = open_db(str(tmp_path / "tack.db"))
    log = EventLog(conn)
    app = web.Application()
    app[keys.EVENTS] = log
    app[keys.SOCKETS] = set()
    app.router.add_get("/events", events.make_handler(30.0, 5.0, REWIND_NS))
    app.on_shutdown.append(sender.close_all)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Server(log, conn, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()
        conn.close()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Appview:
    """Follows /events as the appview does: cursor = its own clock at the last frame, reconnects on close."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rkeys: list[str] = []
        self.cursor: int | None = None

    async def read(self, ws: aiohttp.ClientWebSocketResponse, want: int) -> None:
        while len(set(self.rkeys)) < want:
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            self.rkeys.append(json.loads(message.data)["rkey"])
            self.cursor = time.time_ns()

    def in_order_once(self) -> list[str]:
        seen: dict[str, None] = {}
        for rkey in self.rkeys:
            seen.setdefault(rkey)
        return list(seen)


async def test_a_failing_writer_closes_with_1011_within_a_second_and_the_client_resumes_without_gaps(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The /events writer raises: the failure is logged and counted, the client gets close 1011 within a
    second, reconnects with its cursor and receives every event, in order, none missing."""
    published = server.publish(3)
    appview = Appview(server.url)
    errors = sample("tack_ws_writer_errors_total", {"endpoint": "events"})
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.url, params={"cursor": "1"}) as ws:
            await appview.read(ws, 3)
            server.fail_next_read(monkeypatch)
            published += server.publish(2)
            started = time.monotonic()
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert message.data == 1011
            assert time.monotonic() - started < 1.0
        published += server.publish(2)
        async with session.ws_connect(server.url, params={"cursor": str(appview.cursor)}) as ws:
            await appview.read(ws, 7)
            published += server.publish(1)
            await appview.read(ws, 8)
    assert appview.in_order_once() == published
    assert sample("tack_ws_writer_errors_total", {"endpoint": "events"}) == errors + 1
    assert any(r.getMessage().startswith("WebSocket writer failed") and r.exc_info for r in caplog.records)


async def test_the_server_waits_for_the_clients_close_reply_before_closing_tcp(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its close frame the server keeps the connection open until the client's close reply,
    then closes TCP (RFC 6455 §7.1.1); the completed handshake is counted."""
    server.publish(2)
    replied = sample("tack_ws_close_handshakes_total", {"endpoint": "events", "outcome": "replied"})
    ws = await RawWebSocket.connect("127.0.0.1", server.port, "/events?cursor=1")
    try:
        while len(ws.texts) < 2:
            frame = await ws.frame()
            if frame.opcode == 0x1:
                ws.texts.append(frame.payload.decode())
        server.fail_next_read(monkeypatch)
        server.publish(1)
        close = await ws.until_close()
        assert close.close_code == 1011
        assert not await ws.closed_by_server(0.5), "the server closed TCP before the client's close reply"
        await ws.reply_close()
        assert await ws.closed_by_server(2.0)
    finally:
        ws.close()
    assert (
        sample("tack_ws_close_handshakes_total", {"endpoint": "events", "outcome": "replied"}) == replied + 1
    )


async def test_a_cursor_from_the_future_gets_the_events_created_after_it_connected(server: Server) -> None:
    """A client whose clock runs an hour ahead still receives events created after it connected."""
    server.publish(2)
    appview = Appview(server.url)
    async with aiohttp.ClientSession() as session:
        ahead = time.time_ns() + 3600 * 10**9
        async with session.ws_connect(server.url, params={"cursor": str(ahead)}) as ws:
            await asyncio.sleep(0.1)
            later = server.publish(3)
            await appview.read(ws, 3)
    assert appview.rkeys == later


async def test_shutdown_closes_every_socket_with_1001_after_the_handshake(tmp_path: Path) -> None:
    """On shutdown each socket gets 1001; a client that replies sees the TCP close right after its reply."""
    conn = open_db(str(tmp_path / "tack.db"))
    app = web.Application()
    app[keys.EVENTS] = EventLog(conn)
    app[keys.SOCKETS] = set()
    app.router.add_get("/events", events.make_handler(30.0, 5.0, REWIND_NS))
    app.on_shutdown.append(sender.close_all)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    clients = [await RawWebSocket.connect("127.0.0.1", port, "/events") for _ in range(3)]

    async def shut_down() -> None:
        # As python -m tack_control does: stop listening, close sockets, then shut the server down.
        for site in list(runner.sites):
            await site.stop()
        await sender.go_away(app)
        await runner.cleanup()

    shutdown = asyncio.create_task(shut_down())
    started = time.monotonic()
    try:
        for ws in clients:
            close = await ws.until_close()
            assert close.close_code == 1001
            await ws.reply_close(1001)
            assert await ws.closed_by_server(1.0)
        await asyncio.wait_for(shutdown, 10)
        assert time.monotonic() - started < 2.0
    finally:
        for ws in clients:
            ws.close()
        conn.close()


@pytest.mark.parametrize("failure", [ValueError("a bug"), KeyError("missing")])
async def test_unexpected_pump_errors_are_never_silent(
    tmp_path: Path, failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception of a pump (not only some types) is logged with its traceback and closes with 1011."""
    caplog.set_level(logging.ERROR)

    async def pump(ws: web.WebSocketResponse) -> None:
        raise failure

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sender.serve(request, web.WebSocketResponse(timeout=1.0), "events", pump)

    app = web.Application()
    app[keys.SOCKETS] = set()
    app.router.add_get("/x", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/x") as ws:
            message: Any = await ws.receive(timeout=2)
            assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1011)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    [record] = [r for r in caplog.records if r.getMessage().startswith("WebSocket writer failed")]
    assert record.exc_info is not None and record.exc_info[1] is failure
