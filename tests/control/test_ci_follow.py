"""Following one workflow's log across provider failures (tack_control.web.ci.follow).

The providers are real gRPC servers on loopback in this process: one that
breaks its Logs stream once and replays the log re-batched, one that is never
there. The workflow rows are written by the real engine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tack_common.pb import provider_pb2 as pb
from tack_control.engine.providers import ProviderClient
from tack_control.web.ci.follow import Follower, Incomplete, Target
from tack_control.web.logframes import LogFrames
from tack_control.web.sender import Framed
from tests.fakes.ci_appview import decode_message
from tests.fakes.provider import RawLogsProvider
from tests.support.ci import LINES, PipelineMaker, message, sha, stub_raw
from tests.support.procs import free_port


class BreaksOnce(RawLogsProvider):
    """First Logs call: ``first`` then UNAVAILABLE (as a killed provider); later calls: ``messages``."""

    def __init__(self, first: list[bytes], messages: list[bytes]) -> None:
        super().__init__(messages)
        self.first = first

    async def _logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext[pb.LogsRequest, pb.LogsResponse]
    ) -> AsyncIterator[bytes]:
        self.logs_calls += 1
        await context.send_initial_metadata(())
        if self.logs_calls == 1:
            for first in self.first:
                yield first
            await context.abort(grpc.StatusCode.UNAVAILABLE, "provider went away")
        for later in self.messages:
            yield later


@pytest.fixture
def target(conn: sqlite3.Connection) -> Target:
    """A workflow accepted by provider 'stub'."""
    maker = PipelineMaker.on(conn)
    (rkey,) = maker.create(maker.spec("push", "did:plc:repo", sha(1), [("build.yml", stub_raw({}))]))
    conn.execute("UPDATE workflows SET dispatch='accepted'")
    (wid,) = conn.execute("SELECT id FROM workflows").fetchone()
    return Target(wid, "knot.example.com", rkey, "build.yml")


def contents(frames: list[Framed]) -> list[tuple[str, Any]]:
    """(header t, body content) of every message in ``frames``."""
    out = []
    for framed in frames:
        data = b"".join(chunk for chunk, _ in framed.chunks)
        pos = 0
        while pos < len(data):
            assert data[pos] == 0x82
            length, pos = data[pos + 1], pos + 2
            if length == 126:
                length, pos = int.from_bytes(data[pos : pos + 2]), pos + 2
            header, body = decode_message(data[pos : pos + length])
            out.append((header.get("t", ""), body.get("content")))
            pos += length
    return out


async def test_a_broken_stream_is_resumed_and_each_line_delivered_once(
    conn: sqlite3.Connection, target: Target
) -> None:
    """Three lines, then the provider fails; the replay (batched differently) yields only the rest, once."""
    provider = BreaksOnce([message(LINES[:3])], [message(LINES[:2]), message(LINES[2:5]), message(LINES[5:])])
    await provider.start()
    client = ProviderClient("stub", provider.address)
    got: list[Framed] = []

    async def put(framed: Framed) -> None:
        got.append(framed)

    try:
        follower = Follower(conn, {"stub": client}, LogFrames(1 << 20), connect_timeout=2, resume_window=10)
        await asyncio.wait_for(follower.follow(target, put), 10)
    finally:
        await client.close()
        await provider.stop()
    assert provider.logs_calls == 2
    expected = (
        [("#control", "build")] + [("#data", f"line {i}\n") for i in range(6)] + [("#control", "build")]
    )
    assert contents(got) == expected


async def test_a_provider_that_never_comes_back_ends_the_log_with_a_note(
    conn: sqlite3.Connection, target: Target
) -> None:
    """Past the resume window: a note saying why, and Incomplete (never a wait without end)."""
    client = ProviderClient("stub", f"127.0.0.1:{free_port()}")
    got: list[Framed] = []

    async def put(framed: Framed) -> None:
        got.append(framed)

    try:
        follower = Follower(
            conn, {"stub": client}, LogFrames(1 << 20), connect_timeout=0.3, resume_window=1.0
        )
        with pytest.raises(Incomplete, match="unreachable for 1s"):
            await asyncio.wait_for(follower.follow(target, put), 10)
    finally:
        await client.close()
    [*_, (_, note), _] = contents(got)
    assert note.startswith("tack could not deliver the whole log: provider 'stub' unreachable")


async def test_a_workflow_tack_failed_gets_the_synthetic_log(
    conn: sqlite3.Connection, target: Target
) -> None:
    """dispatch failed: one step named tack with the reason, no provider asked."""
    conn.execute("UPDATE workflows SET dispatch='failed', error='provider down for 600s'")
    got: list[Framed] = []

    async def put(framed: Framed) -> None:
        got.append(framed)

    await Follower(conn, {}, LogFrames(1 << 20), connect_timeout=1, resume_window=1).follow(target, put)
    assert contents(got) == [
        ("#control", "tack"),
        ("#data", "provider down for 600s\n"),
        ("#control", "tack"),
    ]


async def test_a_queued_workflow_is_waited_for(conn: sqlite3.Connection, target: Target) -> None:
    """Still waiting for its provider: nothing is sent until it is accepted (here: failed by tack)."""
    conn.execute("UPDATE workflows SET dispatch='queued'")
    got: list[Framed] = []

    async def put(framed: Framed) -> None:
        got.append(framed)

    follower = Follower(conn, {}, LogFrames(1 << 20), connect_timeout=1, resume_window=1)
    task = asyncio.create_task(follower.follow(target, put))
    await asyncio.sleep(0.6)
    assert not task.done() and got == []
    conn.execute("UPDATE workflows SET dispatch='failed', error='gave up'")
    await asyncio.wait_for(task, 5)
    assert contents(got)[1] == ("#data", "gave up\n")
