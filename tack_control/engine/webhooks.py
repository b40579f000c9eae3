"""Webhook deliveries kept until their provider takes them: stored durably, forwarded in order.

``POST /webhooks/{provider}`` stores each delivery and answers at once
(``web/webhooks.py``); one forwarder per provider hands them to its
``HandleWebhook``, oldest first and one at a time, and deletes each once the
provider has answered. While a provider is unreachable (restarting, its
channel in reconnect backoff) its deliveries wait; nothing is lost. Delivery
is at least once (a crash between the provider's answer and the delete sends
that one again), which providers handle: they deduplicate deliveries.

The store is bounded per provider by bytes; past the bound the oldest
deliveries are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from tack_common import backoff
from tack_common.notify import Notifier
from tack_common.pb import provider_pb2 as pb
from tack_common.sqlite import Transaction
from tack_common.throttle import LogThrottle
from tack_control import metrics
from tack_control.engine.providers import RETRYABLE, ProviderClient


log = logging.getLogger(__name__)


class WebhookQueue:
    """The ``webhook_queue`` table: deliveries waiting for their provider."""

    def __init__(self, conn: sqlite3.Connection, max_bytes: int) -> None:
        self.conn = conn
        self.max_bytes = max_bytes
        self._added: dict[str, Notifier] = {}
        self._throttle = LogThrottle()

    def put(self, provider: str, request: pb.HandleWebhookRequest) -> None:
        """Store a delivery for ``provider`` durably, dropping that provider's oldest ones past the bound.

        Raises sqlite3.Error when it could not be stored (nothing is then kept).
        """
        blob = request.SerializeToString()
        with Transaction(self.conn) as conn:
            dropped = self._make_room(conn, provider, len(blob))
            conn.execute(
                "INSERT INTO webhook_queue (provider, received_ns, request, size) VALUES (?, ?, ?, ?)",
                (provider, time.time_ns(), blob, len(blob)),
            )
        if dropped:
            metrics.WEBHOOKS_DROPPED.labels(provider, "queue_full").inc(dropped)
            held = self._throttle.allow(("queue_full", provider))
            if held is not None:
                log.warning(
                    "webhook store full; oldest deliveries dropped",
                    extra={"provider": provider, "dropped": dropped, "earlier_drops_not_logged": held},
                )
        self._notifier(provider).notify()

    def _make_room(self, conn: sqlite3.Connection, provider: str, size: int) -> int:
        total = conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM webhook_queue WHERE provider=?", (provider,)
        ).fetchone()[0]
        excess = int(total) + size - self.max_bytes
        if excess <= 0:
            return 0
        cutoff, dropped = None, 0
        for row_id, row_size in conn.execute(
            "SELECT id, size FROM webhook_queue WHERE provider=? ORDER BY id", (provider,)
        ):
            cutoff, dropped, excess = row_id, dropped + 1, excess - row_size
            if excess <= 0:
                break
        conn.execute("DELETE FROM webhook_queue WHERE provider=? AND id<=?", (provider, cutoff))
        return dropped

    def oldest(self, provider: str) -> tuple[int, bytes] | None:
        """The id and stored request of ``provider``'s oldest delivery."""
        row = self.conn.execute(
            "SELECT id, request FROM webhook_queue WHERE provider=? ORDER BY id LIMIT 1", (provider,)
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def delete(self, row_id: int) -> None:
        """Forget a delivery (forwarded, or dropped)."""
        self.conn.execute("DELETE FROM webhook_queue WHERE id=?", (row_id,))

    async def wait(self, provider: str, timeout: float) -> None:
        """Until a delivery for ``provider`` is stored, or ``timeout`` seconds."""
        await self._notifier(provider).wait(timeout)

    def _notifier(self, provider: str) -> Notifier:
        return self._added.setdefault(provider, Notifier())

    def pending(self) -> dict[str, dict[str, Any]]:
        """Per provider with deliveries waiting: how many, their bytes and the oldest's age in seconds."""
        rows = self.conn.execute(
            "SELECT provider, COUNT(*), SUM(size), MIN(received_ns) FROM webhook_queue GROUP BY provider"
        ).fetchall()
        now = time.time_ns()
        return {
            str(p): {"queued": int(n), "bytes": int(b), "oldest_s": round((now - int(t)) / 1e9, 3)}
            for p, n, b, t in rows
        }

    def count(self, provider: str) -> int:
        """Deliveries waiting for ``provider``."""
        return int(
            self.conn.execute("SELECT COUNT(*) FROM webhook_queue WHERE provider=?", (provider,)).fetchone()[
                0
            ]
        )


class WebhookForwarder:
    """Hands one provider its stored deliveries, in order (run it supervised)."""

    def __init__(self, provider: ProviderClient, queue: WebhookQueue, timeout: float = 10.0) -> None:
        self.provider = provider
        self.queue = queue
        self.timeout = timeout
        self._throttle = LogThrottle()
        metrics.WEBHOOKS_QUEUED.labels(provider.name).set_function(self._queued)

    def _queued(self) -> float:
        """The gauge's value, read at scrape time (NaN rather than a failed scrape if the database is gone)."""
        try:
            return self.queue.count(self.provider.name)
        except sqlite3.Error:
            return float("nan")

    async def run(self) -> None:
        """Forward forever: oldest first; an unreachable provider is retried with backoff."""
        name = self.provider.name
        attempt = 0
        while True:
            item = self.queue.oldest(name)
            if item is None:
                await self.queue.wait(name, 30.0)
                continue
            row_id, blob = item
            try:
                request = pb.HandleWebhookRequest.FromString(blob)
            except DecodeError:
                log.error("stored webhook delivery is unreadable; dropped", extra={"provider": name})
                metrics.WEBHOOKS_DROPPED.labels(name, "unreadable").inc()
                self.queue.delete(row_id)
                continue
            try:
                reply = await self.provider.stub.HandleWebhook(
                    request, timeout=self.timeout, wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE:
                    attempt += 1
                    delay = backoff.delay(attempt, base=0.2, cap=10.0)
                    self._log_waiting(exc, delay)
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "provider failed a webhook delivery; dropped",
                    extra={"provider": name, "code": exc.code().name, "detail": (exc.details() or "")[:200]},
                )
                metrics.WEBHOOKS_DROPPED.labels(name, "refused").inc()
                self.queue.delete(row_id)
                continue
            if attempt:
                log.info("provider takes webhooks again", extra={"provider": name, "tries": attempt + 1})
                self._throttle.reset("waiting")
            attempt = 0
            self.queue.delete(row_id)
            metrics.WEBHOOKS_FORWARDED.labels(name, str(reply.http_status)).inc()
            if reply.http_status >= 400:
                # The sender was told 202 already: failures (401: a wrong secret) are visible here only.
                log.warning(
                    "provider refused a webhook",
                    extra={
                        "provider": name,
                        "code": reply.http_status,
                        "answer": reply.body[:200].decode(errors="replace"),
                        "remote": request.remote_addr,
                    },
                )

    def _log_waiting(self, exc: grpc.aio.AioRpcError, delay: float) -> None:
        held = self._throttle.allow("waiting")
        if held is not None:
            log.warning(
                "provider unreachable; webhooks wait",
                extra={
                    "provider": self.provider.name,
                    "code": exc.code().name,
                    "queued": self.queue.count(self.provider.name),
                    "retry_in_s": round(delay, 2),
                },
            )
