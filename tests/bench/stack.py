"""The system under test for the benchmarks: tack's real processes on loopback, plus a fake knot.

The simulated Jetstream and knot live in the orchestrator's event loop (they
only feed tack); the control plane and the stub provider are ``python -m``
processes; load clients and limit servers are separate worker processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tack_common.pb import provider_pb2 as pb
from tack_control.web.tangled_json import tangled_frames
from tack_provider_kit.servicer import split_batches
from tack_sandbox.jetstream import SimulatedJetstream
from tack_sandbox.knot import (
    BATCH_LIMIT,
    DEFAULT_WORKFLOW_RAW,
    SimulatedKnot,
    pipeline_record,
    workflow_entry,
)
from tests.support.procs import StubProcess
from tests.support.stack import OWNER, ControlPlane, stub_workflow


REPO = "bench"
WORKFLOW = "bench.yml"
# A stub run that finishes at once: one step, no output, no queueing.
INSTANT: dict[str, Any] = {"queue_seconds": 0, "steps": [{"name": "build", "command": "true", "duration": 0}]}


class BenchKnot(SimulatedKnot):
    """The simulated knot, noting when each frame is first handed to a socket; pushes as fast as read, or paced."""

    def __init__(self) -> None:
        super().__init__(ping_interval=30.0)
        self.sent_ns: dict[str, int] = {}
        self._progress = asyncio.Event()

    async def _stream(self, ws: web.WebSocketResponse, cursor: int) -> int:
        for row in self._query(cursor):
            self.sent_ns.setdefault(row.rkey, time.monotonic_ns())
            await ws.send_str(row.frame)
            cursor = row.created
        self._progress.set()
        return cursor

    async def wait_sent(self, rkeys: list[str], timeout: float = 60.0) -> None:
        """Wait until the frames of all ``rkeys`` have been written to a subscriber."""
        async with asyncio.timeout(timeout):
            while any(rkey not in self.sent_ns for rkey in rkeys):
                self._progress.clear()
                await self._progress.wait()

    async def push_pipelines(self, records: list[dict[str, Any]]) -> list[str]:
        """Emit pipelines as fast as the subscriber takes them (one knot batch ahead); their rkeys."""
        rkeys: list[str] = []
        for start in range(0, len(records), BATCH_LIMIT):
            batch = [self.new_rkey() for _ in records[start : start + BATCH_LIMIT]]
            for rkey, record in zip(batch, records[start : start + BATCH_LIMIT], strict=True):
                self.emit_pipeline(rkey, record)
            await self.wait_sent(batch)
            rkeys.extend(batch)
        return rkeys

    async def pace(self, records: list[dict[str, Any]], rate: float) -> list[str]:
        """Emit one pipeline every ``1/rate`` seconds on a fixed schedule; their rkeys."""
        rkeys = []
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for i, record in enumerate(records):
            delay = begin + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            rkey = self.new_rkey()
            self.emit_pipeline(rkey, record)
            rkeys.append(rkey)
        await self.wait_sent(rkeys)
        return rkeys


def read_rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (10^6 bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


class BenchStack:
    """Jetstream and knot simulators, optionally the stub provider, and the control plane."""

    def __init__(self, workdir: Path, *, stub: bool = True) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.jetstream = SimulatedJetstream()
        self.knot = BenchKnot()
        self.stub: StubProcess | None = StubProcess(workdir) if stub else None
        self.control: ControlPlane | None = None

    @property
    def cp(self) -> ControlPlane:
        """The control plane process."""
        assert self.control is not None
        return self.control

    @property
    def db_path(self) -> Path:
        """The control plane's database file."""
        return self.workdir / "tack.db"

    async def start(self) -> None:
        """Start everything and register the bench repo so the control plane follows the knot."""
        await self.jetstream.start()
        await self.knot.start()
        if self.stub is not None:
            await self.stub.start_serving()
        await self.start_control()
        rkey = self.knot.new_rkey()
        record = {"name": REPO, "knot": self.knot.hostname, "spindle": self.cp.hostname}
        self.jetstream.commit(OWNER, "sh.tangled.repo", rkey, "create", record)
        await self.knot.wait_connected(1, timeout=20)

    async def start_control(self) -> None:
        """Start (or restart) the control plane on the same database and port."""
        env = {
            "TACK_JETSTREAM_URL": self.jetstream.url,
            "TACK_PROVIDERS": f"stub={self.stub.address}" if self.stub is not None else "",
            "TACK_PING_INTERVAL": "20",
        }
        if self.control is None:
            self.control = ControlPlane(self.workdir, env)
        await self.control.start_ready()
        await self.jetstream.wait_connected(1, timeout=20)

    async def restart_control(self) -> None:
        """Kill the control plane and start it again; returns when it follows the knot again."""
        self.cp.kill9()
        await self.knot.drop_connections()
        await self.jetstream.drop_connections()
        await self.start_control()
        await self.knot.wait_connected(1, timeout=30)

    async def stop(self) -> None:
        """Stop everything."""
        if self.control is not None:
            self.control.kill9()
        if self.stub is not None:
            self.stub.kill9()
        await self.knot.stop()
        await self.jetstream.stop()

    def pipeline(self, workflows: list[dict[str, Any]]) -> dict[str, Any]:
        """A push pipeline of the bench repo."""
        return pipeline_record(knot=self.knot.hostname, did=OWNER, repo=REPO, workflows=workflows)

    def stub_pipeline(self, script: dict[str, Any], name: str = WORKFLOW) -> dict[str, Any]:
        """A pipeline with one workflow routed to the stub with ``script``."""
        return self.pipeline([stub_workflow(name, script)])

    def unroutable_pipeline(self, count: int) -> dict[str, Any]:
        """A pipeline of ``count`` workflows without a ``tack:`` block: each is failed at intake."""
        return self.pipeline([workflow_entry(f"w{i}.yml", DEFAULT_WORKFLOW_RAW) for i in range(count)])

    def events_url(self, cursor: int | None = None) -> str:
        """The control plane's /events URL."""
        base = f"ws://{self.cp.hostname}/events"
        return base if cursor is None else f"{base}?cursor={cursor}"

    def logs_url(self, rkey: str, workflow: str = WORKFLOW) -> str:
        """The control plane's /logs URL of a workflow."""
        return f"ws://{self.cp.hostname}/logs/{self.knot.hostname}/{rkey}/{workflow}"

    def workflow_status(self, rkey: str, workflow: str = WORKFLOW) -> str | None:
        """The workflow's status in the control plane's database (None if unknown)."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10) as conn:
            row = conn.execute(
                "SELECT status FROM workflows WHERE knot=? AND rkey=? AND name=?",
                (self.knot.hostname, rkey, workflow),
            ).fetchone()
        return None if row is None else str(row[0])

    async def wait_status(self, rkey: str, statuses: tuple[str, ...], timeout: float = 300.0) -> None:
        """Poll the control plane's database until the workflow has one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while self.workflow_status(rkey) not in statuses:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflow {rkey} not in {statuses} after {timeout:g}s")
            await asyncio.sleep(0.1)

    def events_frames(self, last: int) -> list[str]:
        """The newest ``last`` stored /events frames, oldest first."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute("SELECT frame FROM events ORDER BY created DESC LIMIT ?", (last,)).fetchall()
        return [str(r[0]) for r in reversed(rows)]

    def stub_log(self, rkey: str, workflow: str = WORKFLOW) -> list[pb.LogLine]:
        """Every log line the stub stored for a run."""
        assert self.stub is not None
        with sqlite3.connect(f"file:{self.stub.db_path}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute(
                "SELECT l.line FROM stub_log l JOIN runs r ON r.id = l.run_id"
                " WHERE r.knot=? AND r.pipeline_rkey=? AND r.workflow=? ORDER BY l.idx",
                (self.knot.hostname, rkey, workflow),
            ).fetchall()
        return [pb.LogLine.FromString(r[0]) for r in rows]


def log_frames(lines: list[pb.LogLine]) -> list[str]:
    """The /logs frames tack sends for these lines (the limit servers send these pre-encoded)."""
    return tangled_frames(lines)


def log_messages(lines: list[pb.LogLine]) -> list[bytes]:
    """The serialized LogsResponse messages a provider sends for these lines (batched as tack's kit does)."""
    return [pb.LogsResponse(lines=batch).SerializeToString() for batch in split_batches(lines)]
