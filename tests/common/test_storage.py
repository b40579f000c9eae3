"""The database write probe (tack_common.storage): a real write, its metric, and one log line per interval."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tack_common.faults import FaultInjector
from tack_common.sqlite import connect
from tack_common.storage import WriteProbe, probe_write
from tack_common.supervise import Supervisor


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = connect(str(tmp_path / "probe.db"))
    opened.execute("CREATE TABLE write_probe (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    yield opened
    opened.close()


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def writable() -> float | None:
    return REGISTRY.get_sample_value("tack_database_writable")


def test_the_probe_commits_a_write_and_leaves_nothing_behind(conn: sqlite3.Connection) -> None:
    """probe_write commits (the connection is outside a transaction after it) and keeps no row."""
    probe_write(conn)
    assert not conn.in_transaction
    assert conn.execute("SELECT COUNT(*) FROM write_probe").fetchone()[0] == 0


async def test_a_full_database_fails_the_probe_is_logged_once_per_interval_and_recovers(
    conn: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """With no room to grow the probe fails (metric 0, one error line a minute however often it runs);
    with room again it passes and says so once."""
    clock = Clock()
    probe = WriteProbe(conn, clock=clock)
    assert probe.check() and writable() == 1
    FaultInjector(Supervisor(), conn).fill_disk(60)
    for _ in range(5):
        clock.now += 5
        assert not probe.check()
    assert writable() == 0
    assert probe.problems() == ["database cannot be written (SQLITE_FULL: database or disk is full)"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["database cannot be written"]
    clock.now += 60
    assert not probe.check()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    conn.execute("PRAGMA max_page_count=1073741823")
    clock.now += 5
    assert probe.check() and writable() == 1
    assert [r.getMessage() for r in caplog.records if r.name == "tack_common.storage"][-1:] == [
        "database writable again"
    ]


def test_check_reuses_a_recent_result(conn: sqlite3.Connection) -> None:
    """check(max_age) probes again only when the last probe is older than max_age."""
    clock = Clock()
    probe = WriteProbe(conn, clock=clock)
    probe.check()
    first = probe.checked_at
    clock.now += 0.5
    probe.check(max_age=1.0)
    assert probe.checked_at == first
    clock.now += 1.0
    probe.check(max_age=1.0)
    assert probe.checked_at == clock.now
