"""Limit servers: the same transport work as tack with tack's logic taken out, each in its own process.

``python -m tests.bench.limits <role> <json>``:

* ``ws``: a bare aiohttp server with tack's socket shape (a writer task per
  socket, the handler reading), writing frames the way tack writes them
  (``sender.frame_texts``: ~64 KB chunks of whole frames, one transport write
  each, then aiohttp's drain). The frames file (text frames, one per line; or
  ``messages_file``: binary messages, length-prefixed) is encoded and framed once at
  start: ``/events`` broadcasts it to every subscriber on each ``go`` command;
  ``/logs`` sends it and closes with 1000; ``/backfill?cursor=``
  reads the ``events`` table of a tack database in pages of 500 and sends each
  frame (raw SQLite read + send).
* ``relay``: follows the knot like tack does (``websockets`` client) and, for
  every workflow of every pipeline, broadcasts pending, running and success
  frames to its ``/events`` subscribers at once (written as above): no
  database, no gRPC, no state machine, no one-second spacing.
* ``http``: a bare aiohttp server answering pre-encoded JSON bodies (the CI API's limit).
* ``grpc``: a bare ``grpc.aio`` Provider: Spawn answers a canned acceptance and
  publishes three updates to every WatchStatus stream from memory; Logs streams
  pre-built LogsResponse messages.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
from aiohttp import web
from websockets.asyncio.client import connect

from tack_common.pb import provider_pb2 as pb, provider_pb2_grpc as pb_grpc
from tack_common.tid import TidClock
from tack_common.timefmt import NS_PER_SECOND, timestamp_from_ns
from tack_control.engine.eventlog import STATUS_NSID
from tack_control.engine.statuses import status_record
from tack_control.web.sender import Close, Framed, converse, frame_binaries, frame_texts
from tack_provider_kit.server import SERVER_OPTIONS
from tests.bench.workers import JsonDict, Link, run_worker
from tests.fakes.provider import accept_all


PAGE = 500


def read_frames(path: str) -> list[str]:
    """Frames stored one per line (JSON text frames never hold a raw newline)."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def write_frames(path: Path, frames: list[str]) -> None:
    """Store frames one per line."""
    path.write_text("".join(f + "\n" for f in frames), encoding="utf-8")


def write_messages(path: Path, messages: list[bytes]) -> None:
    """Store serialized protobuf messages, each prefixed by its 4-byte length."""
    path.write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in messages))


def read_messages(path: str) -> list[bytes]:
    """The messages written by :func:`write_messages`."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


async def send_framed(request: web.Request, framed: Framed) -> None:
    """Write frames framed as tack frames them (``sender.frame_texts``): one write per chunk, then drain."""
    transport, protocol = request.transport, request.protocol
    assert transport is not None
    for chunk, _ in framed.chunks:
        transport.write(chunk)
        if protocol.writing_paused:
            await protocol._drain_helper()


async def _listen(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def ws(link: Link, args: JsonDict) -> None:
    """The bare WebSocket server (see the module docstring)."""
    # Pre-encoded and pre-framed once: the same bytes go to every client.
    if args.get("messages_file"):
        framed = frame_binaries(read_messages(args["messages_file"]))
    else:
        framed = frame_texts(read_frames(args["frames_file"]) if args.get("frames_file") else [])
    db = sqlite3.connect(args["db_path"], check_same_thread=False) if args.get("db_path") else None
    go = asyncio.Event()

    async def events_handler(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(compress=False, max_msg_size=64 << 10)
        await sock.prepare(request)

        async def write() -> None:
            while True:
                event = go
                await event.wait()
                await send_framed(request, framed)

        await converse(sock, write())
        return sock

    async def logs_handler(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(compress=False, max_msg_size=64 << 10)
        await sock.prepare(request)

        async def write() -> Close:
            await send_framed(request, framed)
            return 1000, b"log stream complete"

        await converse(sock, write())
        return sock

    async def backfill_handler(request: web.Request) -> web.WebSocketResponse:
        assert db is not None
        cursor = int(request.query.get("cursor", "0"))
        sock = web.WebSocketResponse(compress=False, max_msg_size=64 << 10)
        await sock.prepare(request)

        async def write() -> None:
            position = cursor
            while True:
                rows = db.execute(
                    "SELECT created, frame FROM events WHERE created > ? ORDER BY created LIMIT ?",
                    (position, PAGE),
                ).fetchall()
                if not rows:
                    await asyncio.Future()
                await send_framed(request, frame_texts(frame for _, frame in rows))
                position = rows[-1][0]

        await converse(sock, write())
        return sock

    app = web.Application()
    app.router.add_get("/events", events_handler)
    app.router.add_get("/logs", logs_handler)
    app.router.add_get("/backfill", backfill_handler)
    runner, port = await _listen(app)
    link.say("ready", port=port)
    while (command := await link.hear()) is not None:
        if command["kind"] == "go":
            started = time.monotonic_ns()
            previous, go = go, asyncio.Event()
            previous.set()
            link.say("went", started_ns=started)
    await runner.cleanup()


async def http(link: Link, args: JsonDict) -> None:
    """A bare aiohttp server answering ``GET /<name>`` with the bytes of ``bodies[name]`` (a file), as JSON."""
    bodies = {name: Path(path).read_bytes() for name, path in args["bodies"].items()}

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["name"]], content_type="application/json")

    app = web.Application()
    app.router.add_get("/{name}", answer)
    runner, port = await _listen(app)
    link.say("ready", port=port)
    await link.hear()
    await runner.cleanup()


async def relay(link: Link, args: JsonDict) -> None:
    """Knot frames in, three pre-built status frames per workflow out to every subscriber."""
    subscribers: set[asyncio.Queue[str]] = set()
    tids = TidClock()
    knot_url: str = args["knot_url"]
    knot = knot_url.split("/")[2]

    async def events_handler(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(compress=False, max_msg_size=64 << 10)
        await sock.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue()
        subscribers.add(queue)

        async def write() -> None:
            while True:
                frames = [await queue.get()]
                while not queue.empty():
                    frames.append(queue.get_nowait())
                await send_framed(request, frame_texts(frames))

        try:
            await converse(sock, write())
        finally:
            subscribers.discard(queue)
        return sock

    connected = asyncio.Event()

    async def consume() -> None:
        async with connect(knot_url, compression=None, proxy=None, max_size=16 << 20) as conn:
            connected.set()
            async for frame in conn:
                message = json.loads(frame)
                rkey = message["rkey"]
                second = time.time_ns() // NS_PER_SECOND
                for workflow in message["event"]["workflows"]:
                    for status in ("pending", "running", "success"):
                        record = status_record(knot, rkey, workflow["name"], status, second, "", None)
                        out = json.dumps(
                            {"event": record, "nsid": STATUS_NSID, "rkey": tids.next()},
                            ensure_ascii=False,
                            separators=(",", ":"),
                        )
                        for queue in subscribers:
                            queue.put_nowait(out)

    app = web.Application()
    app.router.add_get("/events", events_handler)
    runner, port = await _listen(app)
    consumer = asyncio.create_task(consume())
    await asyncio.wait({consumer, asyncio.create_task(connected.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if consumer.done():
        consumer.result()
    link.say("ready", port=port)
    await link.hear()
    consumer.cancel()
    await runner.cleanup()


async def _unimplemented(context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "bare limit server")
    raise AssertionError("unreachable")


class BareProvider(pb_grpc.ProviderServicer):
    """The Provider service with nothing behind it: memory only, canned answers."""

    def __init__(self, log_messages: list[pb.LogsResponse]) -> None:
        self.log_messages = log_messages
        self.watchers: set[asyncio.Queue[pb.StatusUpdate]] = set()
        self.seq = 0

    async def Spawn(
        self, request: pb.SpawnRequest, context: grpc.aio.ServicerContext[pb.SpawnRequest, pb.SpawnResponse]
    ) -> pb.SpawnResponse:
        """Accept everything; publish pending, running and success for each workflow."""
        for workflow in request.workflows:
            key = pb.WorkflowKey(
                knot=request.knot, pipeline_rkey=request.pipeline_rkey, workflow=workflow.name
            )
            for status in (pb.STATUS_PENDING, pb.STATUS_RUNNING, pb.STATUS_SUCCESS):
                self.seq += 1
                update = pb.StatusUpdate(
                    seq=self.seq, key=key, status=status, time=timestamp_from_ns(time.time_ns())
                )
                for queue in self.watchers:
                    queue.put_nowait(update)
        return accept_all(request)

    async def WatchStatus(
        self,
        request: pb.WatchStatusRequest,
        context: grpc.aio.ServicerContext[pb.WatchStatusRequest, pb.WatchStatusResponse],
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        """Whatever Spawn publishes, in batches of what is queued."""
        queue: asyncio.Queue[pb.StatusUpdate] = asyncio.Queue()
        self.watchers.add(queue)
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                yield pb.WatchStatusResponse(updates=batch)
        finally:
            self.watchers.discard(queue)

    async def Logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext[pb.LogsRequest, pb.LogsResponse]
    ) -> AsyncIterator[pb.LogsResponse]:
        """The pre-built messages."""
        await context.send_initial_metadata(())
        for message in self.log_messages:
            yield message

    async def Cancel(
        self,
        request: pb.CancelRequest,
        context: grpc.aio.ServicerContext[pb.CancelRequest, pb.CancelResponse],
    ) -> pb.CancelResponse:
        """Not part of the limit."""
        await _unimplemented(context)

    async def HandleWebhook(
        self,
        request: pb.HandleWebhookRequest,
        context: grpc.aio.ServicerContext[pb.HandleWebhookRequest, pb.HandleWebhookResponse],
    ) -> pb.HandleWebhookResponse:
        """Not part of the limit."""
        await _unimplemented(context)

    async def Describe(
        self,
        request: pb.DescribeRequest,
        context: grpc.aio.ServicerContext[pb.DescribeRequest, pb.DescribeResponse],
    ) -> pb.DescribeResponse:
        """Not part of the limit."""
        await _unimplemented(context)


async def bare_grpc(link: Link, args: JsonDict) -> None:
    """Serve :class:`BareProvider` on a loopback port."""
    messages = (
        [pb.LogsResponse.FromString(m) for m in read_messages(args["logs_file"])]
        if args.get("logs_file")
        else []
    )
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_ProviderServicer_to_server(BareProvider(messages), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    link.say("ready", port=port)
    await link.hear()
    await server.stop(grace=1)


if __name__ == "__main__":
    run_worker({"ws": ws, "relay": relay, "grpc": bare_grpc, "http": http})
