"""Serving a WebSocket stream: one task writes, the handler reads, idle pings, slow readers dropped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator

from aiohttp import WSCloseCode, WSMsgType, web

from tack_control import metrics


SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
Pump = Callable[[web.WebSocketResponse], Awaitable[None]]
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


class SlowReader(Exception):
    """The client did not take a frame within the send timeout."""


class Sender:
    """Sends frames on one socket; SlowReader when the client takes no frame for ``timeout`` seconds.

    The timeout is one watchdog timer per batch that re-arms itself from the
    last frame taken, not a timer per frame: a per-frame ``wait_for`` or
    ``asyncio.timeout`` costs more than the send it guards.
    """

    def __init__(self, ws: web.WebSocketResponse, endpoint: str, timeout: float) -> None:
        self.ws = ws
        self.endpoint = endpoint
        self.timeout = timeout
        self.frames = metrics.WS_FRAMES.labels(endpoint)
        self.last_sent = time.monotonic()
        self._batch_started = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False

    async def send(self, frame: str) -> None:
        """Send one text frame; SlowReader if the client has not drained it in time."""
        await self.send_all((frame,))

    async def send_all(self, frames: Iterable[str]) -> None:
        """Send frames back to back, coalesced into full TCP segments; SlowReader as :meth:`send`."""
        task = asyncio.current_task()
        assert task is not None
        self._batch_started = time.monotonic()
        self._timed_out = False
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout, self._check, task)
        sent = 0
        try:
            with self.corked():
                for frame in frames:
                    await self.ws.send_str(frame)
                    sent += 1
                    self.last_sent = time.monotonic()
        except asyncio.CancelledError:
            if self._timed_out and task.uncancel() == 0:
                raise SlowReader from None
            raise
        finally:
            self._watchdog.cancel()
            self.frames.inc(sent)

    def _check(self, task: asyncio.Task[object]) -> None:
        """Cancel the sending task if no frame went out for ``timeout`` seconds; else look again later."""
        idle = time.monotonic() - max(self._batch_started, self.last_sent)
        if idle >= self.timeout:
            self._timed_out = True
            task.cancel()
        else:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout - idle, self._check, task)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Hold back partial TCP segments (Linux TCP_CORK) until the block ends.

        Without it each small frame is its own segment and wakes the client
        for one frame at a time, which costs far more than the frame itself.
        """
        sock = self.ws.get_extra_info("socket")
        if _TCP_CORK is None or sock is None:
            yield
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)

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
    """on_shutdown: close every open socket with 1001 (going away), all at once, waiting at most 5 s."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]

    async def close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    closing = [asyncio.ensure_future(close(ws)) for ws in list(sockets)]
    if closing:
        await asyncio.wait(closing, timeout=5)
