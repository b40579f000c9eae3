"""Plumbing shared by the simulated servers: an aiohttp app on loopback (whose websocket clients
can be counted, fed raw frames and dropped), plus Go-compatible parsing and JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from types import TracebackType
from typing import Any, Self

from aiohttp import web


JsonObject = dict[str, Any]

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_GO_INT_RE = re.compile(r"[+-]?[0-9]+")
_GO_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def parse_go_int64(text: str) -> tuple[int, bool]:
    """``strconv.ParseInt(text, 10, 64)``: the value Go would use and whether it parsed cleanly.

    Like Go, a syntax error yields 0 and an out-of-range number yields the
    nearest int64 bound; both report ``False``.
    """
    if _GO_INT_RE.fullmatch(text) is None:
        return 0, False
    value = int(text)
    if value > _INT64_MAX:
        return _INT64_MAX, False
    if value < _INT64_MIN:
        return _INT64_MIN, False
    return value, True


def go_value(value: Any) -> Any:
    """``value`` after a Go round trip through ``any``: every number becomes a float64."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 1e21 else number
    if isinstance(value, dict):
        return {str(key): go_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [go_value(item) for item in value]
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def go_json(value: Any, *, sort_keys: bool) -> str:
    """Compact JSON with Go's ``encoding/json`` escaping of ``<``, ``>``, ``&``, U+2028 and U+2029."""
    text = json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.translate(_GO_HTML_ESCAPES)


class LoopbackServer:
    """Base for the simulators: an aiohttp app on 127.0.0.1 (an ephemeral port unless one was given)."""

    client_max_size = 1024**2
    """The largest request body aiohttp reads for a handler (0: no limit)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> None:
        """Listen on the loopback interface (an ephemeral port unless one was given)."""
        app = web.Application(client_max_size=self.client_max_size)
        app.add_routes(self._routes())
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is None:
            return
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port the simulator listens on (after ``start``)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def hostname(self) -> str:
        """``host:port``, the form Tangled uses for dev hostnames."""
        return f"{self._host}:{self.port}"


class LoopbackWebSocketServer(LoopbackServer):
    """A simulator with websocket clients: connection registry, hostile-input hooks."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, ping_interval: float = 30.0) -> None:
        super().__init__(host=host, port=port)
        self.ping_interval = ping_interval
        self.pings_sent = 0
        self._sockets: dict[web.WebSocketResponse, asyncio.Transport | None] = {}
        self._changed = asyncio.Condition()

    async def stop(self) -> None:
        """Drop every client and stop listening."""
        if self._runner is None:
            return
        await self.drop_connections()
        await super().stop()

    @property
    def connections(self) -> int:
        """How many websocket clients are connected right now."""
        return len(self._sockets)

    async def wait_connected(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` clients are connected."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self._sockets) >= count)

    async def send_raw(self, data: str | bytes) -> None:
        """Send ``data`` verbatim to every client: ``str`` as a text frame, ``bytes`` as binary."""
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError):
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)

    async def drop_connections(self) -> None:
        """Abort every client's TCP connection (no close frame) and wait for the handlers to finish."""
        for transport in list(self._sockets.values()):
            if transport is not None:
                transport.abort()
        async with asyncio.timeout(5.0), self._changed:
            await self._changed.wait_for(lambda: not self._sockets)

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        transport = request.transport
        ws = web.WebSocketResponse(compress=False, max_msg_size=0)
        await ws.prepare(request)
        async with self._changed:
            self._sockets[ws] = transport if isinstance(transport, asyncio.Transport) else None
            self._changed.notify_all()
        return ws

    async def _release(self, ws: web.WebSocketResponse) -> None:
        async with self._changed:
            self._sockets.pop(ws, None)
            self._changed.notify_all()

    async def _ping(self, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError):
            await ws.ping(b"")
            self.pings_sent += 1


async def discard_incoming(ws: web.WebSocketResponse) -> None:
    """Read and drop client frames until the client closes or goes away."""
    async for _ in ws:
        pass
