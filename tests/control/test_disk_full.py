"""A full disk (simulated with PRAGMA max_page_count, TACK_FAULT_INJECTION) in the control plane and in a
provider, under a stream of pipelines: readiness goes false while it lasts, errors are logged once per
interval rather than once per event, nothing already accepted is lost, and everything resumes when space
returns; checked with the chaos harness's invariants (one terminal status each, as scripted, forward
only, nothing started twice)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import sqlite3
import time
from pathlib import Path

import pytest

from tack_common import client, health
from tests.chaos.invariants import Expected, check_single_start, check_statuses
from tests.fakes.appview import AppviewClient
from tests.support.faults import eventually, inject, readiness
from tests.support.procs import Proc
from tests.support.stack import OWNER, TERMINAL, Stack, registered, stub_workflow


pytestmark = pytest.mark.e2e

ENV = {"TACK_FAULT_INJECTION": "1"}
FULL_SECONDS = 8.0


def errors_between(proc: Proc, start: float, end: float, level: str = "error") -> list[dict[str, object]]:
    """The log records at ``level`` or above that ``proc`` wrote between two wall-clock times."""
    levels = ("warning", "error", "critical")[("warning", "error", "critical").index(level) :]
    found = []
    for line in proc.output().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            ts = time.mktime(time.strptime(record["ts"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if record.get("level") in levels and start - 1 <= ts <= end + 1:
                found.append(record)
    return found


class Load:
    """Pipelines of stub workflows with scripted outcomes, and what must become of them."""

    def __init__(self, stack: Stack, seed: int) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.expected: list[Expected] = []

    def push(self) -> None:
        workflows, wanted = [], []
        for i in range(self.rng.randint(1, 3)):
            outcome = self.rng.choice(("success", "success", "failed"))
            script = {
                "queue_seconds": self.rng.uniform(0, 0.3),
                "steps": [{"name": "work", "output_count": 20, "duration": self.rng.uniform(0.2, 1.5)}],
                "outcome": outcome,
            }
            workflows.append(stub_workflow(f"w{i}.yml", script))
            wanted.append((f"w{i}.yml", outcome))
        rkey = self.stack.push(OWNER, "hello", workflows)
        self.expected += [Expected(self.stack.knot.hostname, rkey, n, "stub", o) for n, o in wanted]

    async def drive(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.push()
            await asyncio.sleep(0.15)

    async def settle(self, appview: AppviewClient, timeout: float = 90) -> None:
        def done() -> bool:
            return all(
                (appview.latest(w.knot, w.rkey, w.workflow) or {}).get("status") in TERMINAL
                for w in self.expected
            )

        await appview.wait_for(done, timeout=timeout)

    def violations(self, appview: AppviewClient) -> list[str]:
        seen: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
        for row in appview.rows:
            seen[(row.knot, row.pipeline_rkey, row.workflow)].append(row.status)
        with contextlib.closing(sqlite3.connect(self.stack.stub.db_path)) as conn:
            rows = conn.execute(
                "SELECT knot, pipeline_rkey, workflow, COUNT(*) FROM status_log WHERE status = 1"
                " GROUP BY knot, pipeline_rkey, workflow"
            ).fetchall()
        starts = {(k, r, w): int(n) for k, r, w, n in rows}
        problems = check_statuses(self.expected, seen) + check_single_start(starts, self.expected)
        for db in (self.stack.cp.db_path, self.stack.stub.db_path):
            with contextlib.closing(sqlite3.connect(db)) as conn:
                if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    problems.append(f"{db.name} fails integrity_check")
        return problems


async def test_a_full_disk_in_the_control_plane_loses_nothing_and_everything_resumes(tmp_path: Path) -> None:
    """Control plane disk full for 8 s under load: /readyz says the database cannot be written, a
    handful of error lines (not one per event), then every workflow ends once, as scripted."""
    async with Stack(tmp_path, control_env=ENV) as stack:
        await registered(stack, OWNER)
        appview = AppviewClient(stack.cp.http)
        await appview.connect_events()
        load = Load(stack, seed=1)
        try:
            await load.drive(2.0)
            started = time.time()
            await inject(stack.cp.http, "disk_full", FULL_SECONDS)
            driving = asyncio.create_task(load.drive(FULL_SECONDS))

            async def unwritable() -> bool:
                status, body = await readiness(stack.cp.http)
                return status == 503 and any("database cannot be written" in p for p in body["problems"])

            await eventually(unwritable, FULL_SECONDS, "readiness says the database cannot be written")
            await driving
            ended = time.time()

            async def ready() -> bool:
                return (await readiness(stack.cp.http))[0] == 200

            await eventually(ready, 30, "ready once space returns")
            await load.drive(2.0)
            await load.settle(appview)
            assert load.violations(appview) == []
            failures = errors_between(stack.cp, started, ended)
            assert failures, "the full disk was logged"
            assert len(failures) <= 12, [f"{r.get('msg')} {r.get('kind', '')}" for r in failures]
            assert sum(r["msg"] == "database cannot be written" for r in failures) == 1
            assert len(load.expected) > 3 * len(failures)
        finally:
            await appview.close()


async def test_a_full_disk_in_a_provider_loses_nothing_and_everything_resumes(tmp_path: Path) -> None:
    """Stub provider disk full for 8 s under load: NOT_SERVING meanwhile, Spawns answered UNAVAILABLE
    and retried, runs restarted; afterwards every workflow ends once, as scripted, none started twice."""
    async with Stack(tmp_path, stub_env=ENV) as stack:
        await registered(stack, OWNER)
        appview = AppviewClient(stack.cp.http)
        await appview.connect_events()
        load = Load(stack, seed=2)
        base = f"http://127.0.0.1:{stack.stub.metrics_port}"
        try:
            await load.drive(2.0)
            started = time.time()
            await inject(base, "disk_full", FULL_SECONDS)
            driving = asyncio.create_task(load.drive(FULL_SECONDS))

            async def not_serving() -> bool:
                async with client.channel(stack.stub.address) as channel:
                    return await health.check(channel, timeout=2) != health.SERVING

            await eventually(not_serving, FULL_SECONDS, "the provider reports NOT_SERVING")
            await driving
            ended = time.time()

            async def serving() -> bool:
                return not await not_serving()

            await eventually(serving, 30, "SERVING once space returns")
            await load.drive(2.0)
            await load.settle(appview)
            assert load.violations(appview) == []
            failures = errors_between(stack.stub, started, ended)
            assert failures, "the full disk was logged"
            assert len(failures) <= 12, [f"{r.get('msg')} {r.get('kind', '')}" for r in failures]
            assert len(load.expected) > 3 * len(failures)
            retries = [
                r for r in errors_between(stack.cp, started, ended, "warning") if "retried" in str(r["msg"])
            ]
            assert 1 <= len(retries) <= 2, (
                "the control plane logs the unavailable provider once, not per Spawn"
            )
        finally:
            await appview.close()
