"""The webhook emitter (docs/buildkite-api.md §6, §10.5): signing, one ordered queue per target, fault knobs.

Each target gets its own worker, so deliveries to one target go out one at a
time in event order, unless ``webhook_reorder`` shuffles what is queued.
Payloads are rendered when sent (from the snapshot taken when the event
happened, or the live build with ``webhook_live_build``), and the signature
timestamp is the dispatch time. Failures are recorded, not retried, unless
``webhook_retry`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from tests.fakes.buildkite.config import JsonObject, Knobs


TokenMode = Literal["token", "signature"]
RECENT_PER_TARGET = 20


def signature_header(token: str, timestamp: int, body: bytes) -> str:
    """``X-Buildkite-Signature``: ``timestamp=<ts>,signature=<hex hmac-sha256(token, "<ts>.<body>")>``."""
    digest = hmac.new(token.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"timestamp={timestamp},signature={digest}"


def compact_json(payload: JsonObject) -> bytes:
    """The raw body bytes of a delivery: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class WebhookTarget:
    """A Notification Service of provider ``webhook``; ``events=None`` selects every event."""

    url: str
    token: str
    token_mode: TokenMode = "token"
    events: frozenset[str] | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def wants(self, event: str) -> bool:
        """Whether this target receives ``event`` (a ping always goes out)."""
        return event == "ping" or self.events is None or event in self.events

    def as_json(self) -> JsonObject:
        """The settings as the notification-services API shows them."""
        events = None if self.events is None else sorted(self.events)
        return {"id": self.id, "url": self.url, "token_mode": self.token_mode, "events": events}


@dataclass
class WebhookDelivery:
    """One attempted or dropped delivery, for assertions."""

    target: str
    event: str
    request_id: str
    body: bytes
    headers: dict[str, str]
    status: int | None
    elapsed_s: float
    dropped: bool = False
    duplicate: bool = False
    attempt: int = 1
    error: str | None = None
    build_id: str | None = None
    job_id: str | None = None

    def as_json(self) -> JsonObject:
        """A JSON summary (body decoded)."""
        return {
            "target": self.target,
            "event": self.event,
            "request_id": self.request_id,
            "status": self.status,
            "elapsed_s": round(self.elapsed_s, 4),
            "dropped": self.dropped,
            "duplicate": self.duplicate,
            "attempt": self.attempt,
            "error": self.error,
            "build_id": self.build_id,
            "job_id": self.job_id,
            "body": self.body.decode(),
        }


@dataclass
class Outgoing:
    """An event waiting for delivery; ``render`` makes its payload at dispatch time."""

    event: str
    render: Callable[[], JsonObject]
    due: float
    build_id: str | None = None
    job_id: str | None = None


class WebhookEmitter:
    """Queues, workers and the delivery record."""

    def __init__(self, knobs: Knobs, clock: Callable[[], float], rng: random.Random) -> None:
        self.knobs = knobs
        self.clock = clock
        self.rng = rng
        self.targets: list[WebhookTarget] = []
        self.deliveries: list[WebhookDelivery] = []
        self._queues: dict[str, asyncio.Queue[Outgoing]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Open the HTTP client and start a worker for each target added so far."""
        self._session = aiohttp.ClientSession()
        for target in self.targets:
            self._spawn(target)

    async def stop(self) -> None:
        """Stop the workers (queued deliveries are abandoned) and close the client."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._pending = 0
        self._idle.set()

    def add_target(self, target: WebhookTarget) -> None:
        """Register a target (its worker starts now if the emitter is running)."""
        self.targets.append(target)
        self._queues[target.id] = asyncio.Queue()
        if self._session is not None:
            self._spawn(target)

    def enqueue(
        self,
        event: str,
        render: Callable[[], JsonObject],
        *,
        build_id: str | None = None,
        job_id: str | None = None,
        only: WebhookTarget | None = None,
    ) -> None:
        """Queue ``event`` for every target that selected it (or just ``only``)."""
        due = time.monotonic() + self.knobs.webhook_delay_ms / 1000
        for target in self.targets:
            if (only is None or target is only) and target.wants(event):
                self._pending += 1
                self._idle.clear()
                item = Outgoing(event, render, due, build_id, job_id)
                self._queues[target.id].put_nowait(item)

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every queued delivery has been sent or dropped."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    def recent(self, target: WebhookTarget) -> list[WebhookDelivery]:
        """The last 20 deliveries to ``target``, as Buildkite's request log keeps them."""
        return [d for d in self.deliveries if d.target == target.url][-RECENT_PER_TARGET:]

    def _spawn(self, target: WebhookTarget) -> None:
        self._workers.append(
            asyncio.create_task(self._work(target), name=f"fake-buildkite-webhooks {target.url}")
        )

    async def _work(self, target: WebhookTarget) -> None:
        queue = self._queues[target.id]
        while True:
            batch = [await queue.get()]
            if self.knobs.webhook_reorder:
                await asyncio.sleep(self.knobs.webhook_reorder_window_ms / 1000)
                while not queue.empty():
                    batch.append(queue.get_nowait())
                batch = self._shuffled(batch)
            for item in batch:
                try:
                    await self._deliver(target, item)
                finally:
                    self._pending -= 1
                    if self._pending <= 0:
                        self._pending = 0
                        self._idle.set()

    def _shuffled(self, batch: list[Outgoing]) -> list[Outgoing]:
        shuffled = list(batch)
        self.rng.shuffle(shuffled)
        if len(batch) > 1 and shuffled == batch:
            shuffled = shuffled[1:] + shuffled[:1]
        return shuffled

    async def _deliver(self, target: WebhookTarget, item: Outgoing) -> None:
        wait = item.due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        body = compact_json(item.render())
        if self._should_drop(item.event):
            self.deliveries.append(
                WebhookDelivery(
                    target.url,
                    item.event,
                    request_id="",
                    body=body,
                    headers={},
                    status=None,
                    elapsed_s=0.0,
                    dropped=True,
                    attempt=0,
                    build_id=item.build_id,
                    job_id=item.job_id,
                )
            )
            return
        copies = 2 if self.knobs.webhook_duplicate else 1
        for copy in range(copies):
            for attempt in range(1, self.knobs.webhook_retry + 2):
                record = await self._post(target, item, body, duplicate=copy > 0, attempt=attempt)
                self.deliveries.append(record)
                if record.status is not None and 200 <= record.status < 300:
                    break
                if attempt <= self.knobs.webhook_retry:
                    await asyncio.sleep(self.knobs.webhook_retry_delay_ms / 1000)

    def _should_drop(self, event: str) -> bool:
        knobs = self.knobs
        if event in knobs.webhook_drop_events:
            return True
        if knobs.webhook_drop_next_n > 0:
            knobs.webhook_drop_next_n -= 1
            return True
        return knobs.webhook_drop > 0 and self.rng.random() < knobs.webhook_drop

    async def _post(
        self, target: WebhookTarget, item: Outgoing, body: bytes, *, duplicate: bool, attempt: int
    ) -> WebhookDelivery:
        request_id = str(uuid.uuid4())
        headers = {
            "User-Agent": "Buildkite-Request",
            "Content-Type": "application/json",
            "Accept": "*/*",
            "Accept-Encoding": "gzip;q=1.0,deflate;q=0.6,identity;q=0.3",
            "X-Buildkite-Event": item.event,
            "X-Buildkite-Request": request_id,
        }
        if target.token_mode == "signature":
            headers["X-Buildkite-Signature"] = signature_header(target.token, int(self.clock()), body)
        else:
            headers["X-Buildkite-Token"] = target.token
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        assert self._session is not None
        try:
            timeout = aiohttp.ClientTimeout(total=self.knobs.webhook_timeout_s)
            async with self._session.post(target.url, data=body, headers=headers, timeout=timeout) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        return WebhookDelivery(
            target.url,
            item.event,
            request_id,
            body,
            headers,
            status,
            elapsed,
            duplicate=duplicate,
            attempt=attempt,
            error=error,
            build_id=item.build_id,
            job_id=item.job_id,
        )


def ping_payload(target: WebhookTarget, org_id: str, org_slug: str, sender: JsonObject) -> JsonObject:
    """The ``ping`` sent when a target is configured: service, organization and sender."""
    return {
        "event": "ping",
        "service": {"id": target.id, "provider": "webhook", "settings": {"url": target.url}},
        "organization": {"id": org_id, "slug": org_slug},
        "sender": sender,
    }
