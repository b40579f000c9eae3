"""Fixtures of the control plane's unit tests: a real SQLite database under tmp_path and the parts over it;
a fake PLC directory and PDS on loopback for identity and service auth."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tack_control.engine.db import open_db
from tack_control.engine.eventlog import EventLog
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.registry import Registry
from tack_control.netguard import Fetcher
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.samples import (
    HOST,
    OWNER,
    World,
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The control plane database in a fresh file."""
    connection = open_db(str(tmp_path / "tack.db"))
    yield connection
    connection.close()


@pytest.fixture
def events(conn: sqlite3.Connection) -> EventLog:
    """The event log on the test database."""
    return EventLog(conn)


@pytest.fixture
def book(conn: sqlite3.Connection, events: EventLog) -> StatusBook:
    """The status book on the test database."""
    return StatusBook(conn, events)


@pytest.fixture
def registry(conn: sqlite3.Connection) -> Registry:
    """A registry for HOST owned by OWNER."""
    return Registry(conn, HOST, OWNER)


@pytest.fixture
def world(conn: sqlite3.Connection) -> World:
    """The intake world on the test database."""
    return World(conn)


@pytest.fixture
async def plc() -> AsyncIterator[FakePlc]:
    """A fake PLC directory on loopback."""
    fake = FakePlc()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def pds() -> AsyncIterator[FakePds]:
    """A fake PDS on loopback."""
    fake = FakePds()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    """A fetcher with TACK_DEV's policy (http and loopback allowed), 1 s per fetch."""
    f = Fetcher(dev=True, timeout_s=1.0)
    yield f
    await f.close()
