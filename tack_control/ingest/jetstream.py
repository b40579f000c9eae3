"""Jetstream ingest: mirror member, repo and collaborator records into the registry, and hand pull
and pull-status records, from any author, to the pull request intake (:mod:`tack_control.ingest.pulls`).

The cursor (Unix µs) is saved with every applied event and every few seconds
while filtered events flow, and rewound a few seconds on reconnect (applying a
record twice is harmless). A malformed record is skipped and the cursor moves
past it; a failure to apply (the database is busy or full) is not skipped: the
connection is dropped and the event comes again after reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from tack_common import backoff
from tack_control import metrics
from tack_control.engine.db import get_meta, set_meta
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.lag import StreamLag
from tack_control.ingest.pulls import COLLECTIONS as PULL_COLLECTIONS, PullIntake
from tack_control.ingest.registry import COLLECTIONS, Registry
from tack_control.ingest.wire import MAX_FRAME_BYTES, BadRecord, JetstreamEvent, parse_jetstream


log = logging.getLogger(__name__)

CURSOR_KEY = "jetstream_cursor_us"
STALE_CURSOR_US = 2 * 86_400 * 1_000_000
SAVE_EVERY_S = 5.0


def subscribe_url(base: str, cursor_us: int | None) -> str:
    """The subscribe URL with tack's collections and, when known, the cursor."""
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in (*COLLECTIONS, *PULL_COLLECTIONS)]
    if cursor_us is not None:
        params.insert(0, ("cursor", str(cursor_us)))
    sep = "&" if "?" in base else "?"
    return base + sep + urlencode(params)


class JetstreamIngest:
    """Keeps one Jetstream connection, applying events to the registry."""

    def __init__(
        self,
        url: str,
        registry: Registry,
        book: StatusBook,
        on_knots_changed: Callable[[], None],
        rewind_s: float = 5.0,
        on_members_changed: Callable[[], None] = lambda: None,
        pulls: PullIntake | None = None,
        on_pull: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = url
        self.pulls = pulls
        self.on_pull = on_pull
        self.registry = registry
        self.book = book
        self.conn = book.conn
        self.on_knots_changed = on_knots_changed
        self.on_members_changed = on_members_changed
        self.rewind_us = int(rewind_s * 1_000_000)
        self.connected = asyncio.Event()
        self.lag = StreamLag()

    def cursor(self) -> int | None:
        """Where to resume: the saved cursor minus the rewind; None (live) when unknown or stale."""
        saved = get_meta(self.conn, CURSOR_KEY)
        if saved is None:
            return None
        cursor = int(saved)
        if time.time_ns() // 1000 - cursor > STALE_CURSOR_US:
            return None
        return max(0, cursor - self.rewind_us)

    async def run(self) -> None:
        """Ingest forever, reconnecting with backoff; anything else raised ends it (run it supervised)."""
        attempt = 0
        while True:
            url = subscribe_url(self.url, self.cursor())
            try:
                async with connect(
                    url,
                    max_size=MAX_FRAME_BYTES * 4,
                    open_timeout=10,
                    user_agent_header="tack (jetstream client)",
                    compression=None,
                    proxy=None,
                ) as ws:
                    attempt = 0
                    self.lag.on_connect()
                    metrics.JETSTREAM_CONNECTED.set(1)
                    self.connected.set()
                    log.info("jetstream connected", extra={"url": url})
                    await self._consume(ws)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                log.warning("jetstream connection lost", extra={"error": str(exc)[:200]})
            finally:
                self.lag.on_disconnect()
                metrics.JETSTREAM_CONNECTED.set(0)
                self.connected.clear()
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=30))

    async def _consume(self, ws: ClientConnection) -> None:
        last_saved = time.monotonic()
        pending_cursor: int | None = None
        async for frame in ws:
            self.lag.on_event()
            if isinstance(frame, bytes):
                metrics.JETSTREAM_EVENTS.labels("malformed").inc()
                continue
            outcome, cursor = self.handle(frame)
            metrics.JETSTREAM_EVENTS.labels(outcome).inc()
            if cursor is not None:
                pending_cursor = cursor
            if pending_cursor is not None and time.monotonic() - last_saved > SAVE_EVERY_S:
                set_meta(self.conn, CURSOR_KEY, str(pending_cursor))
                pending_cursor, last_saved = None, time.monotonic()

    def handle(self, frame: str | bytes) -> tuple[str, int | None]:
        """Apply one frame; returns (outcome, cursor to save lazily or None).

        Applied events save their cursor in the same transaction. Raises on a
        database failure, so the event is retried after reconnecting.
        """
        try:
            event = parse_jetstream(frame)
        except BadRecord as exc:
            log.info("jetstream frame skipped", extra={"reason": str(exc)[:200]})
            return "malformed", None
        if event.kind == "commit" and event.collection in PULL_COLLECTIONS and self.pulls is not None:
            # Pull records come from anyone (they are exempt from the member filter).
            return self._pull(event)
        if (
            not self.registry.wanted(event.did)
            or event.kind != "commit"
            or event.collection not in COLLECTIONS
        ):
            return "filtered", event.time_us + 1
        try:
            with self.book.transaction() as conn:
                applied = self.registry.apply(conn, event)
                set_meta(conn, CURSOR_KEY, str(event.time_us + 1))
        except BadRecord as exc:
            log.info(
                "jetstream record skipped",
                extra={
                    "reason": str(exc)[:200],
                    "did": event.did,
                    "rkey": event.rkey,
                    "collection": event.collection,
                },
            )
            self.registry.reload()
            set_meta(self.conn, CURSOR_KEY, str(event.time_us + 1))
            return "bad_record", None
        except BaseException:
            self.registry.reload()
            raise
        log.info(
            "jetstream record applied",
            extra={"outcome": applied.outcome, "did": event.did, "rkey": event.rkey, "op": event.operation},
        )
        if applied.knots_changed or applied.outcome == "repo_pending":
            self.on_knots_changed()
        if applied.outcome in ("member_saved", "member_removed", "member_other_spindle"):
            self.on_members_changed()
        return applied.outcome, None

    def _pull(self, event: JetstreamEvent) -> tuple[str, int | None]:
        assert self.pulls is not None
        try:
            with self.book.transaction() as conn:
                outcome = self.pulls.accept(conn, event)
                if outcome == "pull_queued":
                    set_meta(conn, CURSOR_KEY, str(event.time_us + 1))
        except BadRecord as exc:
            log.info(
                "pull record skipped",
                extra={
                    "reason": str(exc)[:200],
                    "did": event.did,
                    "rkey": event.rkey,
                    "collection": event.collection,
                },
            )
            return "bad_record", event.time_us + 1
        if outcome != "pull_queued":
            return outcome, event.time_us + 1
        self.on_pull()
        return outcome, None
