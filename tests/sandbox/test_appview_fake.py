"""The fake appview reads /events and /logs as Tangled's appview does (tests.fakes.appview)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tack_sandbox.knot import PIPELINE_NSID, SimulatedKnot
from tests.fakes.appview import (
    STATUS_NSID,
    AppviewClient,
    RenderedStep,
    decode_log_frames,
    parse_at_uri,
    parse_rfc3339,
    render,
)
from tests.support.wsclient import (
    Frames,
    now_rfc3339,
    status_record,
)


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
