"""A provider that serves whatever bytes a test gives it, to see how the control plane takes bad ones.

It speaks the contract's shape over real gRPC on loopback: health says
SERVING, Spawn accepts every workflow as pending, WatchStatus stays open and
quiet, and Logs sends the test's messages as raw bytes, unchecked, so a test
can hand the control plane a message no protobuf library would build. It keeps
every Spawn request and Cancel call; a test can hold Spawns back
(``spawn_gate``), make Cancel fail UNAVAILABLE (``cancel_failures``), and have
Cancel of a run it never spawned answer NOT_FOUND, as a real provider does
(``strict_cancel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from tack_common.pb import provider_pb2 as pb


SERVICE = pb.DESCRIPTOR.services_by_name["Provider"].full_name


def accept_all(request: pb.SpawnRequest) -> pb.SpawnResponse:
    """Every workflow of ``request`` accepted as a new, pending run."""
    return pb.SpawnResponse(
        acceptances=[
            pb.Acceptance(workflow=w.name, created=True, status=pb.STATUS_PENDING) for w in request.workflows
        ]
    )


class RawLogsProvider:
    """Serves ``messages`` as the Logs stream of every run it is asked about."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.logs_calls = 0
        self.cancels: list[pb.WorkflowKey] = []
        self.cancel_failures = 0
        """Answer this many Cancel calls UNAVAILABLE before accepting."""
        self.spawns: list[pb.SpawnRequest] = []
        """Every Spawn request received (held ones too)."""
        self.spawned: set[tuple[str, str, str]] = set()
        """(knot, pipeline rkey, workflow) of every run a Spawn created."""
        self.spawn_gate: asyncio.Event | None = None
        """While set to an unset event, Spawn waits for it before answering."""
        self.strict_cancel = False
        """Cancel of a run never spawned answers NOT_FOUND (else OK, whatever the key)."""
        self.server = grpc.aio.server()
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self.server)
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Spawn": grpc.unary_unary_rpc_method_handler(
                self._spawn,
                request_deserializer=pb.SpawnRequest.FromString,
                response_serializer=pb.SpawnResponse.SerializeToString,
            ),
            "WatchStatus": grpc.unary_stream_rpc_method_handler(
                self._watch,
                request_deserializer=pb.WatchStatusRequest.FromString,
                response_serializer=pb.WatchStatusResponse.SerializeToString,
            ),
            "Cancel": grpc.unary_unary_rpc_method_handler(
                self._cancel,
                request_deserializer=pb.CancelRequest.FromString,
                response_serializer=pb.CancelResponse.SerializeToString,
            ),
            # No response_serializer: the bytes go out as they are.
            "Logs": grpc.unary_stream_rpc_method_handler(
                self._logs, request_deserializer=pb.LogsRequest.FromString
            ),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    @property
    def address(self) -> str:
        """host:port to put in TACK_PROVIDERS."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen."""
        await self.server.start()

    async def stop(self) -> None:
        """Stop at once."""
        await self.server.stop(None)

    async def _spawn(
        self, request: pb.SpawnRequest, context: grpc.aio.ServicerContext[pb.SpawnRequest, pb.SpawnResponse]
    ) -> pb.SpawnResponse:
        self.spawns.append(request)
        if self.spawn_gate is not None:
            await self.spawn_gate.wait()
        self.spawned.update((request.knot, request.pipeline_rkey, w.name) for w in request.workflows)
        return accept_all(request)

    async def _cancel(
        self,
        request: pb.CancelRequest,
        context: grpc.aio.ServicerContext[pb.CancelRequest, pb.CancelResponse],
    ) -> pb.CancelResponse:
        self.cancels.append(request.key)
        key = (request.key.knot, request.key.pipeline_rkey, request.key.workflow)
        if self.strict_cancel and key not in self.spawned:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {key}")
        if self.cancel_failures > 0:
            self.cancel_failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stopping the build failed; try again")
        return pb.CancelResponse(status=pb.STATUS_CANCELLED)

    async def _watch(
        self,
        request: pb.WatchStatusRequest,
        context: grpc.aio.ServicerContext[pb.WatchStatusRequest, pb.WatchStatusResponse],
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        await context.send_initial_metadata(())
        await asyncio.Future()  # open and quiet until cancelled
        yield pb.WatchStatusResponse()  # pragma: no cover

    async def _logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext[pb.LogsRequest, pb.LogsResponse]
    ) -> AsyncIterator[bytes]:
        self.logs_calls += 1
        await context.send_initial_metadata(())
        for message in self.messages:
            yield message
