"""Fault injection (tack_common.faults) on a real SQLite database and over HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tack_common.faults import FaultInjector
from tack_common.sqlite import Transaction, connect
from tack_common.supervise import Supervisor


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = connect(str(tmp_path / "faults.db"))
    opened.execute("CREATE TABLE write_probe (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    opened.execute("CREATE TABLE t (v BLOB)")
    yield opened
    opened.close()


async def test_write_failure_refuses_every_write_then_lifts(conn: sqlite3.Connection) -> None:
    """While injected, inserts, updates and deletes fail (SQLITE_AUTH) and reads work; then writes work again."""
    conn.execute("INSERT INTO t VALUES (1)")
    FaultInjector(Supervisor(), conn).fail_writes(0.3)
    for statement in ("INSERT INTO t VALUES (2)", "UPDATE t SET v=3", "DELETE FROM t"):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute(statement)
    with pytest.raises(sqlite3.DatabaseError), Transaction(conn):
        conn.execute("INSERT INTO t VALUES (4)")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    await asyncio.sleep(0.4)
    conn.execute("INSERT INTO t VALUES (5)")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2


async def test_disk_full_leaves_no_room_to_grow_then_gives_it_back(conn: sqlite3.Connection) -> None:
    """While injected, a write that needs a new page fails with SQLITE_FULL, even with free pages
    in the file before; afterwards the same write succeeds and the filler is gone."""
    conn.execute("INSERT INTO t VALUES (zeroblob(200000))")
    conn.execute("DELETE FROM t")  # leaves free pages behind
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 0
    FaultInjector(Supervisor(), conn).fill_disk(0.3)
    with pytest.raises(sqlite3.OperationalError, match="full") as caught:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert caught.value.sqlite_errorname == "SQLITE_FULL"
    await asyncio.sleep(0.4)
    conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert conn.execute("SELECT COUNT(*) FROM write_probe").fetchone()[0] == 0


@pytest.fixture
async def server(conn: sqlite3.Connection) -> AsyncIterator[tuple[str, Supervisor]]:
    supervisor = Supervisor()
    app = web.Application()
    FaultInjector(supervisor, conn).add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", supervisor
    finally:
        await supervisor.close()
        await runner.cleanup()


async def test_the_http_endpoints_crash_tasks_and_refuse_bad_requests(server: tuple[str, Supervisor]) -> None:
    """POST /_faults/crash fails the running tasks of a kind and answers once they are down; GET /_faults
    lists kinds; bad parameters and unknown faults are refused."""
    base, supervisor = server
    supervisor.spawn("sleeper", asyncio.Event().wait, name="sleeper:1")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/_faults") as resp:
            assert (await resp.json())["kinds"] == ["sleeper"]
        async with session.post(f"{base}/_faults/crash", params={"task": "sleeper", "hold": "5"}) as resp:
            assert (resp.status, (await resp.json())["tasks"]) == (200, ["sleeper:1"])
        assert [t.name for t in supervisor.down()] == ["sleeper:1"]
        for path, params, status in (
            ("crash", {}, 400),
            ("crash", {"task": "x", "hold": "soon"}, 400),
            ("disk_full", {"seconds": "-1"}, 400),
            ("flood", {}, 404),
        ):
            async with session.post(f"{base}/_faults/{path}", params=params) as resp:
                assert resp.status == status, path
        # A reverse proxy on this host relays other clients: refused.
        async with session.post(
            f"{base}/_faults/disk_full", headers={"X-Forwarded-For": "203.0.113.9"}
        ) as resp:
            assert resp.status == 403
