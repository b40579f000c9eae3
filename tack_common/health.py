"""Asking a provider's ``grpc.health.v1.Health`` service, typed.

The health service's generated stub is untyped; one typed call used by every
caller (the control plane, doctor, container health checks, the contract suite).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2


_CHECK = "/grpc.health.v1.Health/Check"
SERVING = health_pb2.HealthCheckResponse.SERVING


async def check(
    channel: grpc.aio.Channel, service: str = "", timeout: float = 2.0, wait_for_ready: bool = False
) -> int:
    """The serving status of ``service`` ("" = the whole server); raises ``grpc.aio.AioRpcError`` on failure."""
    call = channel.unary_unary(
        _CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply: health_pb2.HealthCheckResponse = await call(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=wait_for_ready
    )
    return int(reply.status)


async def serving(channel: grpc.aio.Channel, service: str = "", timeout: float = 2.0) -> bool:
    """Whether ``service`` answers SERVING within ``timeout`` seconds (False on any gRPC failure)."""
    try:
        return await check(channel, service, timeout) == SERVING
    except grpc.aio.AioRpcError:
        return False
