"""A seeded chaos run: steady pipelines, random faults, then the invariants.

Faults (each chosen at random, at random times): kill -9 and restart of each
process, dropped knot, Jetstream and /events connections, a stalled provider
(SIGSTOP for a few seconds), and, with Buildkite, webhooks delayed,
duplicated, reordered and dropped. Inside the processes (TACK_FAULT_INJECTION):
a supervised task of a random kind crashing (and failing again for up to 2 s),
every database write failing for 1-3 s, and a full disk for 1-3 s, each in a
process chosen at random.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tack_sandbox.knot import pipeline_record
from tests.chaos.invariants import Expected, check_single_start, check_statuses
from tests.chaos.procstats import open_fds, rss_bytes
from tests.fakes.appview import AppviewClient
from tests.support import faults
from tests.support.procs import Proc, ProviderProcess
from tests.support.stack import OWNER, TERMINAL, Stack, buildkite_entry, stub_workflow


OUTCOMES = ("success", "success", "failed", "timeout")


@dataclass
class Figures:
    """What a run did and found."""

    seed: int
    pipelines: int = 0
    workflows: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        """The printed summary."""
        rows = [
            f"chaos run  seed={self.seed}  duration={self.seconds:.0f}s",
            f"  pipelines          {self.pipelines}",
            f"  workflows          {self.workflows}",
        ]
        rows += [f"  fault {kind:<18} {count}" for kind, count in sorted(self.faults.items())]
        rows.append(f"  violations         {len(self.violations)}")
        rows += [f"    - {v}" for v in self.violations[:50]]
        return "\n".join(rows)


class ChaosRun:
    """One run of the harness against a fresh stack in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        seed: int,
        seconds: float,
        min_faults: int = 0,
        soak: bool = False,
        buildkite: bool = True,
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.seconds = seconds
        self.min_faults = min_faults
        self.soak = soak
        self.figures = Figures(seed=seed)
        inject = {"TACK_FAULT_INJECTION": "1"}
        self.stack = Stack(
            workdir,
            control_env={
                "TACK_DISPATCH_GIVE_UP": "600",
                "TACK_SEND_TIMEOUT": "10",
                "TACK_LOG_LEVEL": "warning",
                **inject,
            },
            buildkite=buildkite,
            stub_env=inject,
            buildkite_env=inject,
        )
        self.expected: list[Expected] = []
        self.appview: AppviewClient | None = None
        self.stop_appview = asyncio.Event()

    # Faults

    def faults(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """Every fault kind this run injects."""
        kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "kill_control": lambda: self._restart(self.stack.cp, self.stack.cp.start_ready),
            "kill_stub": lambda: self._restart(self.stack.stub, self.stack.stub.start_serving),
            "stall_stub": lambda: self._stall(self.stack.stub),
            "drop_knot": self.stack.knot.drop_connections,
            "drop_jetstream": self._drop_jetstream,
            "drop_events": self._drop_events,
            "task_crash": self._task_crash,
            "write_failure": lambda: self._storage_fault("write_failure"),
            "disk_full": lambda: self._storage_fault("disk_full"),
        }
        bk = self.stack.buildkite
        if bk is not None:
            kinds["kill_buildkite"] = lambda: self._restart(bk, bk.start_serving)
            kinds["stall_buildkite"] = lambda: self._stall(bk)
            kinds["webhooks_dropped"] = lambda: self._webhook_fault({"webhook_drop": 1.0})
            kinds["webhooks_duplicated"] = lambda: self._webhook_fault({"webhook_duplicate": True})
            kinds["webhooks_reordered"] = lambda: self._webhook_fault({"webhook_reorder": True})
            kinds["webhooks_delayed"] = lambda: self._webhook_fault({"webhook_delay_ms": 1500})
        return kinds

    async def _webhook_fault(self, knobs: dict[str, object]) -> None:
        """Turn a webhook fault on at the fake Buildkite for a few seconds."""
        fake = self.stack.fake_buildkite
        assert fake is not None
        before = {name: getattr(fake.knobs, name) for name in knobs}
        fake.knobs.update(knobs)
        try:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        finally:
            fake.knobs.update(before)

    async def _restart(self, proc: Proc, start: Callable[[], Awaitable[None]]) -> None:
        proc.kill9()
        await asyncio.sleep(self.rng.uniform(0.0, 1.0))
        await start()

    async def _stall(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        finally:
            proc.popen.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    def _fault_targets(self) -> list[str]:
        """Where faults can be asked for: the control plane and each provider's metrics port."""
        bases = [self.stack.cp.http]
        providers: list[ProviderProcess] = [self.stack.stub]
        if self.stack.buildkite is not None:
            providers.append(self.stack.buildkite)
        return bases + [f"http://127.0.0.1:{p.metrics_port}" for p in providers]

    async def _task_crash(self) -> None:
        """A supervised task of a random kind, in a random process, fails (and fails again for a while)."""
        base = self.rng.choice(self._fault_targets())
        kinds = await faults.kinds(base)
        await faults.crash(base, self.rng.choice(kinds), hold=self.rng.uniform(0.0, 2.0))

    async def _storage_fault(self, fault: str) -> None:
        """Writes fail, or the disk is full, for a few seconds in a random process (it lasts on its own)."""
        await faults.inject(self.rng.choice(self._fault_targets()), fault, self.rng.uniform(1.0, 3.0))

    async def _drop_jetstream(self) -> None:
        await self.stack.jetstream.drop_connections()
        # Keep Jetstream busy so a lost cursor would show: re-save the repo record (idempotent).
        self.stack.add_repo(OWNER, "chaos", rkey="3chaosrepo222", op="update")

    async def _drop_events(self) -> None:
        assert self.appview is not None
        await self.appview.disconnect_events()

    # Load

    def _push(self) -> None:
        knot = self.stack.knot.hostname
        workflows = []
        wanted = []
        for i in range(self.rng.randint(1, 3)):
            if self.stack.buildkite is not None and self.rng.random() < 0.4:
                pipeline, outcome = self.rng.choice(
                    (("app-ci", "success"), ("app-ci", "success"), ("app-fail", "failed"))
                )
                workflows.append(buildkite_entry(f"w{i}.yml", pipeline))
                wanted.append((f"w{i}.yml", outcome, "buildkite"))
                continue
            outcome = self.rng.choice(OUTCOMES)
            script: dict[str, object] = {
                "queue_seconds": self.rng.uniform(0, 0.5),
                "steps": [
                    {
                        "name": "work",
                        "output_count": self.rng.randint(0, 5),
                        "duration": self.rng.uniform(0.1, 2.5),
                    }
                ],
                "outcome": outcome,
            }
            workflows.append(stub_workflow(f"w{i}.yml", script))
            wanted.append((f"w{i}.yml", outcome, "stub"))
        rkey = self.stack.knot.new_rkey()
        kind = self.rng.choice(("push", "pull_request"))
        record = pipeline_record(knot=knot, did=OWNER, repo="chaos", kind=kind, workflows=workflows)  # type: ignore[arg-type]
        self.stack.knot.emit_pipeline(rkey, record)
        self.figures.pipelines += 1
        for name, outcome, provider in wanted:
            self.expected.append(Expected(knot, rkey, name, provider, outcome))
        self.figures.workflows += len(wanted)

    async def _load(self, until: float) -> None:
        while time.monotonic() < until:
            self._push()
            await asyncio.sleep(self.rng.uniform(0.1, 0.6) if not self.soak else 0.5)

    async def _inject(self, until: float) -> None:
        kinds = self.faults()
        names = sorted(kinds)
        while time.monotonic() < until or (
            self.min_faults and min(self.figures.faults[n] for n in names) < self.min_faults
        ):
            # Bias towards the kinds injected least, so a short run reaches min_faults of each.
            least = min(self.figures.faults[n] for n in names)
            name = self.rng.choice(
                [n for n in names if self.figures.faults[n] == least] if self.rng.random() < 0.7 else names
            )
            await kinds[name]()
            self.figures.faults[name] += 1
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))

    async def _sample(self, until: float) -> None:
        start = time.monotonic()
        while time.monotonic() < until:
            sample = {"t": time.monotonic() - start}
            procs: list[tuple[str, Proc]] = [("control", self.stack.cp), ("stub", self.stack.stub)]
            if self.stack.buildkite is not None:
                procs.append(("buildkite", self.stack.buildkite))
            for name, proc in procs:
                if proc.alive():
                    sample[f"{name}_rss_mb"] = rss_bytes(proc.pid) / 1e6
                    sample[f"{name}_fds"] = open_fds(proc.pid)
            self.figures.samples.append(sample)
            await asyncio.sleep(5 if self.soak else 2)

    # The run

    async def run(self) -> Figures:
        """Start the stack, drive load and faults, settle, check the invariants."""
        began = time.monotonic()
        await self.stack.start()
        try:
            self.stack.add_repo(OWNER, "chaos", rkey="3chaosrepo222")
            await self.stack.wait_knot_connected()
            self.appview = AppviewClient(self.stack.cp.http)
            viewer = asyncio.create_task(self.appview.run_events(self.stop_appview, reconnect_delay=0.3))
            # An appview without a cursor (no message received yet) reconnects live only, as Tangled's does:
            # warm up until it has seen a whole workflow, so every later reconnect resumes by cursor. The
            # first push waits for that live connection, or the appview would miss its pending (and get
            # it only later, from a rewound cursor, after running and success).
            connect_by = time.monotonic() + 10
            while not self.appview.events_connected and time.monotonic() < connect_by:
                await asyncio.sleep(0.02)
            self._push()
            await self._settle(timeout=30)
            until = time.monotonic() + self.seconds
            sampler = asyncio.create_task(self._sample(until + 3600))
            # A soak measures steady state: load without faults, so processes keep their memory and fds.
            await asyncio.gather(self._load(until), *(() if self.soak else (self._inject(until),)))
            await self._settle()
            sampler.cancel()
            self.stop_appview.set()
            await viewer
            await self.appview.close()
            self._check()
        finally:
            await self.stack.stop()
        self.figures.seconds = time.monotonic() - began
        return self.figures

    async def _settle(self, timeout: float = 180.0) -> None:
        """Wait for every triggered workflow to reach a terminal status on the appview's side."""
        assert self.appview is not None
        appview = self.appview
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                (appview.latest(w.knot, w.rkey, w.workflow) or {}).get("status") in TERMINAL
                for w in self.expected
            ):
                return
            await asyncio.sleep(0.5)

    def _check(self) -> None:
        assert self.appview is not None
        seen: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
        for row in self.appview.rows:
            seen[(row.knot, row.pipeline_rkey, row.workflow)].append(row.status)
        violations = check_statuses(self.expected, seen)
        violations += [f"appview rejected a frame: {e.reason}" for e in self.appview.errors]
        violations += check_single_start(self._starts(), self.expected)
        dbs = [self.stack.cp.db_path, self.stack.stub.db_path]
        if self.stack.buildkite is not None:
            dbs.append(self.stack.buildkite.db_path)
        for db in dbs:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                violations.append(f"{db.name}: integrity_check says {result}")
        self.figures.violations = violations + self._published_for(violations)

    def _published_for(self, violations: list[str]) -> list[str]:
        """For workflows with a violation, what tack itself published (created, rkey, status), to tell a
        publishing fault from a delivery fault."""
        notes = []
        with contextlib.closing(sqlite3.connect(self.stack.cp.db_path)) as conn:
            for wf in self.expected:
                if any(f"'{wf.rkey}', '{wf.workflow}'" in v for v in violations):
                    rows = conn.execute(
                        "SELECT created, rkey, json_extract(frame, '$.event.status') FROM events"
                        " WHERE json_extract(frame, '$.event.pipeline') LIKE ? AND json_extract(frame, '$.event.workflow') = ?"
                        " ORDER BY created",
                        (f"%/{wf.rkey}", wf.workflow),
                    ).fetchall()
                    notes.append(f"  tack published for {wf.rkey}/{wf.workflow}: {rows}")
        return notes

    def _starts(self) -> dict[tuple[str, str, str], int]:
        """How many times each run was started: stub acceptances (one pending each in its outbox) and
        builds at the fake Buildkite (by tack's meta_data)."""
        with contextlib.closing(sqlite3.connect(self.stack.stub.db_path)) as conn:
            rows = conn.execute(
                "SELECT knot, pipeline_rkey, workflow, COUNT(*) FROM status_log WHERE status = 1"
                " GROUP BY knot, pipeline_rkey, workflow"
            ).fetchall()
        starts: collections.Counter[tuple[str, str, str]] = collections.Counter(
            {(k, r, w): int(n) for k, r, w, n in rows}
        )
        if self.stack.fake_buildkite is not None:
            for build in self.stack.fake_buildkite.builds:
                meta = build.meta_data
                if "tack:workflow" in meta:
                    starts[(meta["tack:knot"], meta["tack:pipeline_rkey"], meta["tack:workflow"])] += 1
        return dict(starts)
