"""Serving a WebSocket stream: one task writes, the handler reads, idle pings, slow readers dropped."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from tack_control import metrics


SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
Pump = Callable[[web.WebSocketResponse], Awaitable[None]]


class SlowReader(Exception):
    """The client did not take a frame within the send timeout."""


class Sender:
    """Sends frames on one socket with a per-frame timeout."""

    def __init__(self, ws: web.WebSocketResponse, endpoint: str, timeout: float) -> None:
        self.ws = ws
        self.endpoint = endpoint
        self.timeout = timeout
        self.frames = metrics.WS_FRAMES.labels(endpoint)
        self.last_sent = time.monotonic()

    async def send(self, frame: str) -> None:
        """Send one text frame; SlowReader if the client has not drained it in time."""
        try:
            await asyncio.wait_for(self.ws.send_str(frame), self.timeout)
        except TimeoutError:
            raise SlowReader from None
        self.frames.inc()
        self.last_sent = time.monotonic()

    async def ping_when_idle(self, interval: float) -> None:
        """Ping the client whenever ``interval`` seconds pass without a frame (run as a task)."""
        while not self.ws.closed:
            idle = time.monotonic() - self.last_sent
            if idle >= interval:
                await self.ws.ping()
                self.last_sent = time.monotonic()
                idle = 0.0
            await asyncio.sleep(interval - idle)


async def serve(
    request: web.Request,
    ws: web.WebSocketResponse,
    endpoint: str,
    pump: Pump,
) -> web.WebSocketResponse:
    """Run ``pump`` (the writer) until it ends or the client goes; the handler task reads and discards.

    Reading stays in the handler task, as aiohttp requires. When the pump
    finishes it closes the socket itself; a slow reader is closed with 1008.
    """
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    gauge = metrics.WS_CLIENTS.labels(endpoint)
    gauge.inc()

    async def write() -> None:
        try:
            await pump(ws)
        except SlowReader:
            metrics.WS_CLOSED_SLOW.labels(endpoint).inc()
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"client too slow; reconnect")
        except (ConnectionResetError, RuntimeError):
            pass

    writer = asyncio.create_task(write())
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        gauge.dec()
    return ws


async def close_all(app: web.Application) -> None:
    """on_shutdown: close every open socket with 1001 (going away)."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
