"""SimulatedKnot: a loopback stand-in for a Tangled knot, used by the local sandbox and the tests.

It speaks one of two protocols, as real knots do:

- ``legacy`` (2025, docs/tangled-protocol.md §4), with its sharp edges: envelopes
  ``{rkey, nsid, event}``; the cursor is unix *nanoseconds*; a missing,
  unparsable or zero cursor means "now" (no backfill), a negative one means
  "from the beginning"; every query returns at most 100 rows, and a backlog
  beyond that drains only as new events arrive; notifications coalesce; an idle
  connection gets an empty ping every ``ping_interval`` seconds.
- ``current`` (v1.16+, docs/tangled-current.md): envelopes carry ``created``;
  a missing or invalid cursor replays everything kept; the backlog drains in
  batches of 100 up to ``drain_cap`` batches, then the knot closes with 1013
  ("drain cap reached, reconnect to continue"); only the newest ``retain``
  events are kept (a Knot2-style ring; older history is gone). It also answers
  the XRPC methods a spindle asks: ``sh.tangled.repo.describeRepo`` and
  ``sh.tangled.repo.getDefaultBranch`` for the repositories given to
  :meth:`SimulatedKnot.host_repo`. Like Knot2 at its subscriber limit, it can
  refuse the next ``overloaded`` upgrades with HTTP 503 ``Overloaded``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

from tack_common.tid import TidClock
from tack_sandbox._loopback import (
    JsonObject,
    LoopbackWebSocketServer,
    discard_incoming,
    go_json,
    go_value,
    parse_go_int64,
)
from tack_sandbox.gitrepos import FileContent, ObjectFormat, Push, commit, create_repository
from tack_sandbox.gitserver import GitServer


PIPELINE_NSID = "sh.tangled.pipeline"
REF_UPDATE_NSID = "sh.tangled.git.refUpdate"
BATCH_LIMIT = 100
ZERO_SHA = "0" * 40
DEFAULT_WORKFLOW_RAW = (
    'when:\n  - event: ["push"]\n    branch: ["main"]\nengine: "nixery"\n'
    "steps:\n  - name: build\n    command: echo building\n"
)


@dataclass(frozen=True)
class KnotEvent:
    """One row of the knot's ``events`` table, with the frame the stream sends for it."""

    created: int
    nsid: str
    rkey: str
    event: JsonObject
    frame: str


@dataclass(eq=False)
class _Subscriber:
    ws: web.WebSocketResponse
    notified: asyncio.Event = field(default_factory=asyncio.Event)


def workflow_entry(
    name: str,
    raw: str = DEFAULT_WORKFLOW_RAW,
    *,
    engine: str = "nixery",
    clone_depth: int = 0,
    clone_skip: bool = False,
    clone_submodules: bool = False,
) -> JsonObject:
    """One ``workflows[]`` entry as the knot compiles it: file name, engine, clone options, full text."""
    return {
        "name": name,
        "engine": engine,
        "clone": {"depth": clone_depth, "skip": clone_skip, "submodules": clone_submodules},
        "raw": raw,
    }


def pipeline_record(
    *,
    knot: str,
    did: str,
    repo: str,
    kind: Literal["push", "pull_request"] = "push",
    workflows: Sequence[JsonObject] | None = None,
    ref: str = "refs/heads/main",
    old_sha: str | None = None,
    new_sha: str | None = None,
    source_branch: str = "feature",
    source_sha: str | None = None,
    target_branch: str = "main",
) -> JsonObject:
    """A ``sh.tangled.pipeline`` record as a knot emits it for a push or a branch pull request.

    Missing shas are random 40-hex strings; ``workflows`` defaults to one
    ``build.yml``. ``$type`` is ``""`` and ``defaultBranch`` is ``""``, as at Tangled HEAD.
    """
    trigger: JsonObject = {
        "kind": kind,
        "repo": {"knot": knot, "did": did, "repo": repo, "defaultBranch": ""},
    }
    if kind == "push":
        trigger["push"] = {
            "ref": ref,
            "oldSha": old_sha if old_sha is not None else secrets.token_hex(20),
            "newSha": new_sha if new_sha is not None else secrets.token_hex(20),
        }
    else:
        trigger["pullRequest"] = {
            "action": "create",
            "sourceBranch": source_branch,
            "sourceSha": source_sha if source_sha is not None else secrets.token_hex(20),
            "targetBranch": target_branch,
        }
    entries = list(workflows) if workflows is not None else [workflow_entry("build.yml")]
    return {"$type": "", "triggerMetadata": trigger, "workflows": entries}


@dataclass(frozen=True)
class HostedRepo:
    """A repository the knot hosts, as its describeRepo and getDefaultBranch answer."""

    repo_did: str
    owner: str
    rkey: str
    default_branch: str = "main"


Protocol = Literal["legacy", "current"]
DRAIN_CAP_REASON = "drain cap reached, reconnect to continue"


class SimulatedKnot(LoopbackWebSocketServer):
    """A loopback Tangled knot serving ``GET /events``; ``emit`` inserts rows and wakes every client."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ping_interval: float = 30.0,
        clock_id: int = 0,
        protocol: Protocol = "legacy",
        drain_cap: int = 1000,
        retain: int | None = None,
        git_root: Path | None = None,
    ) -> None:
        super().__init__(host=host, port=port, ping_interval=ping_interval)
        self.git = GitServer(git_root) if git_root is not None else None
        """Real repositories served over git smart HTTP at ``/<repoDid>``, as a knot serves them."""
        self.protocol = protocol
        self.drain_cap = drain_cap
        self.retain = retain
        self.connect_cursors: list[str | None] = []
        self.overloaded = 0
        """Refuse this many more /events upgrades, as Knot2 does at its subscriber limit."""
        self.refused_upgrades = 0
        self.repos: dict[str, HostedRepo] = {}
        self.xrpc_calls: list[tuple[str, str]] = []
        self._rows: list[KnotEvent] = []
        self._created: list[int] = []
        self._subscribers: set[_Subscriber] = set()
        self._tids = TidClock(clock_id)
        self._extra_routes: list[web.RouteDef] = []

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/events", self._events),
            web.get("/xrpc/sh.tangled.repo.describeRepo", self._describe_repo),
            web.get("/xrpc/sh.tangled.repo.getDefaultBranch", self._default_branch),
            *(self.git.routes() if self.git is not None else []),
            *self._extra_routes,
        ]

    def add_routes(self, routes: list[web.RouteDef]) -> None:
        """Serve more routes (e.g. git smart HTTP) on the knot's address; call before :meth:`start`."""
        self._extra_routes.extend(routes)

    def host_repo(self, repo: HostedRepo) -> None:
        """Host ``repo``: describeRepo and getDefaultBranch answer for its DID."""
        self.repos[repo.repo_did] = repo

    async def _describe_repo(self, request: web.Request) -> web.Response:
        repo_did = request.query.get("repoDid", "")
        self.xrpc_calls.append(("describeRepo", repo_did))
        if not repo_did.startswith("did:"):
            return web.json_response(
                {"error": "InvalidRequest", "message": "missing or invalid repoDid parameter"}, status=400
            )
        repo = self.repos.get(repo_did)
        if repo is None:
            return web.json_response(
                {"error": "RepoNotFound", "message": "failed to access repository"}, status=404
            )
        return web.json_response({"repoDid": repo.repo_did, "ownerDid": repo.owner, "rkey": repo.rkey})

    async def _default_branch(self, request: web.Request) -> web.Response:
        repo_did = request.query.get("repo", "")
        self.xrpc_calls.append(("getDefaultBranch", repo_did))
        repo = self.repos.get(repo_did)
        if repo is None:
            return web.json_response(
                {"error": "RepoNotFound", "message": "failed to access repository"}, status=404
            )
        return web.json_response({"name": repo.default_branch, "hash": "", "when": "1970-01-01T00:00:00Z"})

    @property
    def url(self) -> str:
        """``ws://host:port/events``."""
        return f"ws://{self.hostname}/events"

    @property
    def events(self) -> list[KnotEvent]:
        """Every row inserted so far, oldest first."""
        return list(self._rows)

    def new_rkey(self) -> str:
        """A fresh TID from the knot's clock."""
        return self._tids.next()

    def emit(self, nsid: str, rkey: str | None, event: JsonObject) -> int:
        """Insert an event (``rkey`` ``None`` = a fresh TID), notify clients, return its ``created`` ns."""
        created = max(time.time_ns(), self._created[-1] + 1 if self._created else 0)
        key = rkey if rkey is not None else self.new_rkey()
        if self.protocol == "current":
            # Go's struct order: rkey, nsid, event, created.
            frame = go_json(
                {"rkey": key, "nsid": nsid, "event": go_value(event), "created": created}, sort_keys=False
            )
        else:
            frame = go_json({"event": go_value(event), "nsid": nsid, "rkey": key}, sort_keys=True)
        self._rows.append(KnotEvent(created, nsid, key, event, frame))
        self._created.append(created)
        if self.retain is not None and len(self._rows) > self.retain:
            del self._rows[: len(self._rows) - self.retain], self._created[: len(self._created) - self.retain]
        for subscriber in self._subscribers:
            subscriber.notified.set()
        return created

    def emit_pipeline(self, rkey: str | None, record: JsonObject) -> int:
        """Insert a ``sh.tangled.pipeline`` event; see :func:`pipeline_record`."""
        return self.emit(PIPELINE_NSID, rkey, record)

    def emit_ref_update(self, event: JsonObject) -> int:
        """Insert a ``sh.tangled.git.refUpdate`` event; see :func:`ref_update`."""
        return self.emit(REF_UPDATE_NSID, None, event)

    async def create_repo(self, repo: HostedRepo, *, object_format: ObjectFormat = "sha1") -> None:
        """Host ``repo`` with an empty git repository (needs ``git_root``)."""
        assert self.git is not None, "this knot serves no git"
        await create_repository(
            self.git.repo_path(repo.repo_did), object_format=object_format, branch=repo.default_branch
        )
        self.host_repo(repo)

    async def push(
        self,
        repo_did: str,
        files: Mapping[str, FileContent],
        *,
        branch: str = "main",
        committer: str | None = None,
        push_options: Sequence[str] = (),
        emit: bool = True,
        message: str = "sandbox commit",
        base: str | None = None,
    ) -> Push:
        """Commit ``files`` to a hosted repository, as a ``git push`` to the knot would, and (``emit``) send the
        refUpdate a current knot sends for it, with the changed files. A new ``branch`` starts from ``base``."""
        assert self.git is not None, "this knot serves no git"
        repo = self.repos[repo_did]
        pushed = await commit(self.git.repo_path(repo_did), files, branch=branch, message=message, base=base)
        if emit:
            self.emit_ref_update(
                ref_update(
                    repo_did=repo_did,
                    owner=repo.owner,
                    ref=pushed.ref,
                    old_sha=pushed.old_sha,
                    new_sha=pushed.new_sha,
                    committer=committer,
                    changed_files=pushed.changed_files,
                    push_options=push_options,
                )
            )
        return pushed

    def _query(self, cursor: int) -> list[KnotEvent]:
        start = bisect.bisect_right(self._created, cursor) if cursor > 0 else 0
        return self._rows[start : start + BATCH_LIMIT]

    async def _stream(self, ws: web.WebSocketResponse, cursor: int) -> int:
        for row in self._query(cursor):
            await ws.send_str(row.frame)
            cursor = row.created
        return cursor

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self.overloaded > 0:
            self.overloaded -= 1
            self.refused_upgrades += 1
            return web.json_response(
                {
                    "error": "Overloaded",
                    "message": "knot is serving its maximum number of event subscribers, retry shortly",
                },
                status=503,
            )
        if self.protocol == "current":
            return await self._events_current(request)
        raw_cursor = request.query.get("cursor")
        self.connect_cursors.append(raw_cursor)
        ws = await self._accept(request)
        subscriber = _Subscriber(ws)
        self._subscribers.add(subscriber)
        reader = asyncio.create_task(discard_incoming(ws))
        now = time.time_ns()
        cursor, _ = parse_go_int64(raw_cursor or "")
        if cursor == 0:
            cursor = now
        try:
            cursor = await self._stream(ws, cursor)
            while not reader.done():
                waiter = asyncio.create_task(subscriber.notified.wait())
                await asyncio.wait(
                    {waiter, reader}, timeout=self.ping_interval, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if reader.done():
                    break
                if subscriber.notified.is_set():
                    subscriber.notified.clear()
                    cursor = await self._stream(ws, cursor)
                else:
                    await self._ping(ws)
        except ConnectionError:
            pass
        finally:
            self._subscribers.discard(subscriber)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._release(ws)
        return ws

    async def _events_current(self, request: web.Request) -> web.StreamResponse:
        """The current knot stream: missing cursor = everything kept; drain to the cap, then 1013."""
        raw_cursor = request.query.get("cursor")
        self.connect_cursors.append(raw_cursor)
        ws = await self._accept(request)
        subscriber = _Subscriber(ws)
        self._subscribers.add(subscriber)
        reader = asyncio.create_task(discard_incoming(ws))
        cursor, ok = parse_go_int64(raw_cursor or "")
        if not ok or cursor < 0:
            cursor = 0
        try:
            while not reader.done():
                for _ in range(self.drain_cap):
                    batch = self._query(cursor)
                    for row in batch:
                        await ws.send_str(row.frame)
                        cursor = row.created
                    if len(batch) < BATCH_LIMIT:
                        break
                else:
                    await ws.close(code=1013, message=DRAIN_CAP_REASON.encode())
                    break
                waiter = asyncio.create_task(subscriber.notified.wait())
                await asyncio.wait(
                    {waiter, reader}, timeout=self.ping_interval, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if reader.done():
                    break
                if subscriber.notified.is_set():
                    subscriber.notified.clear()
                else:
                    await self._ping(ws)
        except ConnectionError:
            pass
        finally:
            self._subscribers.discard(subscriber)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._release(ws)
        return ws


def ref_update(
    *,
    repo_did: str,
    owner: str,
    ref: str = "refs/heads/main",
    old_sha: str | None = None,
    new_sha: str | None = None,
    committer: str | None = None,
    changed_files: Sequence[str] = (),
    push_options: Sequence[str] = (),
    sha_hex: int = 40,
) -> JsonObject:
    """A ``sh.tangled.git.refUpdate`` as a current Go knot sends it (``$type`` empty, ``meta`` null on deletion)."""
    new = new_sha if new_sha is not None else secrets.token_hex(sha_hex // 2)
    event: JsonObject = {
        "$type": "",
        "committerDid": committer or owner,
        "meta": None
        if new.strip("0") == ""
        else {
            "commitCount": {"byEmail": [{"count": 1, "email": "dev@example.com"}]},
            "isDefaultRef": ref == "refs/heads/main",
        },
        "newSha": new,
        "oldSha": old_sha if old_sha is not None else "0" * len(new),
        "ownerDid": owner,
        "ref": ref,
        "repo": repo_did,
    }
    if changed_files:
        event["changedFiles"] = list(changed_files)
    if push_options:
        event["pushOptions"] = list(push_options)
    return event
