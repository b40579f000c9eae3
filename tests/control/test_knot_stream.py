"""Following a current knot's /events: the envelope's created is the cursor, 1013 means "come back for more"."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator

import pytest

from tack_control.ingest.knots import KnotConsumers
from tack_control.ingest.wire import parse_knot_frame
from tack_sandbox.knot import SimulatedKnot


class Recorder:
    """A frame handler that keeps what it was given, as (rkey, created)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.arrived = asyncio.Event()

    def __call__(self, knot: str, frame: str | bytes) -> tuple[str, int]:
        message = parse_knot_frame(frame)
        self.seen.append((message.rkey, message.created))
        self.arrived.set()
        return "seen", message.created


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll ``predicate()`` until true."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
async def knot() -> AsyncIterator[SimulatedKnot]:
    """A current-protocol knot whose drain stops after 2 batches of 100."""
    async with SimulatedKnot(protocol="current", drain_cap=2, ping_interval=5) as sim:
        yield sim


async def test_a_new_subscription_starts_now_and_the_created_cursor_is_kept(
    conn: sqlite3.Connection, knot: SimulatedKnot
) -> None:
    """History before the first subscription is not replayed; later events arrive and their created is saved."""
    for _ in range(5):
        knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:x"})
    recorder = Recorder()
    consumers = KnotConsumers(conn, dev=True, handle=recorder)
    consumers.sync({knot.hostname})
    try:
        await knot.wait_connected()
        assert knot.connect_cursors[0] is not None and int(knot.connect_cursors[0]) > knot.events[-1].created
        created = knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "remove", "subject": "did:plc:x"})
        await wait_for(lambda: len(recorder.seen) == 1)
        assert recorder.seen == [(knot.events[-1].rkey, created)]
        assert conn.execute("SELECT cursor_ns, knot_clock FROM knot_cursors").fetchone() == (created, 1)
    finally:
        await consumers.close()


async def test_a_backlog_past_the_drain_cap_arrives_whole_once_and_in_order(
    conn: sqlite3.Connection, knot: SimulatedKnot
) -> None:
    """450 events behind the cursor come over several 1013-closed connections: each once, in created order."""
    conn.execute("INSERT INTO knot_cursors (knot, cursor_ns, knot_clock) VALUES (?, 1, 1)", (knot.hostname,))
    for _ in range(450):
        knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:x"})
    recorder = Recorder()
    consumers = KnotConsumers(conn, dev=True, handle=recorder)
    started = time.monotonic()
    consumers.sync({knot.hostname})
    try:
        await wait_for(lambda: len(recorder.seen) >= 450)
        await asyncio.sleep(0.2)
        assert [r for r, _ in recorder.seen] == [e.rkey for e in knot.events]
        assert len(knot.connect_cursors) == 3
        # Reconnecting after 1013 is immediate, not backed off.
        assert time.monotonic() - started < 3.0
        assert [int(c or 0) for c in knot.connect_cursors[1:]] == [
            knot.events[199].created,
            knot.events[399].created,
        ]
    finally:
        await consumers.close()


async def test_a_dropped_connection_resumes_from_the_saved_created_without_rewind(
    conn: sqlite3.Connection, knot: SimulatedKnot
) -> None:
    """After a drop the knot is asked for exactly what follows the last created seen: no loss, no duplicate."""
    recorder = Recorder()
    consumers = KnotConsumers(conn, dev=True, handle=recorder, rewind_s=30)
    consumers.sync({knot.hostname})
    try:
        await knot.wait_connected()
        knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:a"})
        await wait_for(lambda: len(recorder.seen) == 1)
        await knot.drop_connections()
        knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:b"})
        await wait_for(lambda: len(recorder.seen) == 2, timeout=15)
        assert [r for r, _ in recorder.seen] == [e.rkey for e in knot.events]
        assert knot.connect_cursors[-1] == str(knot.events[0].created)
    finally:
        await consumers.close()


async def test_a_knot_refusing_the_upgrade_when_overloaded_is_retried_and_nothing_is_lost(
    conn: sqlite3.Connection, knot: SimulatedKnot
) -> None:
    """Knot2's 503 Overloaded before the upgrade is survived: tack tries again later from its saved cursor."""
    first = knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:a"})
    conn.execute(
        "INSERT INTO knot_cursors (knot, cursor_ns, knot_clock) VALUES (?, ?, 1)", (knot.hostname, first)
    )
    for subject in ("did:plc:b", "did:plc:c"):
        knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": subject})
    knot.overloaded = 2
    recorder = Recorder()
    consumers = KnotConsumers(conn, dev=True, handle=recorder)
    consumers.sync({knot.hostname})
    try:
        await wait_for(lambda: len(recorder.seen) == 2, timeout=20)
        assert knot.refused_upgrades == 2
        assert [r for r, _ in recorder.seen] == [e.rkey for e in knot.events[1:]]
        assert knot.connect_cursors == [str(first)]
    finally:
        await consumers.close()


async def test_a_knot_no_longer_wanted_is_disconnected_and_its_cursor_kept(
    conn: sqlite3.Connection, knot: SimulatedKnot
) -> None:
    """sync() without the knot closes its stream; following it again resumes after the last event seen."""
    recorder = Recorder()
    consumers = KnotConsumers(conn, dev=True, handle=recorder)
    consumers.sync({knot.hostname})
    try:
        await knot.wait_connected()
        created = knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:a"})
        await wait_for(lambda: len(recorder.seen) == 1)
        consumers.sync(set())
        await wait_for(lambda: knot.connections == 0)
        assert consumers.tasks == {} and consumers.connected == set()
        knot.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:b"})
        consumers.sync({knot.hostname})
        await wait_for(lambda: len(recorder.seen) == 2)
        assert knot.connect_cursors[-1] == str(created)
    finally:
        await consumers.close()


async def test_a_legacy_knot_without_created_is_resumed_from_tacks_clock_rewound(
    conn: sqlite3.Connection,
) -> None:
    """A 2025 knot sends no created: the cursor is tack's clock when the event was handled, rewound on reconnect."""
    async with SimulatedKnot(protocol="legacy", ping_interval=5) as legacy:
        recorder = Recorder()
        consumers = KnotConsumers(conn, dev=True, handle=recorder, rewind_s=30)
        consumers.sync({legacy.hostname})
        try:
            await legacy.wait_connected()
            before = time.time_ns()
            legacy.emit("sh.tangled.knot.memberUpdate", None, {"op": "add", "subject": "did:plc:a"})
            await wait_for(lambda: len(recorder.seen) == 1)
            assert recorder.seen[0][1] == 0
            saved, knot_clock = conn.execute("SELECT cursor_ns, knot_clock FROM knot_cursors").fetchone()
            assert knot_clock == 0 and saved >= before
            await legacy.drop_connections()
            await wait_for(lambda: len(legacy.connect_cursors) == 2, timeout=15)
            assert legacy.connect_cursors[-1] == str(saved - 30 * 10**9)
        finally:
            await consumers.close()
