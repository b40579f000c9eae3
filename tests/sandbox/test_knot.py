"""The simulated knot follows the knot /events contract (tack_sandbox.knot)."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tack_common.tid import is_tid
from tack_sandbox.knot import PIPELINE_NSID, SimulatedKnot, pipeline_record, workflow_entry
from tests.support.wsclient import (
    DID,
    assert_silent,
    recv_json,
    recv_text,
)


# Knot


async def test_knot_without_cursor_streams_live_only(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """Knot sends no backfill without a cursor, only events inserted after the connection."""
    knot.emit(PIPELINE_NSID, "old", {"n": 1})
    async with session.ws_connect(knot.url) as ws:
        await knot.wait_connected()
        knot.emit(PIPELINE_NSID, "new", {"n": 2})
        assert (await recv_json(ws))["rkey"] == "new"
    assert knot.connect_cursors == [None]


@pytest.mark.parametrize("cursor", ["0", "abc", "1_000", ""])
async def test_knot_treats_zero_or_unparsable_cursor_as_now(
    knot: SimulatedKnot, session: aiohttp.ClientSession, cursor: str
) -> None:
    """Knot treats a zero or unparsable cursor as "now": no backfill."""
    knot.emit(PIPELINE_NSID, "old", {})
    async with session.ws_connect(f"{knot.url}?cursor={cursor}") as ws:
        await knot.wait_connected()
        knot.emit(PIPELINE_NSID, "new", {})
        assert (await recv_json(ws))["rkey"] == "new"


async def test_knot_backfills_at_most_100_events_after_the_cursor(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """Knot backfills at most 100 events; the rest drain only when a new insert wakes the stream."""
    for i in range(150):
        knot.emit(PIPELINE_NSID, f"r{i:03}", {"i": i})
    async with session.ws_connect(f"{knot.url}?cursor=1") as ws:
        assert [(await recv_json(ws))["rkey"] for _ in range(100)] == [f"r{i:03}" for i in range(100)]
        await assert_silent(ws)
        knot.emit(PIPELINE_NSID, "late", {})
        rest = [(await recv_json(ws))["rkey"] for _ in range(51)]
        assert rest == [f"r{i:03}" for i in range(100, 150)] + ["late"]


async def test_knot_live_bursts_beyond_100_stall_until_next_insert(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """Knot coalesces notifications, so a live burst of 120 delivers 100 until another insert."""
    async with session.ws_connect(knot.url) as ws:
        await knot.wait_connected()
        for i in range(120):
            knot.emit(PIPELINE_NSID, f"b{i:03}", {})
        assert len([await recv_json(ws) for _ in range(100)]) == 100
        await assert_silent(ws)
        knot.emit(PIPELINE_NSID, "kick", {})
        assert [(await recv_json(ws))["rkey"] for _ in range(21)][-1] == "kick"


async def test_knot_cursor_is_nanoseconds_and_exclusive(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """Knot sends rows created strictly after a nanosecond cursor; a microsecond cursor replays from the start."""
    created = [knot.emit(PIPELINE_NSID, f"r{i}", {}) for i in range(3)]
    assert created == sorted(set(created))
    async with session.ws_connect(f"{knot.url}?cursor={created[0]}") as ws:
        assert [(await recv_json(ws))["rkey"] for _ in range(2)] == ["r1", "r2"]
        await assert_silent(ws, 0.1)
    async with session.ws_connect(f"{knot.url}?cursor={created[2] // 1000}") as ws:
        assert (await recv_json(ws))["rkey"] == "r0"


async def test_knot_negative_cursor_replays_from_the_first_row(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """Knot skips the created filter for a negative cursor and replays from the oldest row."""
    knot.emit(PIPELINE_NSID, "first", {})
    async with session.ws_connect(f"{knot.url}?cursor=-5") as ws:
        assert (await recv_json(ws))["rkey"] == "first"
    assert knot.connect_cursors == ["-5"]


async def test_knot_frames_match_the_go_envelope(knot: SimulatedKnot, session: aiohttp.ClientSession) -> None:
    """Knot frames are compact JSON with sorted keys, Go HTML escaping and integral numbers."""
    record = pipeline_record(
        knot="knot1.tangled.sh",
        did=DID,
        repo="hello",
        old_sha="1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
        new_sha="9f2c1e0d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392",
        workflows=[workflow_entry("build.yml", "steps:\n  - command: a && b <c>\n", clone_depth=2)],
    )
    record["weight"] = 1.0
    async with session.ws_connect(f"{knot.url}?cursor=-1") as ws:
        knot.emit_pipeline("3m7abcxyz2k22", record)
        frame = await recv_text(ws)
    assert frame.startswith('{"event":{"$type":"","triggerMetadata":{"kind":"push","push":{"newSha":"9f2c')
    assert '"repo":{"defaultBranch":"","did":"' + DID + '","knot":"knot1.tangled.sh","repo":"hello"}' in frame
    assert '"clone":{"depth":2,"skip":false,"submodules":false},"engine":"nixery","name":"build.yml"' in frame
    assert "a \\u0026\\u0026 b \\u003cc\\u003e" in frame
    assert '"weight":1,"workflows":[' in frame
    assert frame.endswith(',"nsid":"sh.tangled.pipeline","rkey":"3m7abcxyz2k22"}')


def test_pipeline_record_for_pull_request_matches_the_protocol() -> None:
    """pipeline_record builds a pull_request trigger with action create and no push block."""
    record = pipeline_record(knot="k.example", did=DID, repo="r", kind="pull_request", source_sha="ab" * 20)
    trigger = record["triggerMetadata"]
    assert record["$type"] == ""
    assert trigger["pullRequest"] == {
        "action": "create",
        "sourceBranch": "feature",
        "sourceSha": "ab" * 20,
        "targetBranch": "main",
    }
    assert "push" not in trigger
    assert trigger["repo"] == {"knot": "k.example", "did": DID, "repo": "r", "defaultBranch": ""}
    assert [w["name"] for w in record["workflows"]] == ["build.yml"]


async def test_knot_emits_tid_rkeys_when_none_given(knot: SimulatedKnot) -> None:
    """Knot assigns increasing TID rkeys from its own clock."""
    knot.emit_pipeline(None, pipeline_record(knot=knot.hostname, did=DID, repo="r"))
    knot.emit_pipeline(None, pipeline_record(knot=knot.hostname, did=DID, repo="r"))
    rkeys = [event.rkey for event in knot.events]
    assert all(is_tid(rkey) for rkey in rkeys)
    assert rkeys == sorted(rkeys)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", knot.hostname)


async def test_knot_pings_an_idle_connection(session: aiohttp.ClientSession) -> None:
    """Knot sends an empty ping after ping_interval seconds without notifications."""
    async with SimulatedKnot(ping_interval=0.05) as sim, session.ws_connect(sim.url, autoping=False) as ws:
        message = await ws.receive(timeout=2.0)
        assert message.type is aiohttp.WSMsgType.PING
        assert message.data == b""


async def test_knot_discards_client_frames_and_forwards_raw_frames(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """Knot ignores what clients send; send_raw reaches clients verbatim as text or binary."""
    async with session.ws_connect(knot.url) as ws:
        await knot.wait_connected()
        await ws.send_str("hello knot")
        await knot.send_raw("{not json")
        await knot.send_raw(b"\x00\x01")
        assert await recv_text(ws) == "{not json"
        binary = await ws.receive(timeout=2.0)
        assert (binary.type, binary.data) == (aiohttp.WSMsgType.BINARY, b"\x00\x01")
        knot.emit(PIPELINE_NSID, "after", {})
        assert (await recv_json(ws))["rkey"] == "after"


async def test_knot_drop_connections_aborts_without_close_frame(
    knot: SimulatedKnot, session: aiohttp.ClientSession
) -> None:
    """drop_connections cuts clients off abruptly (1006) and the count returns to zero."""
    async with session.ws_connect(knot.url) as ws:
        await knot.wait_connected()
        assert knot.connections == 1
        await knot.drop_connections()
        message = await ws.receive(timeout=2.0)
        assert message.type is aiohttp.WSMsgType.CLOSED
        assert ws.close_code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE
    assert knot.connections == 0
