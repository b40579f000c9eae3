"""The gRPC face of a :class:`~tack_provider_kit.provider.Provider`: validation, idempotency, streams."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn

import grpc

from tack_common.client import OUTBOX_ID_HEADER
from tack_common.pb import provider_pb2 as pb, provider_pb2_grpc as pb_grpc
from tack_common.throttle import LogThrottle
from tack_provider_kit import metrics
from tack_provider_kit.provider import InvalidArgument, Provider, Unavailable
from tack_provider_kit.store import RunKey


log = logging.getLogger(__name__)


async def abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with ``code``; never returns."""
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


_storage_failures = LogThrottle()


async def storage_unavailable(context: grpc.aio.ServicerContext[Any, Any], exc: sqlite3.Error) -> NoReturn:
    """End the call with UNAVAILABLE because the database failed (full disk, I/O error): the caller retries.

    Without this the call would end UNKNOWN, which the control plane takes as
    a refusal (a Spawn would fail its workflows for good).
    """
    held = _storage_failures.allow(type(exc).__name__)
    if held is not None:
        log.error(
            "provider database failed; answering UNAVAILABLE",
            extra={"error": str(exc)[:200], "similar_not_logged": held},
        )
    await abort(context, grpc.StatusCode.UNAVAILABLE, f"provider storage unavailable: {exc}")


MAX_LINES_PER_MESSAGE = 1000
MAX_BYTES_PER_MESSAGE = 1 << 20

_DETAILS = {
    pb.TRIGGER_KIND_PUSH: "push",
    pb.TRIGGER_KIND_PULL_REQUEST: "pull_request",
    pb.TRIGGER_KIND_MANUAL: "manual",
}


def validate_spawn(request: pb.SpawnRequest) -> None:
    """Raise InvalidArgument naming the first missing or malformed field of a Spawn request."""
    for field in ("knot", "pipeline_rkey"):
        if not getattr(request, field):
            raise InvalidArgument(f"{field}: required")
    if not request.actor_did.startswith("did:"):
        raise InvalidArgument("actor_did: must be a DID (did:...)")
    if not request.HasField("trigger"):
        raise InvalidArgument("trigger: required")
    detail = _DETAILS.get(request.trigger.kind)
    if detail is None:
        raise InvalidArgument("trigger.kind: must be push, pull_request or manual")
    if request.trigger.WhichOneof("detail") != detail:
        raise InvalidArgument(f"trigger.{detail}: required for trigger kind {detail}")
    if not request.trigger.repo.did or not request.trigger.repo.name:
        raise InvalidArgument("trigger.repo: did and name are required")
    if not request.workflows:
        raise InvalidArgument("workflows: at least one workflow is required")
    seen: set[str] = set()
    for i, workflow in enumerate(request.workflows):
        if not workflow.name or "/" in workflow.name or workflow.name in (".", ".."):
            raise InvalidArgument(f"workflows[{i}].name: must be a non-empty file name")
        if workflow.name in seen:
            raise InvalidArgument(f"workflows[{i}].name: duplicate workflow {workflow.name!r}")
        seen.add(workflow.name)


def split_batches(lines: Sequence[pb.LogLine]) -> list[list[pb.LogLine]]:
    """Cut lines into message-sized batches (by count and by encoded size), keeping order."""
    batches: list[list[pb.LogLine]] = []
    batch: list[pb.LogLine] = []
    size = 0
    for line in lines:
        line_size = line.ByteSize() + 4
        if batch and (len(batch) >= MAX_LINES_PER_MESSAGE or size + line_size > MAX_BYTES_PER_MESSAGE):
            batches.append(batch)
            batch, size = [], 0
        batch.append(line)
        size += line_size
    if batch:
        batches.append(batch)
    return batches


def log_messages(chunk: Sequence[pb.LogLine] | pb.LogsResponse) -> list[pb.LogsResponse]:
    """The Logs stream messages for one chunk of a provider's log, batched as :func:`split_batches` does.

    A ready LogsResponse within the limits is sent as it is: copying each line
    into a new message costs more than everything else done per line.
    """
    if isinstance(chunk, pb.LogsResponse):
        lines = len(chunk.lines)
        # Each line costs ByteSize() + 2..4 in the message and ByteSize() + 4 in split_batches' count,
        # so this bound means split_batches would keep the chunk whole.
        if lines <= MAX_LINES_PER_MESSAGE and chunk.ByteSize() + 2 * lines <= MAX_BYTES_PER_MESSAGE:
            return [chunk] if lines else []
        return [pb.LogsResponse(lines=batch) for batch in split_batches(chunk.lines)]
    return [pb.LogsResponse(lines=batch) for batch in split_batches(chunk)]


class ProviderServicer(pb_grpc.ProviderServicer):
    """Serves the Provider service for one provider."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.store = provider.store

    async def Spawn(
        self, request: pb.SpawnRequest, context: grpc.aio.ServicerContext[pb.SpawnRequest, pb.SpawnResponse]
    ) -> pb.SpawnResponse:
        """Accept the workflows durably (all or none), then start the new ones."""
        name = self.provider.name
        try:
            validate_spawn(request)
            keys = [RunKey(request.knot, request.pipeline_rkey, w.name) for w in request.workflows]
            entries = []
            for i, (key, workflow) in enumerate(zip(keys, request.workflows, strict=True)):
                if self.store.get(key) is None:
                    try:
                        entries.append((key, self.provider.prepare(request, workflow)))
                    except InvalidArgument as exc:
                        raise InvalidArgument(f"workflows[{i}] ({workflow.name}): {exc}") from None
                else:
                    entries.append((key, {}))
        except InvalidArgument as exc:
            metrics.SPAWN_REJECTED.labels(name).inc()
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Unavailable as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        except sqlite3.Error as exc:
            await storage_unavailable(context, exc)
        try:
            results = self.store.create(entries)  # one transaction: on failure nothing was accepted
        except sqlite3.Error as exc:
            await storage_unavailable(context, exc)
        acceptances = []
        for run, created in results:
            if created:
                metrics.RUNS_ACCEPTED.labels(name).inc()
                log.info("run accepted", extra={"run": str(run.key)})
                await self.provider.start(run)
            acceptances.append(pb.Acceptance(workflow=run.key.workflow, created=created, status=run.status))
        return pb.SpawnResponse(acceptances=acceptances)

    async def WatchStatus(
        self,
        request: pb.WatchStatusRequest,
        context: grpc.aio.ServicerContext[pb.WatchStatusRequest, pb.WatchStatusResponse],
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        """Replay the outbox after ``after_seq``, then follow it.

        Initial metadata carries ``tack-outbox-id``: when it changes (the provider's database was
        replaced and seq started over) the client must replay from 0.
        """
        await context.send_initial_metadata(((OUTBOX_ID_HEADER, self.store.outbox_id),))
        metrics.STREAMS_ACTIVE.labels("WatchStatus").inc()
        try:
            async for batch in self.store.watch(request.after_seq):
                if batch:
                    yield pb.WatchStatusResponse(updates=batch)
                elif context.done():
                    return
        finally:
            metrics.STREAMS_ACTIVE.labels("WatchStatus").dec()

    async def Logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext[pb.LogsRequest, pb.LogsResponse]
    ) -> AsyncIterator[pb.LogsResponse]:
        """NOT_FOUND before any message for unknown runs; otherwise metadata at once, then the log."""
        run = self.store.get(RunKey.from_pb(request.key))
        if run is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no run {RunKey.from_pb(request.key)}")
        await context.send_initial_metadata(())
        metrics.STREAMS_ACTIVE.labels("Logs").inc()
        try:
            async for chunk in self.provider.log(run):
                for message in log_messages(chunk):
                    yield message
        finally:
            metrics.STREAMS_ACTIVE.labels("Logs").dec()

    async def Cancel(
        self,
        request: pb.CancelRequest,
        context: grpc.aio.ServicerContext[pb.CancelRequest, pb.CancelResponse],
    ) -> pb.CancelResponse:
        """Cancel the run; finished runs keep their status."""
        run = self.store.get(RunKey.from_pb(request.key))
        if run is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no run {RunKey.from_pb(request.key)}")
        if run.terminal:
            return pb.CancelResponse(status=run.status)
        try:
            return pb.CancelResponse(status=await self.provider.cancel(run))
        except Unavailable as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        except sqlite3.Error as exc:
            await storage_unavailable(context, exc)

    async def HandleWebhook(
        self,
        request: pb.HandleWebhookRequest,
        context: grpc.aio.ServicerContext[pb.HandleWebhookRequest, pb.HandleWebhookResponse],
    ) -> pb.HandleWebhookResponse:
        """Let the provider answer the forwarded HTTP request (UNAVAILABLE when its database fails: the
        control plane forwards it again later)."""
        try:
            return await self.provider.handle_webhook(request)
        except sqlite3.Error as exc:
            await storage_unavailable(context, exc)

    async def Describe(
        self,
        request: pb.DescribeRequest,
        context: grpc.aio.ServicerContext[pb.DescribeRequest, pb.DescribeResponse],
    ) -> pb.DescribeResponse:
        """Name, version and capabilities."""
        return self.provider.describe()
