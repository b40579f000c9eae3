"""Pipelines written through tack's real engine, and the control plane served in the test's event loop.

``PipelineMaker`` writes pipelines of every kind with ``Pipelines.create``
(workflows routed by ``routing.route``, ``pending`` or ``failed`` recorded by
the ``StatusBook``), as intake and the push worker do. ``serve`` runs an
aiohttp application on a loopback port; ``ci_app`` is the CI API alone over a
database, ``Spindle`` the whole control plane application (``build_app``,
background loops included) talking to real provider processes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_control.config import Settings
from tack_control.core import Core
from tack_control.engine.eventlog import EventLog
from tack_control.engine.pipelines import Pipelines, PipelineSpec, Routed
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.registry import Registry
from tack_control.ingest.routing import route
from tack_control.ingest.verify import ForkKnot
from tack_control.ingest.wire import Clone, Workflow
from tack_control.web import ci, keys, xrpc
from tack_control.web.app import build_app
from tack_control.web.ci import didweb
from tack_control.web.logframes import BUDGET_BYTES, LogFrames
from tack_sandbox.jetstream import SimulatedJetstream


KNOT = "knot.example.com"
HOST = "spindle.example.com"
OWNER = "did:plc:owner0000000000000000000"
LoadWorkflows = Callable[[str, str, str], Awaitable[Sequence[tuple[str, str]]]]


def sha(n: int) -> str:
    """A distinct 40-hex commit id."""
    return f"{n:040x}"


def settings(
    db_path: Path, hostname: str = HOST, providers: dict[str, str] | None = None, **more: Any
) -> Settings:
    """Control plane settings for tests (dev mode, fast pings)."""
    base: dict[str, Any] = {
        "hostname": hostname,
        "owner_did": OWNER,
        "listen": ("127.0.0.1", 0),
        "db_path": str(db_path),
        "jetstream_url": "ws://127.0.0.1:9/subscribe",
        "dev": True,
        "providers": providers or {},
        "default_provider": None,
        "ping_interval_s": 1.0,
    }
    return Settings(**{**base, **more})


def record(
    kind: str,
    repo_did: str,
    commit: str,
    names: Sequence[str],
    *,
    knot: str = KNOT,
    ref: str = "refs/heads/main",
    old_sha: str = "0" * 40,
    source_repo: str = "",
    pull: str = "",
    inputs: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A ``sh.tangled.pipeline`` record of ``kind``, as current Tangled writes it."""
    meta: dict[str, Any] = {
        "kind": kind,
        "repo": {"knot": knot, "did": OWNER, "repo": "hello", "repoDid": repo_did, "defaultBranch": "main"},
    }
    if kind == "push":
        meta["push"] = {"ref": ref, "newSha": commit, "oldSha": old_sha}
    elif kind == "pull_request":
        meta["pullRequest"] = {
            "sourceBranch": "feature",
            "targetBranch": "main",
            "sourceSha": commit,
            **({"pull": pull} if pull else {}),
            "action": "opened",
        }
    else:
        meta["manual"] = {"sha": commit, "ref": ref, "inputs": [{"key": k, "value": v} for k, v in inputs]}
    if source_repo:
        meta["sourceRepo"] = source_repo
    return {
        "$type": "sh.tangled.pipeline",
        "triggerMetadata": meta,
        "workflows": [
            {
                "name": n,
                "engine": "tack",
                "raw": "",
                "clone": {"skip": False, "depth": 1, "submodules": False},
            }
            for n in names
        ],
    }


class PipelineMaker:
    """Writes pipelines through the real engine on one database."""

    def __init__(self, book: StatusBook, pipelines: Pipelines, providers: Sequence[str] = ("stub",)) -> None:
        self.book = book
        self.pipelines = pipelines
        self.providers = list(providers)

    @classmethod
    def on(cls, conn: sqlite3.Connection) -> PipelineMaker:
        """A maker with its own event log and status book on ``conn``."""
        events = EventLog(conn)
        book = StatusBook(conn, events)
        return cls(book, Pipelines(book, events))

    def spec(
        self,
        kind: str,
        repo_did: str,
        commit: str,
        workflows: Sequence[tuple[str, str]],
        knot: str = KNOT,
        rkey: str | None = None,
        origin: str | None = None,
        **details: Any,
    ) -> PipelineSpec:
        """A pipeline of ``kind`` with workflows ``(name, raw YAML)`` routed as tack routes them."""
        routed = [
            Routed(Workflow(name, "tack", raw, Clone()), route(raw, self.providers, None))
            for name, raw in workflows
        ]
        origin = origin or {"push": "push", "pull_request": "pull", "manual": "manual"}[kind]
        return PipelineSpec(
            knot=knot,
            rkey=rkey or self.pipelines.mint_rkey(),
            record=record(kind, repo_did, commit, [n for n, _ in workflows], knot=knot, **details),
            repo_did=repo_did,
            kind=kind,
            commit=commit,
            origin=origin,
            workflows=routed,
            source_repo=details.get("source_repo", ""),
        )

    def create(self, *specs: PipelineSpec) -> list[str]:
        """Write pipelines in one transaction; their ids."""
        with self.book.transaction() as conn:
            for spec in specs:
                assert self.pipelines.create(conn, spec)
        return [s.rkey for s in specs]

    def make(
        self, kind: str, repo_did: str, commit: str, names: Sequence[str] = ("build.yml",), **more: Any
    ) -> str:
        """One pipeline whose workflows run on the stub with its default script; its id."""
        (rkey,) = self.create(self.spec(kind, repo_did, commit, [(n, STUB_DEFAULT) for n in names], **more))
        return rkey


_STEP = loglines.StepLog()
LINES = [
    *_STEP.start("build", "make", ns=1_700_000_000_000_000_000),
    *(_STEP.data(f"line {i}", ns=1_700_000_000_000_000_000 + i) for i in range(6)),
    *_STEP.end(ns=1_700_000_000_000_000_009),
]
"""A short log: step build started, six lines, ended."""


def message(lines: list[pb.LogLine]) -> bytes:
    """A serialized LogsResponse."""
    return pb.LogsResponse(lines=lines).SerializeToString()


STUB_DEFAULT = "engine: tack\ntack:\n  stub: {}\n"


def stub_raw(script: dict[str, Any]) -> str:
    """Workflow YAML running ``script`` on the stub."""
    return "engine: tack\ntack:\n  stub: " + json.dumps(script) + "\n"


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def ci_app(
    conn: sqlite3.Connection,
    registry: Registry,
    load: LoadWorkflows | None = None,
    hostname: str = HOST,
    fork_knot: ForkKnot | None = None,
) -> web.Application:
    """The CI API alone over ``conn`` (no providers, no background work; forks vetted by ``fork_knot``)."""
    app = web.Application()
    app[keys.DB] = conn
    app[keys.REGISTRY] = registry
    app[keys.LOAD_WORKFLOWS] = load
    app[keys.FORK_KNOT] = fork_knot
    app[keys.PROVIDERS] = {}
    app[keys.LOG_FRAMES] = LogFrames(BUDGET_BYTES)
    app[keys.SOCKETS] = set()
    app.router.add_get("/.well-known/did.json", didweb.make_handler(hostname, dev=False))
    xrpc.add_routes(app, ci.methods(settings(Path("unused.db"), hostname)))
    return app


class Spindle:
    """The whole control plane application in this event loop, on a loopback port."""

    def __init__(self, workdir: Path, providers: dict[str, str], **more: Any) -> None:
        self.jetstream = SimulatedJetstream()
        self.workdir = workdir
        self.providers = providers
        self.more = more
        """More settings (e.g. ``plc_url``)."""
        self.app: web.Application | None = None
        self.url = ""
        self._serving: contextlib.AbstractAsyncContextManager[str] | None = None

    async def __aenter__(self) -> Spindle:
        await self.jetstream.start()
        self.app = build_app(
            settings(
                self.workdir / "tack.db",
                providers=self.providers,
                jetstream_url=self.jetstream.url,
                **self.more,
            )
        )
        self._serving = serve(self.app)
        self.url = await self._serving.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._serving is not None:
            await self._serving.__aexit__(None, None, None)
        await self.jetstream.stop()

    @property
    def core(self) -> Core:
        """The running control plane's parts."""
        assert self.app is not None
        return self.app[keys.CORE]

    def maker(self) -> PipelineMaker:
        """A pipeline maker on the running engine."""
        return PipelineMaker(self.core.book, self.core.pipelines, list(self.providers))

    def run(self, *specs: PipelineSpec) -> list[str]:
        """Write pipelines and wake the dispatcher, as intake does."""
        rkeys = self.maker().create(*specs)
        self.core.dispatcher.poke()
        return rkeys
