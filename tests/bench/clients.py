"""Load clients, each role run in its own process: ``python -m tests.bench.clients <role> <json>``.

* ``events``: WebSocket subscribers of ``/events`` (tack's or a limit server's).
  ``count`` mode counts text frames per connection until ``expect``; ``track``
  mode (one connection) records when each pipeline's statuses arrive, until
  ``expect`` of them are in ``until`` (terminal statuses by default); ``idle`` mode only holds the connections open.
* ``logs``: viewers of one ``/logs`` (text) or log subscription (binary) socket,
  read until the server closes it (optionally slowly, at ``rate`` frames/s).
* ``xrpc``: sequential GETs of XRPC queries, each timed.
* ``rpc``: Spawn round trips and WatchStatus delivery against a provider.
* ``grpclogs``: one provider ``Logs`` stream read to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from tack_common import client as kit_client
from tack_common.pb import provider_pb2 as pb
from tack_common.status import TERMINAL_NAMES
from tack_common.timefmt import ns_from_timestamp
from tack_control.engine.dispatch import Queued, spawn_request
from tack_control.ingest.routing import route
from tack_control.ingest.wire import parse_pipeline
from tests.bench.workers import JsonDict, Link, run_worker


TERMINAL = frozenset(TERMINAL_NAMES)
CONNECT_CONCURRENCY = 64


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout())


async def _connect_all(
    session: aiohttp.ClientSession, url: str, count: int
) -> list[aiohttp.ClientWebSocketResponse]:
    slots = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> aiohttp.ClientWebSocketResponse:
        async with slots:
            return await session.ws_connect(url, autoping=True, max_msg_size=4 << 20, compress=0)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _count(ws: aiohttp.ClientWebSocketResponse, expect: int) -> tuple[int, int, int]:
    """Read until ``expect`` text frames (or the end); (frames, first frame ns, last frame ns)."""
    frames = first = last = 0
    while frames < expect:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            frames += 1
            if frames == 1:
                first = time.monotonic_ns()
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break
    last = time.monotonic_ns()
    return frames, first, last


async def _track(
    ws: aiohttp.ClientWebSocketResponse, expect: int, until: frozenset[str]
) -> list[tuple[str, str, int]]:
    """(pipeline rkey, status, receive ns) of every status, until ``expect`` of them are in ``until``."""
    records: list[tuple[str, str, int]] = []
    counted = 0
    while counted < expect:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
            continue
        now = time.monotonic_ns()
        event = json.loads(msg.data)["event"]
        status = event["status"]
        records.append((event["pipeline"].rsplit("/", 1)[1], status, now))
        if status in until:
            counted += 1
    return records


async def events(link: Link, args: JsonDict) -> None:
    """Subscribers of an /events URL; see the module docstring for the modes."""
    mode: str = args["mode"]
    expect: int = args.get("expect", 0)
    async with _session() as session:
        started = time.monotonic_ns()
        sockets = await _connect_all(session, args["url"], args["connections"])
        connected = time.monotonic_ns()
        readers: list[asyncio.Task[Any]] = []
        if mode == "count":
            readers = [asyncio.create_task(_count(ws, expect)) for ws in sockets]
        elif mode == "track":
            until = frozenset(args.get("until", TERMINAL))
            readers = [asyncio.create_task(_track(sockets[0], expect, until))]
        link.say("ready", connected=len(sockets), started_ns=started, connected_ns=connected)
        if mode == "idle":
            await link.hear()
            await asyncio.gather(*(ws.close() for ws in sockets))
            link.say("closed")
            return
        results = await asyncio.gather(*readers)
        if mode == "track":
            link.say("done", records=results[0])
        else:
            link.say(
                "done",
                frames=sum(r[0] for r in results),
                min_frames=min(r[0] for r in results),
                first_ns=min(r[1] for r in results if r[0]) if any(r[0] for r in results) else 0,
                last_ns=max(r[2] for r in results),
                started_ns=started,
            )
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def _view(
    session: aiohttp.ClientSession, url: str, rate: float, ready: asyncio.Event
) -> tuple[int, int, int, int, int]:
    """Read one /logs socket to its close; (frames, connect ns, first frame ns, end ns, close code)."""
    started = time.monotonic_ns()
    ws = await session.ws_connect(url, autoping=True, max_msg_size=4 << 20, compress=0)
    ready.set()
    frames = first = 0
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                frames += 1
                if frames == 1:
                    first = time.monotonic_ns()
                if rate and frames % 50 == 0:
                    ahead = frames / rate - (time.monotonic_ns() - first) / 1e9
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
    except asyncio.CancelledError:
        pass
    return frames, started, first, time.monotonic_ns(), ws.close_code or 0


async def logs(link: Link, args: JsonDict) -> None:
    """``viewers`` readers of one /logs URL; ``done`` when every socket is closed (or on ``stop``)."""
    rate: float = args.get("rate", 0)
    async with _session() as session:
        flags = [asyncio.Event() for _ in range(args["viewers"])]
        viewers = [asyncio.create_task(_view(session, args["url"], rate, flag)) for flag in flags]
        for flag, viewer in zip(flags, viewers, strict=True):
            connected = asyncio.create_task(flag.wait())
            await asyncio.wait({connected, viewer}, return_when=asyncio.FIRST_COMPLETED)
            if not flag.is_set():
                connected.cancel()
                viewer.result()
        link.say("ready")
        stop = asyncio.create_task(link.hear())
        finished: asyncio.Future[list[tuple[int, int, int, int, int]]] = asyncio.gather(*viewers)
        waiting: set[asyncio.Future[Any]] = {stop, finished}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            for viewer in viewers:
                viewer.cancel()
        results = await finished
        stop.cancel()
        link.say(
            "done",
            frames=sum(r[0] for r in results),
            min_frames=min(r[0] for r in results),
            max_frames=max(r[0] for r in results),
            started_ns=min(r[1] for r in results),
            first_ns=min((r[2] for r in results if r[0]), default=0),
            end_ns=max(r[3] for r in results),
            codes=sorted({r[4] for r in results}),
        )


def _rkey(index: int) -> str:
    return f"3bench{index:09d}"


def _spawn_request(knot: str, did: str, index: int, raw: str) -> pb.SpawnRequest:
    """The Spawn request tack would send for a one-workflow push pipeline."""
    record = {
        "$type": "",
        "triggerMetadata": {
            "kind": "push",
            "push": {"ref": "refs/heads/main", "oldSha": "0" * 40, "newSha": f"{index:040x}"},
            "repo": {"knot": knot, "did": did, "repo": "bench", "defaultBranch": ""},
        },
        "workflows": [
            {
                "name": "bench.yml",
                "engine": "tack",
                "clone": {"depth": 0, "skip": False, "submodules": False},
                "raw": raw,
            }
        ],
    }
    target = route(raw, ["stub"], None)
    row = Queued(
        id=index,
        knot=knot,
        rkey=_rkey(index),
        name="bench.yml",
        provider="stub",
        config=json.dumps({"config": target.config, "environment": target.environment}),
        attempts=0,
        queued_ns=0,
        solo=False,
    )
    return spawn_request(knot, row.rkey, parse_pipeline(record), [row])


async def rpc(link: Link, args: JsonDict) -> None:
    """Sequential Spawns (``count`` timed, after ``warmup``), and WatchStatus delivery of every update."""
    channel = kit_client.channel(args["address"])
    stub = kit_client.provider_stub(channel)
    warmup: int = args["warmup"]
    count: int = args["count"]
    per_spawn: int = args["updates_per_spawn"]
    watch_ns: list[int] = []
    measured = {_rkey(args["offset"] + i) for i in range(warmup, warmup + count)}
    enough = asyncio.Event()

    async def watch() -> None:
        # Only the measured spawns count: a bare server keeps no replay, so warm-up updates may be missed.
        call = stub.WatchStatus(pb.WatchStatusRequest(after_seq=args["after_seq"]))
        async for message in call:
            now = time.time_ns()
            for update in message.updates:
                if update.key.pipeline_rkey in measured:
                    watch_ns.append(now - ns_from_timestamp(update.time))
            if len(watch_ns) >= count * per_spawn:
                enough.set()

    watcher = asyncio.create_task(watch())
    link.say("ready")
    spawn_ns: list[int] = []
    for i in range(warmup + count):
        request = _spawn_request(args["knot"], args["did"], args["offset"] + i, args["raw"])
        start = time.perf_counter_ns()
        await stub.Spawn(request, timeout=10)
        if i >= warmup:
            spawn_ns.append(time.perf_counter_ns() - start)
        await asyncio.sleep(args["interval"])
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(enough.wait(), 30)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await watcher
    await channel.close()
    link.say("done", spawn_ns=spawn_ns, watch_ns=watch_ns)


async def grpclogs(link: Link, args: JsonDict) -> None:
    """Read one provider Logs stream to its end, ``runs`` times on command."""
    channel = kit_client.channel(args["address"])
    stub = kit_client.provider_stub(channel)
    key = pb.WorkflowKey(knot=args["knot"], pipeline_rkey=args["rkey"], workflow=args["workflow"])
    link.say("ready")
    while await link.hear() is not None:
        start = time.monotonic_ns()
        lines = 0
        async for message in stub.Logs(pb.LogsRequest(key=key)):
            lines += len(message.lines)
        link.say("done", lines=lines, started_ns=start, end_ns=time.monotonic_ns())
    await channel.close()


async def xrpc(link: Link, args: JsonDict) -> None:
    """GET each path of ``paths_file`` (JSON; after ``warmup`` untimed ones) in turn from ``base``; every answer must be 200."""
    paths: list[str] = json.loads(Path(args["paths_file"]).read_text())
    warmup: int = args["warmup"]
    latencies: list[int] = []
    sizes: list[int] = []
    async with _session() as session:
        link.say("ready")
        for i in range(warmup + len(paths)):
            path = paths[i % len(paths)] if i < warmup else paths[i - warmup]
            start = time.perf_counter_ns()
            async with session.get(args["base"] + path) as resp:
                body = await resp.read()
            elapsed = time.perf_counter_ns() - start
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}: {body[:300]!r}")
            if i >= warmup:
                latencies.append(elapsed)
                sizes.append(len(body))
    link.say("done", latency_ns=latencies, bytes=sizes)


if __name__ == "__main__":
    run_worker({"events": events, "logs": logs, "rpc": rpc, "grpclogs": grpclogs, "xrpc": xrpc})
