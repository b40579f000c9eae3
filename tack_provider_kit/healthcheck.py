"""``python -m tack_provider_kit.healthcheck HOST:PORT``: exit 0 when the gRPC server there is SERVING.

For container health checks: no grpc_health_probe binary needed in the image.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def serving(address: str, timeout: float = 3.0) -> bool:
    """Whether the health service at ``address`` answers SERVING within ``timeout`` seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m tack_provider_kit.healthcheck HOST:PORT", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if asyncio.run(serving(sys.argv[1])) else 1)
