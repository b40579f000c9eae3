"""/logs ends with close code 1000 under load, and the closing handshake completes before the TCP close.

The control plane and the stub provider run as processes. 50 viewers read
logs of workflows that are still running when they connect (so each log ends
while being read), 500 reads in all, while other traffic keeps the control
plane's event loop busy: 200 /events subscribers and clients polling the
health report and the metrics. Each viewer is a bare WebSocket client: it
reads the close code from the close frame itself, checks that the server
keeps the connection open until the client's close reply (or until its close
timeout, which only a starved client reaches), and that the server closes TCP
promptly once it has it (so it received the reply).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.rawws import RawWebSocket
from tests.support.stack import OWNER, Stack, metric, registered, stub_workflow


pytestmark = pytest.mark.e2e

VIEWERS = 50
READS = 500
WORKFLOWS_PER_PIPELINE = 5


@dataclass
class Tally:
    reads: int = 0
    close_codes: dict[int | None, int] = field(default_factory=dict)
    early_tcp_close: int = 0
    no_tcp_close_after_reply: int = 0
    incomplete: int = 0
    failures: list[str] = field(default_factory=list)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, control_env={"TACK_LOG_LEVEL": "warning"}) as s:
        yield s


def script(rng: random.Random) -> dict[str, object]:
    return {
        "queue_seconds": 0,
        "steps": [
            {"name": "build", "output_count": 150, "duration": rng.uniform(0.6, 1.2)},
            {"name": "test", "output_count": 150, "duration": rng.uniform(0.6, 1.2)},
        ],
    }


@pytest.mark.timeout(300)
async def test_logs_close_with_1000_after_the_handshake_for_every_read_under_load(stack: Stack) -> None:
    """500 reads by 50 concurrent viewers of logs that end while read: every close frame says 1000, the
    server never closes TCP before the client's close reply, and closes it promptly after it."""
    await registered(stack, OWNER)
    rng = random.Random(12)
    knot = stack.knot.hostname
    running: list[tuple[str, str]] = []
    tally = Tally()
    stop = asyncio.Event()
    replied_before = await metric(stack, 'tack_ws_close_handshakes_total{endpoint="logs",outcome="replied"}')

    async def push() -> None:
        while not stop.is_set():
            names = [f"w{i}.yml" for i in range(WORKFLOWS_PER_PIPELINE)]
            rkey = stack.push(OWNER, "hello", [stub_workflow(n, script(rng)) for n in names])
            running[:] = [*running[-3 * WORKFLOWS_PER_PIPELINE :], *((rkey, n) for n in names)]
            await asyncio.sleep(0.4)

    sockets = await asyncio.gather(
        *(RawWebSocket.connect("127.0.0.1", stack.cp.port, "/events") for _ in range(200))
    )

    async def busy_events() -> None:
        async def drain(ws: RawWebSocket) -> None:
            # Ends on stop without relying on cancelling wait_for, which Python 3.11 can swallow.
            while not stop.is_set():
                try:
                    await ws.frame(timeout=2)
                except TimeoutError:
                    continue
                except (asyncio.IncompleteReadError, ConnectionError):
                    return

        readers = [asyncio.create_task(drain(ws)) for ws in sockets]
        await stop.wait()
        for ws in sockets:
            ws.close()
        await asyncio.gather(*readers, return_exceptions=True)

    async def busy_polls(session: aiohttp.ClientSession, path: str) -> None:
        limit = aiohttp.ClientTimeout(total=10)
        while not stop.is_set():
            try:
                async with session.get(stack.cp.http + path, timeout=limit) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.failures.append(f"GET {path}: {exc!r}")
                return

    async def viewer() -> None:
        while tally.reads < READS:
            if not running:
                await asyncio.sleep(0.05)
                continue
            rkey, name = rng.choice(running[-WORKFLOWS_PER_PIPELINE:])
            tally.reads += 1
            await read_one(rkey, name)

    async def read_one(rkey: str, name: str) -> None:
        ws = await RawWebSocket.connect("127.0.0.1", stack.cp.port, f"/logs/{knot}/{rkey}/{name}")
        try:
            close = await ws.until_close(timeout=30)
            code = close.close_code
            tally.close_codes[code] = tally.close_codes.get(code, 0) + 1
            if not ws.texts or json.loads(ws.texts[-1]).get("step_status") != "end":
                tally.incomplete += 1
            # A real client replies at once; waiting a little shows the server does not close first.
            if await ws.closed_by_server(rng.uniform(0.02, 0.1)):
                tally.early_tcp_close += 1
                return
            await ws.reply_close()
            if not await ws.closed_by_server(3.0):
                tally.no_tcp_close_after_reply += 1
        except Exception as exc:
            tally.failures.append(f"{rkey}/{name}: {exc!r}")
        finally:
            ws.close()

    async with aiohttp.ClientSession() as session:
        pusher = asyncio.create_task(push())
        load = [
            asyncio.create_task(busy_events()),
            *(asyncio.create_task(busy_polls(session, "/healthz?verbose=1")) for _ in range(2)),
            asyncio.create_task(busy_polls(session, "/metrics")),
        ]
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(viewer() for _ in range(VIEWERS))), 240)
        elapsed = time.monotonic() - started
        stop.set()
        # Stopping the load waits for requests already in flight (each bounded by 10 s).
        await asyncio.wait_for(asyncio.gather(pusher, *load), 90)

    print(f"\n/logs under load: {tally.reads} reads in {elapsed:.1f}s, close codes {tally.close_codes}")
    assert tally.failures == []
    assert tally.reads >= READS
    assert tally.close_codes == {1000: tally.reads}
    assert tally.no_tcp_close_after_reply == 0
    assert tally.incomplete == 0
    replied = await metric(stack, 'tack_ws_close_handshakes_total{endpoint="logs",outcome="replied"}')
    no_reply = await metric(stack, 'tack_ws_close_handshakes_total{endpoint="logs",outcome="no_reply"}')
    # On a starved machine this client can take longer than the server's close timeout (5 s) to read a
    # close frame that has arrived; the server then closes TCP after waiting that long and counts it as
    # no_reply. Those are the only early TCP closes allowed, and they must stay rare.
    assert tally.early_tcp_close == no_reply
    assert no_reply <= tally.reads // 10
    assert replied - replied_before == tally.reads - no_reply
