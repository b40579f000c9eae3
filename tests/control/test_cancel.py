"""Cancelling: cancelled in Tangled's view at once; the provider told over real gRPC until it has taken it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_control.engine.cancel import CANCELLED_ERROR, Cancellations
from tack_control.engine.dispatch import Dispatcher
from tack_control.engine.eventlog import EventLog
from tack_control.engine.providers import ProviderClient
from tack_control.engine.statuses import StatusBook
from tests.fakes.provider import RawLogsProvider
from tests.support.ci import KNOT as CI_KNOT, PipelineMaker, sha
from tests.support.current import until
from tests.support.samples import KNOT, PIPELINE_RKEY, add_workflow, published


@pytest.fixture
async def provider() -> AsyncIterator[RawLogsProvider]:
    """A real gRPC provider on loopback that records Cancel calls."""
    fake = RawLogsProvider([])
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def _workflows(conn: sqlite3.Connection, book: StatusBook) -> dict[str, int]:
    """Three workflows of one pipeline: running with the provider, pending with it, still waiting for Spawn."""
    ids = {}
    with book.transaction() as tx:
        for name, dispatch, status in (
            ("a.yml", "accepted", "running"),
            ("b.yml", "accepted", "pending"),
            ("c.yml", "queued", "pending"),
        ):
            ids[name] = add_workflow(tx, name)
            tx.execute("UPDATE workflows SET dispatch=? WHERE id=?", (dispatch, ids[name]))
            book.record(tx, ids[name], status)
    return ids


async def test_cancel_publishes_cancelled_at_once_and_tells_the_provider_once(
    conn: sqlite3.Connection, provider: RawLogsProvider
) -> None:
    """Every unfinished workflow is cancelled with the stock error; spawned ones are cancelled at the provider once,
    one never spawned is asked once too (its Spawn may have been in flight) and dropped on NOT_FOUND."""
    book = StatusBook(conn, EventLog(conn))
    _workflows(conn, book)
    provider.strict_cancel = True
    provider.spawned.update({(KNOT, PIPELINE_RKEY, "a.yml"), (KNOT, PIPELINE_RKEY, "b.yml")})
    client = ProviderClient("stub", provider.address)
    cancels = Cancellations(book, {"stub": client})
    try:
        with book.transaction() as tx:
            assert cancels.request(tx, KNOT, PIPELINE_RKEY, None) == ["a.yml", "b.yml", "c.yml"]
        rows = conn.execute(
            "SELECT name, status, error, dispatch, cancel FROM workflows ORDER BY name"
        ).fetchall()
        assert rows == [
            ("a.yml", "cancelled", CANCELLED_ERROR, "accepted", "requested"),
            ("b.yml", "cancelled", CANCELLED_ERROR, "accepted", "requested"),
            ("c.yml", "cancelled", CANCELLED_ERROR, "cancelled", "requested"),
        ]
        assert await cancels.work_due() == 3
        assert sorted(k.workflow for k in provider.cancels) == ["a.yml", "b.yml", "c.yml"]
        assert conn.execute("SELECT name, cancel FROM workflows ORDER BY name").fetchall() == [
            ("a.yml", "done"),
            ("b.yml", "done"),
            ("c.yml", "dropped"),
        ]
        assert await cancels.work_due() == 0
        with book.transaction() as tx:
            assert cancels.request(tx, KNOT, PIPELINE_RKEY, None) == []
        assert len(provider.cancels) == 3
    finally:
        await client.close()


async def test_a_provider_that_cannot_cancel_is_asked_again_and_the_workflow_stays_cancelled(
    conn: sqlite3.Connection, provider: RawLogsProvider
) -> None:
    """An UNAVAILABLE Cancel is retried later; meanwhile and afterwards the workflow is cancelled, once."""
    book = StatusBook(conn, EventLog(conn))
    _workflows(conn, book)
    provider.cancel_failures = 1
    client = ProviderClient("stub", provider.address)
    cancels = Cancellations(book, {"stub": client})
    try:
        with book.transaction() as tx:
            cancels.request(tx, KNOT, PIPELINE_RKEY, ["a.yml"])
        await cancels.work_due()
        assert conn.execute(
            "SELECT cancel, cancel_attempts FROM workflows WHERE name='a.yml'"
        ).fetchone() == ("requested", 1)
        conn.execute("UPDATE workflows SET next_cancel_ns=0")
        await cancels.work_due()
        assert conn.execute("SELECT cancel FROM workflows WHERE name='a.yml'").fetchone() == ("done",)
        assert [k.workflow for k in provider.cancels] == ["a.yml", "a.yml"]
        # Published once (it may still wait for its createdAt second, as every status does).
        held = [r[0] for r in conn.execute("SELECT status FROM status_queue")]
        statuses = [r["status"] for r in published(book.events) if r["workflow"] == "a.yml"] + held
        assert statuses.count("cancelled") == 1
        assert conn.execute("SELECT status FROM workflows WHERE name='a.yml'").fetchone() == ("cancelled",)
        # b.yml was not named: untouched.
        assert conn.execute("SELECT status FROM workflows WHERE name='b.yml'").fetchone() == ("pending",)
    finally:
        await client.close()


def test_a_finished_workflow_is_not_cancelled(conn: sqlite3.Connection) -> None:
    """A workflow already terminal keeps its status and nothing is sent to its provider."""
    book = StatusBook(conn, EventLog(conn))
    ids = _workflows(conn, book)
    with book.transaction() as tx:
        book.record(tx, ids["a.yml"], "success")
    cancels = Cancellations(book, {})
    with book.transaction() as tx:
        assert cancels.request(tx, KNOT, PIPELINE_RKEY, ["a.yml"]) == []
    assert conn.execute("SELECT status, cancel FROM workflows WHERE name='a.yml'").fetchone() == (
        "success",
        "",
    )
    assert json.dumps(published(book.events)).count("cancelled") == 0


async def test_a_workflow_cancelled_while_its_spawn_is_in_flight_is_cancelled_at_the_provider_too(
    conn: sqlite3.Connection, provider: RawLogsProvider
) -> None:
    """Cancel while Spawn is held at the provider: cancelled at once; the early Cancel finds no run (NOT_FOUND), and
    when the Spawn is accepted the workflow is marked again and its new run cancelled, without waiting for a timer."""
    maker = PipelineMaker.on(conn)
    book = maker.book
    rkey = maker.make("push", "did:plc:repo0000000000000000000", sha(1))
    provider.strict_cancel = True
    provider.spawn_gate = asyncio.Event()
    client = ProviderClient("stub", provider.address)
    cancels = Cancellations(book, {"stub": client})
    dispatcher = Dispatcher(book, {"stub": client}, cancels=cancels.wake)
    tasks = [asyncio.create_task(dispatcher.run()), asyncio.create_task(cancels.run())]
    try:
        await until(lambda: len(provider.spawns) == 1, "the Spawn reaches the provider", timeout=5)
        with book.transaction() as tx:
            assert cancels.request(tx, CI_KNOT, rkey, None) == ["build.yml"]
        cancels.wake.notify()
        await until(lambda: len(provider.cancels) == 1, "the first Cancel", timeout=5)
        await until(
            lambda: conn.execute("SELECT cancel FROM workflows").fetchone() == ("dropped",),
            "the provider has no run yet",
            timeout=5,
        )
        provider.spawn_gate.set()
        await until(lambda: len(provider.cancels) == 2, "Cancel of the run the Spawn made", timeout=5)
        await until(
            lambda: conn.execute("SELECT dispatch, cancel FROM workflows").fetchone() == ("accepted", "done"),
            "the cancel is delivered",
            timeout=5,
        )
        assert conn.execute("SELECT status, error FROM workflows").fetchone() == (
            "cancelled",
            CANCELLED_ERROR,
        )
        assert {(k.pipeline_rkey, k.workflow) for k in provider.cancels} == {(rkey, "build.yml")}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dispatcher.close()
        await client.close()


async def test_a_stale_cancel_outcome_does_not_undo_a_new_mark(
    conn: sqlite3.Connection, provider: RawLogsProvider
) -> None:
    """A Cancel answered NOT_FOUND while the workflow was marked again meanwhile leaves the new mark to deliver."""
    book = StatusBook(conn, EventLog(conn))
    ids = _workflows(conn, book)
    provider.strict_cancel = True
    client = ProviderClient("stub", provider.address)
    cancels = Cancellations(book, {"stub": client})
    real_cancel = client.cancel

    async def cancel_then_rearm(key: pb.WorkflowKey, timeout: float) -> pb.CancelResponse:
        try:
            return await real_cancel(key, timeout)
        finally:
            # What Dispatcher._accept does when a Spawn in flight is accepted meanwhile.
            with book.transaction() as tx:
                tx.execute(
                    "UPDATE workflows SET cancel='requested', next_cancel_ns=0,"
                    " cancel_attempts=cancel_attempts+1 WHERE id=?",
                    (ids["c.yml"],),
                )

    client.cancel = cancel_then_rearm  # type: ignore[method-assign]
    try:
        with book.transaction() as tx:
            cancels.request(tx, KNOT, PIPELINE_RKEY, ["c.yml"])
        assert await cancels.work_due() == 1
        assert conn.execute("SELECT cancel FROM workflows WHERE name='c.yml'").fetchone() == ("requested",)
    finally:
        await client.close()
