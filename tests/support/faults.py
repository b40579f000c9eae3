"""Asking a tack process (started with TACK_FAULT_INJECTION=1) for faults, and reading its health."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


async def crash(base: str, kind: str, hold: float = 0.0) -> list[str]:
    """Fail every running task of ``kind`` in the process at ``base`` (restarts fail for ``hold`` s)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/_faults/crash", params={"task": kind, "hold": str(hold)}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        hit: list[str] = (await resp.json())["tasks"]
        return hit


async def inject(base: str, fault: str, seconds: float) -> None:
    """``write_failure`` or ``disk_full`` for ``seconds`` in the process at ``base``."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/_faults/{fault}", params={"seconds": str(seconds)}) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def kinds(base: str) -> list[str]:
    """The task kinds running in the process at ``base``."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/_faults") as resp:
        found: list[str] = (await resp.json())["kinds"]
        return found


async def readiness(base: str) -> tuple[int, dict[str, Any]]:
    """``GET /readyz``: status and body."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/readyz") as resp:
        return resp.status, json.loads(await resp.text())


async def report(base: str) -> dict[str, Any]:
    """``GET /healthz?verbose=1``."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz?verbose=1") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def metric(base: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "") -> None:
    """Wait until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.1)
