"""Knot consumers: one WebSocket per knot of a registered repo, added and removed as repos change.

The cursor is the ``created`` of the last event handled (Unix ns, the knot's
own clock), as current knots send it; knots of the 2025 protocol send none,
and then it is tack's clock when the event was handled, rewound by a margin on
reconnect because the knot compares it with its own. A subscription always
sends a cursor: a current knot replays its whole history to a client without
one, so a knot followed for the first time starts from "now". A close with
1013 ("drain cap reached") means more is waiting: tack reconnects at once from
the cursor. A refused upgrade (Knot2 answers 503 ``Overloaded`` at its subscriber
limit) or any other failure is retried with backoff. Replays are harmless: pipelines and pushes are de-duplicated.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable

import websockets
from websockets.asyncio.client import connect

from tack_common import backoff
from tack_common.supervise import Supervisor
from tack_control import metrics
from tack_control.ingest.lag import StreamLag
from tack_control.ingest.wire import MAX_FRAME_BYTES


log = logging.getLogger(__name__)

FrameHandler = Callable[[str, str | bytes], tuple[str, int]]
"""(knot, frame) → (outcome label, the envelope's created or 0)."""
TRY_AGAIN_LATER = 1013


class KnotConsumers:
    """Owns one consumer task per followed knot."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        dev: bool,
        handle: FrameHandler,
        rewind_s: float = 30.0,
        supervisor: Supervisor | None = None,
        on_connected: Callable[[str], None] = lambda knot: None,
    ) -> None:
        self.on_connected = on_connected
        self.conn = conn
        self.supervisor = supervisor or Supervisor()
        self.lag: dict[str, StreamLag] = {}
        self.scheme = "ws" if dev else "wss"
        self.handle = handle
        self.rewind_ns = int(rewind_s * 1e9)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.connected: set[str] = set()

    def sync(self, knots: set[str]) -> None:
        """Follow exactly ``knots``: start consumers for new ones, stop those no longer wanted."""
        for knot in set(self.tasks) - knots:
            log.info("knot unfollowed", extra={"knot": knot})
            self.tasks.pop(knot).cancel()
            self.connected.discard(knot)
            self.lag.pop(knot, None)
        for knot in knots - set(self.tasks):
            log.info("knot followed", extra={"knot": knot})
            self.lag[knot] = StreamLag()
            self.tasks[knot] = self.supervisor.spawn(
                "knot", functools.partial(self._consume, knot), name=f"knot:{knot}"
            )
        metrics.KNOTS_WANTED.set(len(self.tasks))
        metrics.KNOTS_CONNECTED.set(len(self.connected))

    async def close(self) -> None:
        """Stop every consumer."""
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cursor(self, knot: str) -> int | None:
        """Where to resume a knot: its saved cursor (rewound by the margin when it is tack's clock); None when new."""
        row = self.conn.execute(
            "SELECT cursor_ns, knot_clock FROM knot_cursors WHERE knot=?", (knot,)
        ).fetchone()
        if row is None:
            return None
        return int(row[0]) if row[1] else max(1, int(row[0]) - self.rewind_ns)

    def save_cursor(self, knot: str, cursor_ns: int, knot_clock: bool = False) -> None:
        """Persist a knot's cursor (``knot_clock``: it is an envelope's ``created``, not tack's clock)."""
        self.conn.execute(
            "INSERT INTO knot_cursors (knot, cursor_ns, knot_clock) VALUES (?, ?, ?)"
            " ON CONFLICT (knot) DO UPDATE SET cursor_ns=MAX(cursor_ns, excluded.cursor_ns),"
            " knot_clock=excluded.knot_clock",
            (knot, cursor_ns, int(knot_clock)),
        )

    def url(self, knot: str) -> str:
        """The knot's /events URL with the resume cursor; a knot never followed starts from now."""
        cursor = self.cursor(knot)
        if cursor is None:
            cursor = time.time_ns()
            self.save_cursor(knot, cursor)
        return f"{self.scheme}://{knot}/events?cursor={cursor}"

    def handle_frame(self, knot: str, frame: str | bytes) -> str:
        """Parse and act on one frame, then advance the cursor past it; returns the outcome (a metric label)."""
        outcome, created = self.handle(knot, frame)
        if created:
            self.save_cursor(knot, created, knot_clock=True)
        else:
            self.save_cursor(knot, time.time_ns())
        return outcome

    async def _consume(self, knot: str) -> None:
        lag = self.lag[knot]
        attempt = 0
        while True:
            url = self.url(knot)
            started = time.monotonic()
            try:
                async with connect(
                    url,
                    max_size=MAX_FRAME_BYTES * 4,
                    open_timeout=10,
                    compression=None,
                    proxy=None,
                    user_agent_header="tack (knot consumer)",
                ) as ws:
                    self.connected.add(knot)
                    lag.on_connect()
                    metrics.KNOTS_CONNECTED.set(len(self.connected))
                    log.info("knot connected", extra={"knot": knot, "url": url})
                    self.on_connected(knot)
                    async for frame in ws:
                        lag.on_event()
                        metrics.KNOT_FRAMES.labels(self.handle_frame(knot, frame)).inc()
            except asyncio.CancelledError:
                raise
            except websockets.exceptions.ConnectionClosedError as exc:
                if exc.rcvd is not None and exc.rcvd.code == TRY_AGAIN_LATER:
                    # The knot stopped its backlog drain at its cap: the rest is waiting, resume now.
                    log.info("knot asked to reconnect for more", extra={"knot": knot})
                    attempt = 0
                    continue
                if (exc.rcvd is not None and exc.rcvd.code == 1009) or (
                    exc.sent is not None and exc.sent.code == 1009
                ):
                    # A frame too large to read would come back on every reconnect: step past it.
                    log.warning("knot sent an oversized frame; skipping past it", extra={"knot": knot})
                    metrics.KNOT_FRAMES.labels("oversized").inc()
                    self.save_cursor(knot, time.time_ns() + self.rewind_ns)
                else:
                    log.warning("knot connection lost", extra={"knot": knot, "error": str(exc)[:200]})
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                log.warning("knot connection failed", extra={"knot": knot, "error": str(exc)[:200]})
            finally:
                self.connected.discard(knot)
                lag.on_disconnect()
                metrics.KNOTS_CONNECTED.set(len(self.connected))
            if time.monotonic() - started > 60:
                attempt = 0
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=60))
