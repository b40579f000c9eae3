"""Provider clients: one gRPC channel per provider, its health, and its WatchStatus stream.

Status updates are applied to the state machine together with the stream's
``after_seq`` in one transaction, so a restart of either side resumes exactly
where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import grpc

from tack_common import backoff, client, health, status as st
from tack_common.client import OUTBOX_ID_HEADER
from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.engine.statuses import StatusBook


log = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


_LOGS_METHOD = "/{}/Logs".format(pb.DESCRIPTOR.services_by_name["Provider"].full_name)


class ProviderClient:
    """The control plane's handle on one provider sidecar."""

    def __init__(self, name: str, address: str, tls_ca: bytes | None = None) -> None:
        self.name = name
        self.address = address
        self.channel = client.channel(address, tls_ca)
        self.stub = client.provider_stub(self.channel)
        # Logs with the messages left serialized: /logs encodes each distinct message once (LogFrames).
        self.logs_serialized: grpc.aio.UnaryStreamMultiCallable[pb.LogsRequest, bytes] = (
            self.channel.unary_stream(
                _LOGS_METHOD, request_serializer=pb.LogsRequest.SerializeToString, response_deserializer=None
            )
        )
        self.up = False
        self.checked_at = 0.0

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def check(self, timeout: float = 2.0) -> bool:
        """Ask the health service; remembers and returns whether the provider is SERVING."""
        self.up = await health.serving(self.channel, timeout=timeout)
        self.checked_at = time.monotonic()
        metrics.PROVIDER_UP.labels(self.name).set(1 if self.up else 0)
        return self.up

    async def spawn(self, request: pb.SpawnRequest, timeout: float) -> pb.SpawnResponse:
        """Spawn with a deadline; counted by gRPC code."""
        start = time.monotonic()
        code = "OK"
        try:
            response: pb.SpawnResponse = await self.stub.Spawn(request, timeout=timeout)
            return response
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            raise
        finally:
            metrics.SPAWN_CALLS.labels(self.name, code).inc()
            metrics.PROVIDER_RPC_SECONDS.labels(self.name, "Spawn").observe(time.monotonic() - start)

    async def cancel(self, key: pb.WorkflowKey, timeout: float) -> pb.CancelResponse:
        """Cancel one run, with a deadline; timed like Spawn."""
        start = time.monotonic()
        try:
            response: pb.CancelResponse = await self.stub.Cancel(pb.CancelRequest(key=key), timeout=timeout)
            return response
        finally:
            metrics.PROVIDER_RPC_SECONDS.labels(self.name, "Cancel").observe(time.monotonic() - start)


class StatusWatcher:
    """Follows one provider's WatchStatus stream and applies it to the state machine."""

    def __init__(self, provider: ProviderClient, book: StatusBook) -> None:
        self.provider = provider
        self.book = book
        self.conn = book.conn
        self.connected = asyncio.Event()

    def after_seq(self) -> int:
        """The last seq applied from this provider."""
        row = self.conn.execute(
            "SELECT after_seq FROM provider_cursors WHERE provider=?", (self.provider.name,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def check_outbox(self, outbox_id: str) -> bool:
        """Remember the provider's outbox id; False (and the cursor reset to 0) when it was replaced."""
        row = self.conn.execute(
            "SELECT outbox_id, after_seq FROM provider_cursors WHERE provider=?", (self.provider.name,)
        ).fetchone()
        if row is not None and row[0] == outbox_id:
            return True
        replaced = row is not None and row[0] != "" and outbox_id != ""
        if replaced:
            log.warning(
                "provider status log was replaced; replaying it from the start",
                extra={"provider": self.provider.name, "after_seq": row[1]},
            )
        self.conn.execute(
            "INSERT INTO provider_cursors (provider, after_seq, outbox_id) VALUES (?, 0, ?)"
            " ON CONFLICT (provider) DO UPDATE SET outbox_id=excluded.outbox_id,"
            " after_seq=CASE WHEN ? THEN 0 ELSE after_seq END",
            (self.provider.name, outbox_id, replaced),
        )
        return not replaced

    async def run(self) -> None:
        """Watch forever, reopening the stream from the persisted seq when it fails; anything else raised
        (applying an update failed) ends it: run it supervised, it resumes from the persisted seq."""
        attempt = 0
        name = self.provider.name
        while True:
            after = self.after_seq()
            call = self.provider.stub.WatchStatus(pb.WatchStatusRequest(after_seq=after))
            try:
                metadata = dict(await call.initial_metadata() or ())
                if call.done():
                    # The call failed before the provider answered; the loop below raises its error.
                    async for _ in call:
                        pass
                outbox = str(metadata.get(OUTBOX_ID_HEADER, ""))
                if outbox and not self.check_outbox(outbox):
                    attempt = 0
                    continue
                self.connected.set()
                metrics.WATCH_CONNECTED.labels(name).set(1)
                log.info("watching provider", extra={"provider": name, "after_seq": after})
                async for message in call:
                    attempt = 0
                    self.apply(message.updates)
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "provider status stream lost",
                    extra={"provider": name, "code": exc.code().name, "detail": (exc.details() or "")[:200]},
                )
            finally:
                call.cancel()
                self.connected.clear()
                metrics.WATCH_CONNECTED.labels(name).set(0)
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt, base=0.2, cap=10))

    def apply(self, updates: Iterable[pb.StatusUpdate]) -> None:
        """Apply a batch of updates and advance the cursor, atomically."""
        name = self.provider.name
        with self.book.transaction() as conn:
            last = None
            for update in updates:
                last = update.seq
                row = conn.execute(
                    "SELECT id, provider FROM workflows WHERE knot=? AND rkey=? AND name=?",
                    (update.key.knot, update.key.pipeline_rkey, update.key.workflow),
                ).fetchone()
                if row is None or row[1] != name:
                    metrics.STATUS_UPDATES.labels(name, "foreign").inc()
                    continue
                try:
                    status = st.name(update.status)
                except ValueError:
                    metrics.STATUS_UPDATES.labels(name, "invalid").inc()
                    continue
                exit_code = update.exit_code if update.HasField("exit_code") else None
                applied = self.book.record(conn, row[0], status, update.error, exit_code)
                if applied:
                    metrics.STATUS_TRANSITIONS.labels(status).inc()
                metrics.STATUS_UPDATES.labels(name, "applied" if applied else "dropped").inc()
            if last is not None:
                conn.execute(
                    "INSERT INTO provider_cursors (provider, after_seq) VALUES (?, ?)"
                    " ON CONFLICT (provider) DO UPDATE SET after_seq=excluded.after_seq",
                    (name, last),
                )
