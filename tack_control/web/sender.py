"""Serving a WebSocket stream: one task writes, one reads, idle pings, slow readers dropped, a clean close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import NamedTuple

from aiohttp import WSCloseCode, WSMsgType, web

from tack_control import metrics
from tack_control.web import keys


log = logging.getLogger(__name__)

Pump = Callable[[web.WebSocketResponse], Awaitable["Close | None"]]
"""Writes a socket's frames; returns the close to send when done (None: 1000 with serve's ``done``)."""
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
        """Ping the client whenever ``interval`` seconds pass without a frame; ends when the socket closes."""
        try:
            while not self.ws.closed:
                idle = time.monotonic() - self.last_sent
                if idle >= interval:
                    await self.ws.ping()
                    self.last_sent = time.monotonic()
                    idle = 0.0
                await asyncio.sleep(interval - idle)
        except ConnectionResetError:
            return  # the socket is closing: nothing more to keep alive

    @contextlib.asynccontextmanager
    async def pinging(self, interval: float) -> AsyncIterator[None]:
        """Run :meth:`ping_when_idle` alongside the block; its failure, if any, is raised when the block ends."""
        pinger = asyncio.create_task(self.ping_when_idle(interval))
        try:
            yield
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger


Close = tuple[int, bytes]
"""A close frame's code and reason."""

CLOSE_TIMEOUT = 5.0
"""Seconds a socket the server closes waits for the client's close reply before the TCP close."""

INTERNAL_ERROR = (WSCloseCode.INTERNAL_ERROR, b"internal error; reconnect")


class Conversation:
    """One served socket, for :func:`close_all`: ask it to go away, and learn when it has."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.going_away = asyncio.Event()
        self.finished = asyncio.Event()


async def serve(
    request: web.Request, ws: web.WebSocketResponse, endpoint: str, pump: Pump, done: bytes = b""
) -> web.WebSocketResponse:
    """Run ``pump`` (the writer) until it ends or the client goes, then close the socket.

    A pump that ends closes the socket with the close it returns, else 1000 and
    ``done`` as the reason; a slow reader gets 1008; any other exception of the pump is logged and the
    socket closed with 1011, so the client reconnects (by cursor) instead of
    waiting on a socket nothing is written to any more.
    """
    await ws.prepare(request)
    conversation = Conversation(ws)
    sockets = request.app[keys.SOCKETS]
    sockets.add(conversation)
    gauge = metrics.WS_CLIENTS.labels(endpoint)
    gauge.inc()
    try:
        replied = await converse(ws, _write(ws, endpoint, pump, done), conversation.going_away)
        if replied is not None:
            metrics.WS_CLOSE_HANDSHAKES.labels(endpoint, "replied" if replied else "no_reply").inc()
    finally:
        gauge.dec()
        sockets.discard(conversation)
        conversation.finished.set()
    return ws


async def _write(ws: web.WebSocketResponse, endpoint: str, pump: Pump, done: bytes) -> Close | None:
    """Run the pump; the close it calls for (None when the socket is already going)."""
    try:
        close = await pump(ws)
    except SlowReader:
        metrics.WS_CLOSED_SLOW.labels(endpoint).inc()
        return WSCloseCode.POLICY_VIOLATION, b"client too slow; reconnect"
    except ConnectionResetError:
        return None  # the connection is closing or gone
    except Exception:
        log.exception("WebSocket writer failed; closing the socket with 1011", extra={"endpoint": endpoint})
        metrics.WS_WRITER_ERRORS.labels(endpoint).inc()
        return INTERNAL_ERROR
    return close if close is not None else (WSCloseCode.OK, done)


async def converse(
    ws: web.WebSocketResponse,
    write: Coroutine[object, object, Close | None],
    going_away: asyncio.Event | None = None,
) -> bool | None:
    """Write with ``write`` while reading (and discarding) what the client sends, then close.

    The first to end decides. The client closing (or the connection failing)
    stops the writer. The writer returning a close (or ``going_away``: 1001)
    stops the reader, and then this task alone closes the socket: the close
    frame is sent and the client's close reply awaited (up to the socket's
    ``timeout``) before the TCP connection is closed, as RFC 6455 §7.1.1 asks.
    Closing the TCP connection at once instead makes the kernel answer the
    client's close reply with a reset, which may destroy what the client had
    not read yet, the close frame included (the client then sees 1006).

    Returns None when the server did not close the socket, else whether the
    client's close reply arrived.
    """
    writer = asyncio.ensure_future(write)
    reader = asyncio.create_task(read_until_closed(ws))
    away = asyncio.create_task(going_away.wait()) if going_away is not None else None
    tasks = [t for t in (writer, reader, away) if t is not None]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    close: Close | None = None
    if going_away is not None and going_away.is_set():
        close = WSCloseCode.GOING_AWAY, b"server shutdown"
    elif writer.done() and not writer.cancelled() and writer.exception() is None:
        close = writer.result()
    if close is None or ws.closed:
        return None
    await ws.close(code=close[0], message=close[1])
    return ws.close_code != WSCloseCode.ABNORMAL_CLOSURE


async def read_until_closed(ws: web.WebSocketResponse) -> None:
    """Read and discard until the client closes or the connection fails (the socket's one reader)."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


async def go_away(app: web.Application) -> None:
    """Close every open socket with 1001 (going away), each after the closing handshake, all at once.

    Call it before the server shuts down: once aiohttp's shutdown has begun it
    no longer reads from connections, so no client's close reply could arrive.
    Waits at most ``CLOSE_TIMEOUT`` (+1) seconds.
    """
    conversations: set[Conversation] = app[keys.SOCKETS]
    for conversation in list(conversations):
        conversation.going_away.set()
    waiting = [asyncio.ensure_future(c.finished.wait()) for c in list(conversations)]
    if waiting:
        await asyncio.wait(waiting, timeout=CLOSE_TIMEOUT + 1)
        for task in waiting:
            task.cancel()


async def close_all(app: web.Application) -> None:
    """on_shutdown: close the sockets still open with 1001 at once, waiting at most 5 s.

    aiohttp reads nothing more once shutdown has begun, so these closes cannot
    wait for the client's reply; :func:`go_away`, called before, closes them properly.
    """
    conversations: set[Conversation] = app[keys.SOCKETS]

    async def close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    closing = [asyncio.ensure_future(close(c.ws)) for c in list(conversations)]
    if closing:
        await asyncio.wait(closing, timeout=5)
