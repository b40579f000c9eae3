"""Fault injection for tests and chaos runs, enabled by ``TACK_FAULT_INJECTION`` (never in production).

Three faults, each asked for over HTTP by a loopback client:

- ``POST /_faults/crash?task=<kind>&hold=<s>``: every running supervised task
  of that kind fails where it waits, and its restarts fail for ``hold`` seconds;
- ``POST /_faults/write_failure?seconds=<s>``: every write to the process's
  database fails (an authorizer refuses it: ``SQLITE_AUTH``) for that long;
- ``POST /_faults/disk_full?seconds=<s>``: the database cannot grow by a single
  page (its free pages are taken and ``PRAGMA max_page_count`` is set to its
  size: ``SQLITE_FULL``) for that long.

``GET /_faults`` lists the task kinds running now.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sqlite3
import time

from aiohttp import web

from tack_common.supervise import Supervisor


log = logging.getLogger(__name__)

_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
_FILLER_ID = 2
MAX_SECONDS = 600.0


class FaultInjector:
    """Injects faults into one process: its supervised tasks and its database connection."""

    def __init__(self, supervisor: Supervisor, conn: sqlite3.Connection) -> None:
        self.supervisor = supervisor
        self.conn = conn
        self._writes_fail_until = 0.0
        self._disk_full_until = 0.0
        self._max_page_count: int | None = None

    def crash(self, kind: str, hold: float = 0.0) -> list[str]:
        """Fail every running task of ``kind`` (and its restarts for ``hold`` seconds); the names hit."""
        hit = self.supervisor.inject(kind, hold)
        log.warning("fault injected: task crash", extra={"kind": kind, "hold_s": hold, "tasks": len(hit)})
        return hit

    def fail_writes(self, seconds: float) -> None:
        """Make every write to the database fail for ``seconds``."""
        self._writes_fail_until = max(self._writes_fail_until, time.monotonic() + seconds)
        self.conn.set_authorizer(self._authorize)
        asyncio.get_running_loop().call_later(seconds, self._writes_back)
        log.warning("fault injected: write failure", extra={"seconds": seconds})

    def _authorize(self, action: int, *_: object) -> int:
        if action in _WRITES and time.monotonic() < self._writes_fail_until:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _writes_back(self) -> None:
        if time.monotonic() >= self._writes_fail_until:
            self.conn.set_authorizer(None)

    def fill_disk(self, seconds: float) -> None:
        """Leave the database no room to grow for ``seconds`` (as a full disk would)."""
        if self._max_page_count is None:
            page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
            free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
            if free:
                # Take the free pages, so that no write finds room inside the file either.
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute(
                        "INSERT OR REPLACE INTO write_probe (id, data) VALUES (?, zeroblob(?))",
                        (_FILLER_ID, free * page_size),
                    )
            self._max_page_count = int(self.conn.execute("PRAGMA max_page_count").fetchone()[0])
            pages = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
            self.conn.execute(f"PRAGMA max_page_count={pages}")
        self._disk_full_until = max(self._disk_full_until, time.monotonic() + seconds)
        asyncio.get_running_loop().call_later(seconds, self._disk_back)
        log.warning("fault injected: disk full", extra={"seconds": seconds})

    def _disk_back(self) -> None:
        if self._max_page_count is None or time.monotonic() < self._disk_full_until:
            return
        self.conn.execute(f"PRAGMA max_page_count={self._max_page_count}")
        self._max_page_count = None
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("DELETE FROM write_probe WHERE id = ?", (_FILLER_ID,))

    async def _settled(self, names: list[str], timeout: float = 2.0) -> None:
        """Until the tasks hit have taken their failure (so the caller sees them down), or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = {info.name for info in self.supervisor.tasks() if info.state == "running"}
            if not running.intersection(names):
                return
            await asyncio.sleep(0.01)

    # HTTP

    def add_routes(self, app: web.Application) -> None:
        """Serve the fault endpoints on ``app``."""
        app.router.add_get("/_faults", self._list)
        app.router.add_post("/_faults/{fault}", self._inject)

    async def _list(self, request: web.Request) -> web.Response:
        _loopback_only(request)
        return web.json_response({"kinds": self.supervisor.kinds()})

    async def _inject(self, request: web.Request) -> web.Response:
        _loopback_only(request)
        fault = request.match_info["fault"]
        if fault == "crash":
            kind = request.query.get("task", "")
            if not kind:
                raise web.HTTPBadRequest(text="task: required (a task kind, see GET /_faults)\n")
            hit = self.crash(kind, _seconds(request, "hold", 0.0))
            await self._settled(hit)
            return web.json_response({"ok": True, "tasks": hit})
        if fault == "write_failure":
            self.fail_writes(_seconds(request, "seconds", 3.0))
        elif fault == "disk_full":
            self.fill_disk(_seconds(request, "seconds", 3.0))
        else:
            raise web.HTTPNotFound(text="faults: crash, write_failure, disk_full\n")
        return web.json_response({"ok": True})


_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _loopback_only(request: web.Request) -> None:
    """403 unless the client is on this host and not a reverse proxy relaying someone else."""
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback or any(name in request.headers for name in _PROXY_HEADERS):
        raise web.HTTPForbidden(text="fault injection answers loopback clients only\n")


def _seconds(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a number of seconds, got {raw!r}\n") from None
    if not 0 <= value <= MAX_SECONDS:
        raise web.HTTPBadRequest(text=f"{name}: between 0 and {MAX_SECONDS:g} seconds\n")
    return value
