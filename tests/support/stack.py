"""A whole tack stack on loopback for end-to-end tests.

The simulated Jetstream and knot run in the test's event loop; the stub
provider and the control plane run as separate processes talking real gRPC.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tack_common.status import TERMINAL_NAMES
from tack_sandbox.jetstream import SimulatedJetstream
from tack_sandbox.knot import SimulatedKnot, pipeline_record, workflow_entry
from tests.fakes.appview import AppviewClient
from tests.fakes.buildkite import FakeBuildkite
from tests.fakes.buildkite.config import PipelineSpec
from tests.support.buildkite_harness import WEBHOOK_SECRET, BuildkiteProcess
from tests.support.procs import Proc, StubProcess, free_port


OWNER = "did:plc:owner2222222222222222222"
MEMBER = "did:plc:member000000000000000000"
STRANGER = "did:plc:stranger0000000000000000"


def buildkite_entry(name: str, pipeline: str, **config: Any) -> dict[str, Any]:
    """A knot ``workflows[]`` entry routed to Buildkite's ``pipeline``."""
    raw = "engine: tack\ntack:\n  buildkite: " + json.dumps({"pipeline": pipeline, **config}) + "\n"
    return workflow_entry(name, raw, engine="tack")


def stub_workflow(name: str, config: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A knot ``workflows[]`` entry routed to the stub with this script."""
    raw = "engine: tack\ntack:\n  stub: " + json.dumps(dict(config or {})) + "\n"
    for key, value in extra.items():
        raw += f"{key}: {json.dumps(value)}\n"
    return workflow_entry(name, raw, engine="tack")


class ControlPlane(Proc):
    """``python -m tack_control`` on a free port."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.hostname = f"127.0.0.1:{self.port}"
        self.db_path = workdir / "tack.db"
        base = {
            "TACK_HOSTNAME": self.hostname,
            "TACK_OWNER_DID": OWNER,
            "TACK_LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "TACK_DB_PATH": str(self.db_path),
            "TACK_DEV": "1",
            "TACK_PING_INTERVAL": "1",
            # Never the real PLC directory: DIDs resolve only where a test publishes them.
            "TACK_PLC_URL": f"http://127.0.0.1:{free_port()}",
        }
        super().__init__("tack_control", {**base, **env}, workdir / "control.log")

    @property
    def http(self) -> str:
        """Base HTTP URL."""
        return f"http://{self.hostname}"

    async def start_ready(self, timeout: float = 20.0) -> None:
        """Start and wait until /healthz answers."""
        self.start()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if not self.alive():
                    raise RuntimeError(f"tack_control exited:\n{self.output()[-3000:]}")
                try:
                    async with session.get(self.http + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tack_control not up after {timeout}s\n{self.output()[-3000:]}")
                await asyncio.sleep(0.05)


BUILDKITE_PIPELINES = {
    "app-ci": PipelineSpec(
        steps=[
            {"type": "script", "name": ":hammer: build", "step_key": "build", "command": "make build"},
            {"type": "script", "name": ":pytest: test", "step_key": "test", "command": "make test"},
        ],
        auto_scenario="pass",
    ),
    "app-fail": PipelineSpec(
        steps=[{"type": "script", "name": "lint", "step_key": "lint", "command": "make lint"}],
        auto_scenario="fail",
    ),
    "app-slow": PipelineSpec(
        steps=[{"type": "script", "name": "slow", "step_key": "slow", "command": "make slow"}],
        auto_scenario="slow",
    ),
    # Moved only by the test (FakeBuildkite.advance).
    "app-manual": PipelineSpec(
        steps=[{"type": "script", "name": "manual", "step_key": "manual", "command": "make manual"}]
    ),
}


class Stack:
    """Jetstream + knot simulators, the stub provider and the control plane; optionally the Buildkite
    provider against a fake Buildkite whose webhooks go to the control plane's /webhooks/buildkite."""

    def __init__(
        self,
        workdir: Path,
        control_env: Mapping[str, str] | None = None,
        buildkite: bool = False,
        stub_env: Mapping[str, str] | None = None,
        tls_ca: bytes | None = None,
        buildkite_env: Mapping[str, str] | None = None,
        knot: SimulatedKnot | None = None,
        providers: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.extra_providers = dict(providers or {})
        """More providers (name → address), e.g. a fake provider served by the test."""
        self.jetstream = SimulatedJetstream()
        self.knot = knot or SimulatedKnot(ping_interval=1.0)
        self.stub = StubProcess(workdir, stub_env, tls_ca)
        self.control_env = dict(control_env or {})
        self.control: ControlPlane | None = None
        self.fake_buildkite: FakeBuildkite | None = (
            FakeBuildkite(pipelines=BUILDKITE_PIPELINES) if buildkite else None
        )
        self.buildkite: BuildkiteProcess | None = None
        self.buildkite_env = dict(buildkite_env or {})
        self._rkeys = 0

    async def start(self) -> None:
        """Start everything; the control plane is connected to Jetstream when this returns."""
        await self.jetstream.start()
        await self.knot.start()
        await self.stub.start_serving()
        providers = f"stub={self.stub.address}"
        if self.fake_buildkite is not None:
            self.fake_buildkite.knobs.update(
                {"rate_limit_user": 100_000, "rate_limit_org": 100_000, "auto_tick_s": 0.2}
            )
            await self.fake_buildkite.start()
            self.buildkite = BuildkiteProcess(self.workdir, self.fake_buildkite.url, self.buildkite_env)
            await self.buildkite.start_serving()
            providers += f",buildkite={self.buildkite.address}"
        providers += "".join(f",{name}={address}" for name, address in self.extra_providers.items())
        env = {"TACK_JETSTREAM_URL": self.jetstream.url, "TACK_PROVIDERS": providers, **self.control_env}
        self.control = ControlPlane(self.workdir, env)
        await self.control.start_ready()
        if self.fake_buildkite is not None:
            self.fake_buildkite.add_webhook_target(
                f"{self.control.http}/webhooks/buildkite", WEBHOOK_SECRET, ping=False
            )
        await self.jetstream.wait_connected(1, timeout=10)

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop everything."""
        if self.control is not None:
            self.control.kill9()
        self.stub.kill9()
        if self.buildkite is not None:
            self.buildkite.kill9()
        if self.fake_buildkite is not None:
            await self.fake_buildkite.stop()
        await self.knot.stop()
        await self.jetstream.stop()

    @property
    def cp(self) -> ControlPlane:
        """The control plane process."""
        assert self.control is not None
        return self.control

    def rkey(self) -> str:
        """A fresh record key."""
        self._rkeys += 1
        return f"3m{self._rkeys:011d}"

    def add_member(self, subject: str, rkey: str | None = None, author: str = OWNER) -> str:
        """The owner (by default) makes ``subject`` a member; returns the record's rkey."""
        key = rkey or self.rkey()
        self.jetstream.commit(
            author,
            "sh.tangled.spindle.member",
            key,
            "create",
            {"subject": subject, "instance": self.cp.hostname},
        )
        return key

    def remove_member(self, rkey: str) -> None:
        """The owner deletes a member record."""
        self.jetstream.commit(OWNER, "sh.tangled.spindle.member", rkey, "delete")

    def add_repo(
        self, owner: str, name: str, spindle: str | None = None, rkey: str | None = None, op: str = "create"
    ) -> str:
        """``owner`` writes a repo record on the simulated knot naming this spindle (by default)."""
        key = rkey or self.rkey()
        record = {"name": name, "knot": self.knot.hostname, "spindle": spindle or self.cp.hostname}
        self.jetstream.commit(owner, "sh.tangled.repo", key, op, record)
        return key

    def push(self, owner: str, repo: str, workflows: list[dict[str, Any]], rkey: str | None = None) -> str:
        """The knot emits a push pipeline; returns its rkey."""
        key = rkey or self.knot.new_rkey()
        self.knot.emit_pipeline(
            key, pipeline_record(knot=self.knot.hostname, did=owner, repo=repo, workflows=workflows)
        )
        return key

    def pull_request(self, owner: str, repo: str, workflows: list[dict[str, Any]]) -> str:
        """The knot emits a pull-request pipeline; returns its rkey."""
        key = self.knot.new_rkey()
        record = pipeline_record(
            knot=self.knot.hostname, did=owner, repo=repo, kind="pull_request", workflows=workflows
        )
        self.knot.emit_pipeline(key, record)
        return key

    async def wait_knot_connected(self, timeout: float = 15.0) -> None:
        """Wait until the control plane follows the simulated knot."""
        await self.knot.wait_connected(1, timeout=timeout)


TERMINAL = TERMINAL_NAMES
QUICK = {
    "queue_seconds": 0,
    "steps": [{"name": "build", "command": "make", "output": ["ok"], "duration": 0.1}],
}


async def registered(stack: Stack, owner: str = MEMBER, repo: str = "hello") -> None:
    """``owner`` becomes a member (unless the owner) with a repo naming this spindle, and the knot is followed."""
    if owner != OWNER:
        stack.add_member(owner)
    stack.add_repo(owner, repo)
    await stack.wait_knot_connected()


def stub_runs(stack: Stack) -> int:
    """How many runs the stub provider ever accepted (from its own database)."""
    with sqlite3.connect(stack.stub.db_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


async def metric(stack: Stack, name: str) -> float:
    """The sum of a control-plane metric's samples matching ``name`` (a full sample prefix)."""
    async with aiohttp.ClientSession() as session, session.get(stack.cp.http + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def finished(appview: AppviewClient, knot: str, rkey: str, names: list[str]) -> bool:
    return all((appview.latest(knot, rkey, n) or {}).get("status") in TERMINAL for n in names)
