"""Small WebSocket client helpers and status records for tests of the simulators and fakes."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest


DID = "did:plc:wshs7t2ige3rnslshcvnkjbp"
Frames = list[str | bytes]


async def recv_text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> str:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return str(message.data)


async def recv_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    decoded = json.loads(await recv_text(ws))
    assert isinstance(decoded, dict)
    return decoded


async def assert_silent(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=seconds)


def status_record(
    knot: str, rkey: str, status: str, created_at: str, workflow: str = "build.yml"
) -> dict[str, object]:
    return {
        "$type": "",
        "createdAt": created_at,
        "pipeline": f"at://did:web:{knot}/sh.tangled.pipeline/{rkey}",
        "status": status,
        "workflow": workflow,
    }


def now_rfc3339(offset_s: int = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))
