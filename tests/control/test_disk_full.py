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
from tack_sandbox.pulls import PULL_NSID, format_patch
from tests.chaos.invariants import Expected, check_single_start, check_statuses
from tests.fakes.appview import AppviewClient
from tests.support.current import make_world, until, workflow
from tests.support.faults import eventually, inject, readiness
from tests.support.procs import Proc
from tests.support.pulls import pull_of
from tests.support.stack import OWNER, TERMINAL, Stack, registered, stub_workflow


pytestmark = pytest.mark.e2e

ENV = {"TACK_FAULT_INJECTION": "1"}
FULL_SECONDS = 8.0
ON_PUSH = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'
ON_PULL = 'when:\n  - event: ["pull_request"]\n    branch: ["main"]\n'


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


async def test_current_tangled_pushes_and_pull_requests_during_a_full_disk_run_once_afterwards(
    tmp_path: Path,
) -> None:
    """Current Tangled: pushes from the knot's stream and a pull request from Jetstream arrive while the control
    plane's disk is full; once space returns each runs exactly once, at its commit, and the database is sound."""
    world = await make_world(tmp_path, control_env=ENV)
    try:
        files = {
            ".tangled/workflows/push.yml": workflow(ON_PUSH),
            ".tangled/workflows/pr.yml": workflow(ON_PULL),
        }
        await world.knot.push(world.repo_did, files)
        await until(lambda: [s for _, s, _ in world.pushes()] == ["done"], "the first push is decided")
        feature = await world.knot.push(world.repo_did, {"f.c": "int f;\n"}, branch="feature", base="main")
        await until(lambda: len(world.pushes()) == 2, "the feature branch push is recorded")
        assert world.knot.git is not None
        blob = await format_patch(world.knot.git.repo_path(world.repo_did), "main", "feature")
        world.pds.upload(OWNER, blob)
        record = pull_of(world.repo_did, [blob])
        world.pds.put(OWNER, PULL_NSID, "3mr7m2f6gerdf", record)

        def runs() -> list[tuple[str, str]]:
            return sorted((kind, sha) for _, kind, sha, _, _ in world.pipelines())

        before = runs()
        assert len(before) == 1
        started = time.time()
        await inject(world.stack.cp.http, "disk_full", FULL_SECONDS)

        async def unwritable() -> bool:
            status, body = await readiness(world.stack.cp.http)
            return status == 503 and any("database cannot be written" in p for p in body["problems"])

        await eventually(unwritable, FULL_SECONDS, "readiness says the database cannot be written")
        shas = [(await world.knot.push(world.repo_did, {"a.c": f"int a = {i};\n"})).new_sha for i in range(3)]
        world.stack.jetstream.commit(OWNER, PULL_NSID, "3mr7m2f6gerdf", "create", record)
        ended = started + FULL_SECONDS

        wanted = sorted([*before, *(("push", sha) for sha in shas), ("pull_request", feature.new_sha)])
        await until(lambda: runs() == wanted, "every push and the pull request run once", timeout=60)

        def succeeded() -> bool:
            return all(
                status == "success"
                for rkey, *_ in world.pipelines()
                for status, _ in world.workflows(rkey).values()
            )

        await until(succeeded, "every pipeline succeeds", timeout=60)
        await asyncio.sleep(1.0)
        assert runs() == wanted
        with contextlib.closing(sqlite3.connect(world.stack.cp.db_path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        async def ready() -> bool:
            return (await readiness(world.stack.cp.http))[0] == 200

        # Workers that failed on the full disk may still be waiting out their restart backoff.
        await eventually(ready, 30, "the control plane is ready again")
        failures = errors_between(world.stack.cp, started, ended)
        assert sum(r["msg"] == "database cannot be written" for r in failures) == 1
        assert len(failures) <= 12, [f"{r.get('msg')} {r.get('kind', '')}" for r in failures]
    finally:
        await world.stop()
