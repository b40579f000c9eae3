"""Semantics of the sandbox simulators (knot, Jetstream), the TID clock and the appview fake."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tack_common.tid import MAX_CLOCK_ID, MAX_TIME_US, TidClock, is_tid, parse_tid, tid_from_time_us
from tack_sandbox.jetstream import SimulatedJetstream
from tack_sandbox.knot import PIPELINE_NSID, SimulatedKnot, pipeline_record, workflow_entry
from tests.fakes.appview import (
    STATUS_NSID,
    AppviewClient,
    RenderedStep,
    decode_log_frames,
    parse_at_uri,
    parse_rfc3339,
    render,
)


DID = "did:plc:wshs7t2ige3rnslshcvnkjbp"
Frames = list[str | bytes]


@pytest.fixture
async def knot() -> AsyncIterator[SimulatedKnot]:
    async with SimulatedKnot() as sim:
        yield sim


@pytest.fixture
async def jetstream() -> AsyncIterator[SimulatedJetstream]:
    async with SimulatedJetstream() as sim:
        yield sim


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


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


# TIDs


def test_tid_encodes_time_and_clock_id() -> None:
    """A TID is 13 base32-sortable chars that decode back to (microseconds, clock id)."""
    assert tid_from_time_us(0, 0) == "2222222222222"
    assert tid_from_time_us(MAX_TIME_US, MAX_CLOCK_ID) == "bzzzzzzzzzzzz"
    us = 1_764_753_711_123_456
    tid = tid_from_time_us(us, 7)
    assert is_tid(tid)
    assert parse_tid(tid) == (us, 7)


def test_tid_rejects_out_of_range_inputs() -> None:
    """Timestamps beyond 53 bits, clock ids beyond 10 bits and non-TID strings are refused."""
    with pytest.raises(ValueError, match="timestamp"):
        tid_from_time_us(MAX_TIME_US + 1, 0)
    with pytest.raises(ValueError, match="clock id"):
        tid_from_time_us(0, MAX_CLOCK_ID + 1)
    with pytest.raises(ValueError, match="not a TID"):
        parse_tid("3m7abcxyz2k2")


def test_tid_clock_is_strictly_increasing_when_the_clock_stalls_or_steps_back() -> None:
    """TidClock never repeats or goes backwards, and its TIDs sort in issue order."""
    readings = iter([1_000, 1_000, 999, 5_000, 4_000])
    clock = TidClock(clock_id=3, now_us=lambda: next(readings))
    tids = [clock.next() for _ in range(5)]
    assert [parse_tid(tid)[0] for tid in tids] == [1_000, 1_001, 1_002, 5_000, 5_001]
    assert sorted(tids) == tids
    assert len(set(tids)) == 5


def test_tid_clock_follows_the_wall_clock() -> None:
    """A default TidClock stamps TIDs with the current time in microseconds."""
    before = time.time_ns() // 1000
    us, clock_id = parse_tid(TidClock().next())
    assert before <= us <= time.time_ns() // 1000
    assert clock_id == 0


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


# Jetstream


def jetstream_url(sim: SimulatedJetstream, query: str) -> str:
    return f"{sim.url}?{query}"


async def test_jetstream_without_cursor_streams_live_only(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """Jetstream sends only events published after the connection when no cursor is given."""
    jetstream.commit(DID, "sh.tangled.repo", "old", "create", {"name": "a"})
    async with session.ws_connect(jetstream_url(jetstream, "wantedCollections=sh.tangled.repo")) as ws:
        await jetstream.wait_connected()
        jetstream.commit(DID, "sh.tangled.repo", "new", "create", {"name": "b"})
        event = await recv_json(ws)
    assert event["commit"] == {
        "rev": event["commit"]["rev"],
        "operation": "create",
        "collection": "sh.tangled.repo",
        "rkey": "new",
        "record": {"name": "b"},
        "cid": event["commit"]["cid"],
    }
    assert list(event) == ["did", "time_us", "kind", "commit"]


async def test_jetstream_replays_from_cursor_inclusive_then_goes_live(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """Jetstream replays events with time_us >= cursor, then streams live events, in order."""
    first = jetstream.commit(DID, "sh.tangled.repo", "a", "create", {"n": 1})
    second = jetstream.commit(DID, "sh.tangled.repo", "b", "update", {"n": 2})
    query = f"cursor={second['time_us']}&wantedCollections=sh.tangled.repo"
    async with session.ws_connect(jetstream_url(jetstream, query)) as ws:
        assert (await recv_json(ws))["time_us"] == second["time_us"]
        third = jetstream.commit(DID, "sh.tangled.repo", "a", "delete")
        live = await recv_json(ws)
    assert live["time_us"] == third["time_us"] > second["time_us"] > first["time_us"]
    assert live["commit"] == {
        "rev": third["commit"]["rev"],
        "operation": "delete",
        "collection": "sh.tangled.repo",
        "rkey": "a",
    }
    assert jetstream.connect_queries == [query]
    assert jetstream.connect_cursors == [str(second["time_us"])]


async def test_jetstream_filters_collections_but_passes_account_events(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """wantedCollections (exact or .* prefix) filters commits only; identity/account events always pass."""
    query = "wantedCollections=sh.tangled.spindle.member&wantedCollections=sh.tangled.repo.*"
    async with session.ws_connect(jetstream_url(jetstream, query)) as ws:
        await jetstream.wait_connected()
        jetstream.commit(DID, "app.bsky.feed.post", "p", "create", {"text": "hi"})
        jetstream.commit(DID, "sh.tangled.repo", "r", "create", {"name": "x"})
        jetstream.commit(DID, "sh.tangled.repo.collaborator", "c", "create", {"subject": DID})
        jetstream.publish({"did": DID, "kind": "identity", "identity": {"did": DID, "handle": "a.test"}})
        jetstream.commit(DID, "sh.tangled.spindle.member", "m", "create", {"subject": DID})
        events = [await recv_json(ws) for _ in range(3)]
    kinds = [(e["kind"], e.get("commit", {}).get("rkey")) for e in events]
    assert kinds == [("commit", "c"), ("identity", None), ("commit", "m")]


async def test_jetstream_filters_wanted_dids(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """wantedDids drops every event whose author is not listed."""
    other = "did:plc:someoneelse"
    async with session.ws_connect(jetstream_url(jetstream, f"wantedDids={DID}")) as ws:
        await jetstream.wait_connected()
        jetstream.commit(other, "sh.tangled.repo", "x", "create", {})
        jetstream.publish({"did": other, "kind": "account", "account": {"active": True}})
        jetstream.commit(DID, "sh.tangled.repo", "y", "create", {})
        assert (await recv_json(ws))["did"] == DID


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("cursor=12abc", "invalid cursor: 12abc"),
        ("cursor=99999999999999999999", "invalid cursor: 99999999999999999999"),
        ("wantedCollections=not-an-nsid", "invalid subscriber options: invalid collection: not-an-nsid"),
        ("wantedDids=plc:abc", "invalid subscriber options"),
    ],
)
async def test_jetstream_refuses_malformed_options_with_400(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession, query: str, body: str
) -> None:
    """Jetstream answers 400 with a plain-text reason for a bad cursor, collection or DID."""
    async with session.get(jetstream_url(jetstream, query)) as response:
        assert response.status == 400
        assert await response.text() == body


async def test_jetstream_future_cursor_means_live_only(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """Jetstream treats a cursor in the future as no cursor."""
    jetstream.commit(DID, "sh.tangled.repo", "old", "create", {})
    future = time.time_ns() // 1000 + 3_600_000_000
    async with session.ws_connect(jetstream_url(jetstream, f"cursor={future}")) as ws:
        await jetstream.wait_connected()
        jetstream.commit(DID, "sh.tangled.repo", "new", "create", {})
        assert (await recv_json(ws))["commit"]["rkey"] == "new"


async def test_jetstream_events_are_well_formed_and_strictly_ordered(jetstream: SimulatedJetstream) -> None:
    """Commits carry a TID rev and a CID except deletes; time_us strictly increases; bad input is refused."""
    created = jetstream.commit(DID, "sh.tangled.repo", "r", "create", {"b": 1, "a": 2})
    deleted = jetstream.commit(DID, "sh.tangled.repo", "r", "delete")
    assert list(created["commit"]["record"]) == ["a", "b"]
    assert re.fullmatch(r"bafyrei[a-z2-7]{52}", created["commit"]["cid"])
    assert is_tid(created["commit"]["rev"])
    assert "record" not in deleted["commit"] and "cid" not in deleted["commit"]
    assert deleted["time_us"] > created["time_us"]
    with pytest.raises(ValueError, match="time_us"):
        jetstream.publish({"did": DID, "kind": "account", "time_us": created["time_us"]})
    with pytest.raises(ValueError, match="record"):
        jetstream.commit(DID, "sh.tangled.repo", "r", "create")
    assert len(jetstream.events) == 2


async def test_jetstream_hostile_frames_and_drops_reach_clients(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """send_raw delivers arbitrary frames and drop_connections aborts every client."""
    async with session.ws_connect(jetstream.url) as ws:
        await jetstream.wait_connected()
        await jetstream.send_raw(b"\x28\xb5\x2f\xfd")
        message = await ws.receive(timeout=2.0)
        assert (message.type, message.data) == (aiohttp.WSMsgType.BINARY, b"\x28\xb5\x2f\xfd")
        await jetstream.drop_connections()
        assert (await ws.receive(timeout=2.0)).type is aiohttp.WSMsgType.CLOSED
    assert jetstream.connections == 0


async def test_jetstream_pings_on_a_fixed_period_even_while_events_flow(
    session: aiohttp.ClientSession,
) -> None:
    """Jetstream pings every ping_interval on a ticker, not only when the connection is idle."""

    async def publish(sim: SimulatedJetstream) -> None:
        for i in range(20):
            sim.commit(DID, "sh.tangled.repo", f"r{i}", "create", {})
            await asyncio.sleep(0.01)

    async with (
        SimulatedJetstream(ping_interval=0.05) as sim,
        session.ws_connect(sim.url, autoping=False) as ws,
    ):
        await sim.wait_connected()
        publisher = asyncio.create_task(publish(sim))
        seen: list[aiohttp.WSMsgType] = []
        while seen.count(aiohttp.WSMsgType.TEXT) < 20:
            seen.append((await ws.receive(timeout=2.0)).type)
        await publisher
    assert aiohttp.WSMsgType.PING in seen[: seen.index(aiohttp.WSMsgType.TEXT, 15)]


# Appview: /events


def test_rfc3339_parsing_is_strict_about_offsets() -> None:
    """Only RFC 3339 timestamps with a Z or ±hh:mm offset parse, fractions allowed."""
    assert parse_rfc3339("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_rfc3339("1970-01-01T01:00:00.5+01:00") == 500_000_000
    assert parse_rfc3339("0001-01-01T00:00:00Z") is not None
    assert parse_rfc3339("2024-02-29T23:59:59.123456789-07:30") is not None
    for bad in [
        "2025-12-03T09:21:51",
        "2025-12-03 09:21:51Z",
        "2025-12-03t09:21:51z",
        "2025-12-03T24:00:00Z",
        "2025-02-29T00:00:00Z",
        "2025-12-03T09:21:51+0100",
        "2025-12-03T09:21:51.Z",
        "2025-12-03T09:21:60Z",
    ]:
        assert parse_rfc3339(bad) is None, bad


def test_at_uri_parsing_follows_indigo() -> None:
    """Pipeline AT-URIs with a did:web host:port authority parse; malformed ones do not."""
    assert parse_at_uri("at://did:web:127.0.0.1:8080/sh.tangled.pipeline/3m7abc") == (
        "did:web:127.0.0.1:8080",
        "sh.tangled.pipeline",
        "3m7abc",
    )
    assert parse_at_uri("at://knot1.tangled.sh/sh.tangled.pipeline/x") is not None
    for bad in [
        "https://knot1/sh.tangled.pipeline/x",
        "at://did:web:/sh.tangled.pipeline/x",
        "at://did:web:knot/sh.tangled.pipeline/..",
        "at://did:web:knot/pipeline/x",
        "at://did:web:knot/sh.tangled.pipeline/a/b",
        "at://localhost/sh.tangled.pipeline/x",
    ]:
        assert parse_at_uri(bad) is None, bad


async def test_appview_cursor_is_its_own_clock_and_only_sent_on_reconnect(knot: SimulatedKnot) -> None:
    """The appview dials without a cursor first, then reconnects with its clock at the last dequeue."""
    host = knot.hostname
    knot.emit(STATUS_NSID, "s0", status_record(host, "p1", "pending", now_rfc3339()))
    async with AppviewClient(f"http://{host}") as appview:
        await appview.connect_events()
        await knot.wait_connected()
        knot.emit(STATUS_NSID, "s1", status_record(host, "p1", "running", now_rfc3339()))
        before = time.time_ns()
        await appview.wait_for(lambda: len(appview.rows) == 1)
        cursor = appview.cursor
        assert before <= cursor <= time.time_ns()
        await appview.disconnect_events()
        knot.emit(STATUS_NSID, "s2", status_record(host, "p1", "success", now_rfc3339()))
        await appview.connect_events()
        await appview.wait_for(lambda: len(appview.rows) == 2)
    assert knot.connect_cursors == [None, str(cursor)]
    assert appview.connect_urls == [f"ws://{host}/events", f"ws://{host}/events?cursor={cursor}"]
    assert [r["status"] for r in appview.statuses(host, "p1", "build.yml")] == ["running", "success"]
    assert appview.errors == []


async def test_appview_ignores_replayed_rkeys(knot: SimulatedKnot) -> None:
    """A status whose envelope rkey was already stored is a no-op counted as a duplicate."""
    host = knot.hostname
    async with AppviewClient(f"http://{host}") as appview:
        await appview.connect_events()
        await knot.wait_connected()
        knot.emit(STATUS_NSID, "same", status_record(host, "p", "running", now_rfc3339()))
        knot.emit(STATUS_NSID, "same", status_record(host, "p", "success", now_rfc3339()))
        await appview.wait_for(lambda: appview.duplicates == 1)
        assert [r["status"] for r in appview.statuses(host, "p", "build.yml")] == ["running"]


async def test_appview_latest_orders_by_created_second_then_arrival(knot: SimulatedKnot) -> None:
    """latest() picks the status with the newest createdAt second, arrival order breaking ties."""
    host = knot.hostname
    async with AppviewClient(f"http://{host}") as appview:
        await appview.connect_events()
        await knot.wait_connected()
        knot.emit(STATUS_NSID, "a", status_record(host, "p", "running", now_rfc3339(-5)))
        knot.emit(STATUS_NSID, "b", status_record(host, "p", "success", now_rfc3339(-10)))
        knot.emit(STATUS_NSID, "c", status_record(host, "q", "running", "2025-01-01T00:00:00Z"))
        knot.emit(STATUS_NSID, "d", status_record(host, "q", "failed", "2025-01-01T00:00:00.900Z"))
        await appview.wait_for(lambda: len(appview.rows) == 4)
    assert (appview.latest(host, "p", "build.yml") or {})["status"] == "running"
    assert (appview.latest(host, "q", "build.yml") or {})["status"] == "failed"
    assert appview.latest(host, "p", "other.yml") is None


async def test_appview_flags_undecodable_and_unshowable_statuses(knot: SimulatedKnot) -> None:
    """Naive or future createdAt is flagged but stored; bad AT-URIs, bad types and bad JSON are dropped."""
    host = knot.hostname
    async with AppviewClient(f"http://{host}") as appview:
        await appview.connect_events()
        await knot.wait_connected()
        knot.emit(STATUS_NSID, "naive", status_record(host, "p", "running", "2025-12-03T09:21:51"))
        knot.emit(STATUS_NSID, "future", status_record(host, "p", "running", now_rfc3339(3600)))
        knot.emit(STATUS_NSID, "offset", status_record(host, "p", "success", "2025-12-03T10:21:51.5+01:00"))
        knot.emit(STATUS_NSID, "uri", {**status_record(host, "p", "failed", now_rfc3339()), "pipeline": "p"})
        knot.emit(STATUS_NSID, "code", {**status_record(host, "p", "failed", now_rfc3339()), "exitCode": "1"})
        knot.emit(PIPELINE_NSID, "other", {})
        await knot.send_raw("{broken")
        await knot.send_raw(b"binary")
        knot.emit(STATUS_NSID, "last", status_record(host, "p", "success", now_rfc3339()))
        await appview.wait_for(lambda: "last" in {row.rkey for row in appview.rows})
    assert [row.rkey for row in appview.rows] == ["naive", "future", "offset", "last"]
    reasons = [error.reason for error in appview.errors]
    expected = [
        "not a JSON object",
        "not RFC 3339 with an offset",
        "later than",
        "not an AT-URI",
        "exitcode='1'",
    ]
    assert sorted(next(i for i, text in enumerate(expected) if text in reason) for reason in reasons) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert (appview.ignored, appview.binary_frames) == (1, 1)


async def test_appview_run_events_reconnects_after_a_drop(knot: SimulatedKnot) -> None:
    """run_events redials after the spindle drops the connection, resuming from its cursor."""
    stop = asyncio.Event()
    async with AppviewClient(f"http://{knot.hostname}") as appview:
        runner = asyncio.create_task(appview.run_events(stop, reconnect_delay=0.01))
        await knot.wait_connected()
        knot.emit(STATUS_NSID, "x", status_record(knot.hostname, "p", "running", now_rfc3339()))
        await appview.wait_for(lambda: len(appview.rows) == 1)
        await knot.drop_connections()
        await knot.wait_connected()
        stop.set()
        await runner
    assert knot.connect_cursors[1] == str(appview.cursor)


# Appview: /logs


class LogServer:
    """A scripted spindle /logs endpoint on loopback."""

    def __init__(self) -> None:
        self.scripts: dict[str, tuple[Frames, bool]] = {}
        self.app = web.Application()
        self.app.add_routes([web.get("/logs/{knot}/{rkey}/{name}", self.logs)])

    async def logs(self, request: web.Request) -> web.StreamResponse:
        key = "/".join(request.match_info[part] for part in ("knot", "rkey", "name"))
        if key == "k/r/moved.yml":
            raise web.HTTPFound("/logs/k/r/ok.yml")
        if key not in self.scripts:
            raise web.HTTPNotFound()
        frames, close = self.scripts[key]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in frames:
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)
        if close:
            await ws.close(code=1000, message=b"log stream complete")
        else:
            async for _ in ws:
                pass
        return ws


@pytest.fixture
async def log_server() -> AsyncIterator[tuple[LogServer, str]]:
    server = LogServer()
    runner = web.AppRunner(server.app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def line(**fields: object) -> str:
    return json.dumps({"time": "2025-12-03T09:21:51.123456789Z", **fields})


GOOD_STREAM: Frames = [
    line(
        kind="control",
        content="Clone repository into workspace",
        step_id=0,
        step_status="start",
        step_command="git init",
    ),
    line(kind="data", content="Initialized", step_id=0, stream="stdout"),
    line(kind="control", content="Clone repository into workspace", step_id=0, step_status="end"),
    line(kind="control", content="build", step_id=1, step_status="start", step_kind=1, step_command="make"),
    line(kind="data", content="cc -o a\ndone", step_id=1, stream="stderr"),
]


async def test_appview_reads_a_finished_log_stream(log_server: tuple[LogServer, str]) -> None:
    """A well-formed /logs stream decodes cleanly, renders every step and ends with close 1000."""
    server, base = log_server
    server.scripts["127.0.0.1:1/3m7abc/build.yml"] = (
        [*GOOD_STREAM, line(kind="control", content="build", step_id=1, step_status="end", step_kind=1)],
        True,
    )
    async with AppviewClient(base) as appview:
        result = await appview.read_logs("127.0.0.1:1", "3m7abc", "build.yml")
    assert (result.http_status, result.close_code, result.close_reason) == (101, 1000, "log stream complete")
    assert result.errors == []
    assert not result.timed_out
    assert render(result.lines) == [
        RenderedStep(0, "Clone repository into workspace", "git init", 0, ["Initialized"], True),
        RenderedStep(1, "build", "make", 1, ["cc -o a\ndone"], True),
    ]


async def test_appview_follows_a_running_log_stream_until_timeout(log_server: tuple[LogServer, str]) -> None:
    """An open /logs stream is read until the timeout, keeping the lines seen so far."""
    server, base = log_server
    server.scripts["k/r/run.yml"] = (GOOD_STREAM, False)
    async with AppviewClient(base) as appview:
        result = await appview.read_logs("k", "r", "run.yml", timeout=0.3)
    assert result.timed_out
    assert len(result.lines) == 5
    assert render(result.lines)[-1].ended is False


async def test_appview_log_dial_failures_show_nothing(log_server: tuple[LogServer, str]) -> None:
    """A refused upgrade or a redirect yields no lines, with the HTTP status recorded."""
    _, base = log_server
    async with AppviewClient(base) as appview:
        missing = await appview.read_logs("k", "r", "missing.yml")
        moved = await appview.read_logs("k", "r", "moved.yml")
    assert (missing.http_status, missing.lines, missing.close_code) == (404, [], None)
    assert (moved.http_status, moved.lines) == (302, [])


def test_log_decoding_flags_what_go_rejects_or_cannot_show() -> None:
    """Binary frames, bad JSON, naive times, non-integer step fields, unknown kinds and orphans are errors."""
    frames: Frames = [
        b'{"kind":"data"}',
        "{oops",
        json.dumps({"kind": "data", "content": "x", "time": "2025-12-03T09:21:51", "step_id": 0}),
        line(kind="control", content="s", step_id=0, step_status="start", step_kind="1"),
        line(kind="control", content="s", step_id=1.0, step_status="start"),
        line(kind="data", content="orphan", step_id=7),
        line(kind="info", content="?", step_id=0),
        json.dumps({"kind": "data", "content": "no time", "step_id": 0}),
        line(kind="control", content="t", step_id=2, step_status="end"),
        line(kind="control", content="u", step_id=3, step_status="start"),
        line(kind="control", content="u", step_id=3, step_status="start"),
        line(kind="control", content="ok", step_id=4, step_status="start", step_kind=True),
    ]
    lines, errors = decode_log_frames(frames)
    assert [error.index for error in errors] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert "binary" in errors[0].reason
    assert errors[1].reason == "not JSON"
    assert "not RFC 3339" in errors[2].reason
    assert "step_kind='1' is not a Go int" in errors[3].reason
    assert "step_id=1.0 is not a Go int" in errors[4].reason
    assert "invisible" in errors[5].reason
    assert "neither data nor control" in errors[6].reason
    assert "missing time" in errors[7].reason
    assert "never started" in errors[8].reason
    assert "duplicate DOM id" in errors[9].reason
    assert "step_kind=True is not a Go int" in errors[10].reason
    assert [(step.step_id, step.lines) for step in render(lines)] == [(3, []), (3, [])]


def test_render_hides_the_stock_two_frame_error() -> None:
    """The stock failed-before-logs frames (control without step_status, then data) render nothing."""
    frames: Frames = [
        '{"kind":"control","content":"","time":"0001-01-01T00:00:00Z","step_id":0,"step_kind":1}',
        '{"kind":"data","content":"unknown engine \\"x\\"","time":"0001-01-01T00:00:00Z","step_id":0}',
    ]
    lines, errors = decode_log_frames(frames)
    assert len(lines) == 2
    assert [error.index for error in errors] == [1]
    assert render(lines) == []
