"""Serving a WebSocket stream: one task writes, the handler reads, idle pings, slow readers dropped."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

from aiohttp import WSCloseCode, WSMsgType, web

from tack_control import metrics
from tack_control.web import keys


Pump = Callable[[web.WebSocketResponse], Awaitable[None]]
# FIN + opcode; a server's frames are unmasked (RFC 6455 §5.2).
_TEXT_FIN = 0x81
_BINARY_FIN = 0x82
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_SHORT_HEADERS = {first: [bytes((first, n)) for n in range(126)] for first in (_TEXT_FIN, _BINARY_FIN)}
CHUNK_BYTES = 64 << 10


def _frame_header(first: int, length: int) -> bytes:
    """The header of an unmasked, uncompressed, final frame (``first``: FIN + opcode) of ``length`` bytes."""
    if length < 126:
        return _SHORT_HEADERS[first][length]
    if length < 1 << 16:
        return _LEN16.pack(first, 126, length)
    return _LEN64.pack(first, 127, length)


class Framed(NamedTuple):
    """Frames ready for the wire: chunks of whole frames, each with its frame count."""

    chunks: list[tuple[bytes, int]]
    size: int
    """Bytes in all chunks."""

    @property
    def frames(self) -> int:
        """How many frames the chunks hold."""
        return sum(count for _, count in self.chunks)


def frame_texts(texts: Iterable[str]) -> Framed:
    """``texts`` as unmasked, uncompressed, final text frames, cut into chunks of about ``CHUNK_BYTES``.

    Framed here rather than by aiohttp because one write per frame costs more
    than encoding the frame, and sends each small frame as its own TCP segment
    that wakes the client for that one frame.
    """
    return _frame(map(str.encode, texts), _TEXT_FIN)


def frame_binaries(payloads: Iterable[bytes]) -> Framed:
    """``payloads`` as binary frames, framed and chunked as :func:`frame_texts` does."""
    return _frame(payloads, _BINARY_FIN)


def _frame(payloads: Iterable[bytes], first: int) -> Framed:
    chunks: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    add = parts.append
    short = _SHORT_HEADERS[first]
    size = total = 0
    for data in payloads:
        length = len(data)
        add(short[length] if length < 126 else _frame_header(first, length))
        add(data)
        size += length
        if size >= CHUNK_BYTES:
            chunk = b"".join(parts)
            chunks.append((chunk, len(parts) // 2))
            total += len(chunk)
            parts, size = [], 0
            add = parts.append
    if parts:
        chunk = b"".join(parts)
        chunks.append((chunk, len(parts) // 2))
        total += len(chunk)
    return Framed(chunks, total)


class SlowReader(Exception):
    """The client did not take a frame within the send timeout."""


class Sender:
    """Sends frames on one socket; SlowReader when the client takes nothing for ``timeout`` seconds.

    Frames go to the transport a chunk at a time (see :func:`frame_texts`),
    waiting for the transport to drain as aiohttp's own writer does.

    The timeout is one watchdog timer per batch that re-arms itself from the
    last progress, not a timer per frame: a per-frame ``wait_for`` or
    ``asyncio.timeout`` costs more than the send it guards.
    """

    def __init__(
        self, ws: web.WebSocketResponse, endpoint: str, timeout: float, request: web.BaseRequest
    ) -> None:
        self.ws = ws
        self.endpoint = endpoint
        self.timeout = timeout
        self.request = request
        self.frames = metrics.WS_FRAMES.labels(endpoint)
        self.last_sent = time.monotonic()
        self._batch_started = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False

    async def send_all(self, frames: Iterable[str]) -> None:
        """Send text frames in order; SlowReader if the client has not taken them in time."""
        await self.send_framed(frame_texts(frames))

    async def send_framed(self, framed: Framed) -> None:
        """Send frames framed by :func:`frame_texts`, in order; SlowReader as :meth:`send_all`."""
        task = asyncio.current_task()
        assert task is not None
        self._batch_started = time.monotonic()
        self._timed_out = False
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout, self._check, task)
        sent = 0
        try:
            for chunk, count in framed.chunks:
                await self._write(chunk)
                sent += count
        except asyncio.CancelledError:
            if self._timed_out and task.uncancel() == 0:
                raise SlowReader from None
            raise
        finally:
            self._watchdog.cancel()
            self.frames.inc(sent)

    async def _write(self, chunk: bytes) -> None:
        """Write whole frames to the transport, then wait while it is over its high-water mark."""
        transport, protocol = self.request.transport, self.request.protocol
        if self.ws.closed or transport is None or transport.is_closing():
            # Closing (a close frame may be out): no data frame may follow.
            raise ConnectionResetError("WebSocket is closing")
        transport.write(chunk)
        self.last_sent = time.monotonic()
        if protocol.writing_paused:
            # aiohttp's own flow control (what its WebSocket writer awaits); aiohttp is pinned.
            await protocol._drain_helper()
            self.last_sent = time.monotonic()

    def _check(self, task: asyncio.Task[object]) -> None:
        """Cancel the sending task if nothing went out for ``timeout`` seconds; else look again later."""
        idle = time.monotonic() - max(self._batch_started, self.last_sent)
        if idle >= self.timeout:
            self._timed_out = True
            task.cancel()
        else:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout - idle, self._check, task)

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
    request.app[keys.SOCKETS].add(ws)
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

    try:
        await read_until_closed(ws, asyncio.create_task(write()))
    finally:
        gauge.dec()
    return ws


async def read_until_closed(ws: web.WebSocketResponse, writer: asyncio.Task[None]) -> None:
    """Read and discard until the client closes or the socket fails, then stop ``writer``.

    Reading stays in the handler task, as aiohttp requires.
    """
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer


async def close_all(app: web.Application) -> None:
    """on_shutdown: close every open socket with 1001 (going away), all at once, waiting at most 5 s."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[keys.SOCKETS]

    async def close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    closing = [asyncio.ensure_future(close(ws)) for ws in list(sockets)]
    if closing:
        await asyncio.wait(closing, timeout=5)
