"""``python -m tack_provider_kit.healthcheck HOST:PORT [CA_FILE]``: exit 0 when the gRPC server there is SERVING.

For container health checks: no grpc_health_probe binary needed in the image. With ``CA_FILE`` the
check speaks TLS, trusting that CA.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tack_common import client, health


async def serving(address: str, timeout: float = 3.0, tls_ca: bytes | None = None) -> bool:
    """Whether the health service at ``address`` answers SERVING within ``timeout`` seconds."""
    async with client.channel(address, tls_ca) as channel:
        return await health.serving(channel, timeout=timeout)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print("usage: python -m tack_provider_kit.healthcheck HOST:PORT [CA_FILE]", file=sys.stderr)
        sys.exit(2)
    ca = Path(sys.argv[2]).read_bytes() if len(sys.argv) == 3 else None
    sys.exit(0 if asyncio.run(serving(sys.argv[1], tls_ca=ca)) else 1)
