"""Pull requests run CI on their own: Jetstream's pull records become pipelines tack mints.

Jetstream delivers ``sh.tangled.repo.pull`` and ``sh.tangled.repo.pull.status``
records from any author (they are exempt from the member filter). A pull record
created is ``opened``, updated (a new round) is ``synchronize``; a status record
``open``/``closed``/``merged`` is ``reopened``/``closed``/``merged``, and its pull
record is then read from the author's PDS. :class:`PullIntake` keeps, in the
transaction that advances the Jetstream cursor, each event that concerns a
repository registered here; :class:`PullWorker` then decides it:

- only branch pull requests run: ``target.repo`` registered here and no
  ``source.repo`` (a fork's pull request waits for an authorized "Run CI");
- the pull's author, and the event's actor when different, need push rights on
  the target (:meth:`Registry.may_push`);
- the commit is the last patch's of the latest round: the blob is fetched from
  the author's PDS (bounded, public addresses only), checked against its CID,
  expanded within bounds (:mod:`tack_control.ingest.patches`);
- workflows are loaded at that commit from the target repository's knot and
  matched with ``when:`` (``types`` decides which actions run);
- (pull, commit, action) runs once: a Jetstream replay or a record edit that
  adds no round starts nothing new.

Pull events that arrive while tack is down are read from Jetstream's replay
window when tack comes back (its cursor is kept); beyond that window they are
lost, and the next round or status change of the pull runs it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tack_common import backoff
from tack_common.notify import Notifier
from tack_control import metrics
from tack_control.engine.pipelines import Pipelines
from tack_control.engine.statuses import StatusBook
from tack_control.identity.pds import PdsReader, RecordError, RecordUri
from tack_control.identity.resolver import DidResolver, ResolveError
from tack_control.ingest.minting import LoadFailed, LoadWorkflows, Mint, Minter, load_failure
from tack_control.ingest.patches import (
    MAX_BLOB_BYTES,
    PULL,
    PULL_STATUS,
    PatchError,
    gunzip,
    last_patch_sha,
    parse_pull,
    parse_pull_uri,
    pull_uri,
    status_action,
    verify_blob,
)
from tack_control.ingest.registry import Registry
from tack_control.ingest.when import Trigger as WhenTrigger
from tack_control.ingest.wire import BadRecord, JetstreamEvent
from tack_control.netguard import Fetcher, Refused


log = logging.getLogger(__name__)

COLLECTIONS = (PULL, PULL_STATUS)
MAX_ATTEMPTS = 6


class PullIntake:
    """Keeps the pull events that concern this spindle, durably, for the worker."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def accept(self, conn: sqlite3.Connection, event: JetstreamEvent) -> str:
        """Queue ``event`` if it may concern a repository here (inside the caller's transaction); the outcome label."""
        if event.operation == "delete":
            return "pull_ignored"
        assert event.record is not None
        if event.collection == PULL:
            pull = parse_pull(event.record)
            if self.registry.by_repo_did(pull.target_repo) is None:
                return "pull_elsewhere"
            uri = pull_uri(event.did, event.rkey)
            action = "opened" if event.operation == "create" else "synchronize"
            record = json.dumps(event.record)
        else:
            if event.operation != "create":
                return "pull_ignored"  # status records are append-only: only a new one means something
            uri, action = status_action(event.record)
            if not action:
                return "pull_ignored"
            known = conn.execute("SELECT 1 FROM pull_events WHERE uri=? LIMIT 1", (uri,)).fetchone()
            if (
                known is None
                and not self.registry.wanted(parse_pull_uri(uri)[0])
                and not self.registry.wanted(event.did)
            ):
                return "pull_elsewhere"
            record = ""
        conn.execute(
            "INSERT INTO pull_events (uri, collection, actor, action, record, state, received_ns)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?)",
            (uri, event.collection, event.did, action, record, time.time_ns()),
        )
        metrics.PULL_EVENTS.labels("queued").inc()
        return "pull_queued"


@dataclass(frozen=True)
class QueuedPull:
    """A row of ``pull_events`` waiting for the worker."""

    id: int
    uri: str
    collection: str
    actor: str
    action: str
    record: str
    attempts: int


class Retry(Exception):
    """Something outside tack failed for now; the event is tried again later."""


class PullWorker:
    """Decides queued pull events and mints their pipelines."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        pipelines: Pipelines,
        minter: Minter,
        load: LoadWorkflows,
        resolver: DidResolver,
        pds: PdsReader,
        fetcher: Fetcher,
        on_queued: Callable[[], None],
    ) -> None:
        self.registry = registry
        self.book = book
        self.pipelines = pipelines
        self.minter = minter
        self.load = load
        self.resolver = resolver
        self.pds = pds
        self.fetcher = fetcher
        self.on_queued = on_queued
        self.wake = Notifier()

    def poke(self) -> None:
        """A pull event was queued."""
        self.wake.notify()

    async def run(self) -> None:
        """Work forever."""
        while True:
            if not await self.work_due():
                await self.wake.wait(self._next_due_s())

    def _next_due_s(self) -> float:
        row = self.book.conn.execute(
            "SELECT MIN(next_attempt_ns) FROM pull_events WHERE state='queued'"
        ).fetchone()
        return 30.0 if row[0] is None else max(0.0, min(30.0, (int(row[0]) - time.time_ns()) / 1e9))

    async def work_due(self) -> int:
        """Decide every queued pull event that is due, oldest first; returns how many."""
        rows = self.book.conn.execute(
            "SELECT id, uri, collection, actor, action, record, attempts FROM pull_events"
            " WHERE state='queued' AND next_attempt_ns<=? ORDER BY id LIMIT 32",
            (time.time_ns(),),
        ).fetchall()
        for row in rows:
            await self.process(QueuedPull(*row))
        return len(rows)

    async def process(self, event: QueuedPull) -> None:
        """Decide one event: a pipeline, a skip, a rejection with its reason, or a later retry."""
        try:
            state, reason, rkey = await self._decide(event)
        except Retry as exc:
            if event.attempts + 1 < MAX_ATTEMPTS:
                self._retry(event, str(exc))
                return
            state, reason, rkey = "rejected", f"gave up after {MAX_ATTEMPTS} attempts: {exc}", ""
        except (BadRecord, PatchError) as exc:
            state, reason, rkey = "rejected", str(exc), ""
            metrics.PULL_EVENTS.labels(getattr(exc, "reason", "bad_record")).inc()
        if state != "done" or not rkey:
            log.info(
                "pull request event handled",
                extra={"uri": event.uri, "action": event.action, "state": state, "reason": reason[:300]},
            )
        if state != "done":
            metrics.PULL_EVENTS.labels(state).inc()
        with self.book.transaction() as conn:
            conn.execute(
                "UPDATE pull_events SET state=?, reason=?, pipeline_rkey=? WHERE id=? AND state='queued'",
                (state, reason, rkey, event.id),
            )

    async def _decide(self, event: QueuedPull) -> tuple[str, str, str]:
        author, rkey = parse_pull_uri(event.uri)
        record = json.loads(event.record) if event.record else await self._read_pull(author, rkey)
        pull = parse_pull(record)
        if not pull.branch_based:
            return (
                "skipped",
                "not a branch of the target repository (a fork's or a pasted patch): runs only by Run CI",
                "",
            )
        repo = self.registry.by_repo_did(pull.target_repo)
        if repo is None:
            return "skipped", f"{pull.target_repo} is not registered here", ""
        for who in {author, event.actor}:
            if not self.registry.may_push(repo.repo_did, who):
                return "skipped", f"{who} has no push rights on {repo.repo_did}", ""
        if pull.patch_mime and pull.patch_mime != "application/gzip":
            raise PatchError("bad_mime", f"the patch blob is {pull.patch_mime[:80]}, not application/gzip")
        blob = await self._blob(author, pull.patch_cid)
        verify_blob(pull.patch_cid, blob)
        sha = last_patch_sha(gunzip(blob))
        mint = Mint(
            repo=repo,
            kind="pull_request",
            detail={
                "action": event.action,
                "pull": event.uri,
                "sourceBranch": pull.source_branch,
                "sourceSha": sha,
                "targetBranch": pull.target_branch,
            },
            commit=sha,
            origin="pull",
            when=WhenTrigger("pull_request", target_branch=pull.target_branch, action=event.action),
        )
        claimed = self._claim(event.uri, sha, event.action)
        if not claimed:
            metrics.PULL_EVENTS.labels("duplicate").inc()
            return "skipped", f"already run for {sha} ({event.action})", ""
        try:
            files = await self.load(repo.knot, repo.repo_did, sha)
            routed = self.minter.select(files, mint)
        except LoadFailed as exc:
            if exc.transient:
                self._unclaim(event.uri, sha, event.action)
                raise Retry(str(exc)) from None
            routed = load_failure(str(exc))
        if not routed:
            return "done", "no workflow matched", ""
        pipeline = self.pipelines.mint_rkey()
        spec = await self.minter.spec(mint, pipeline, routed)
        with self.book.transaction() as conn:
            self.pipelines.create(conn, spec)
            conn.execute(
                "UPDATE pull_runs SET pipeline_rkey=? WHERE uri=? AND sha=? AND action=?",
                (pipeline, event.uri, sha, event.action),
            )
        metrics.PULL_EVENTS.labels("pipeline").inc()
        log.info(
            "pipeline minted for a pull request",
            extra={
                "uri": event.uri,
                "action": event.action,
                "sha": sha,
                "rkey": pipeline,
                "workflows": len(routed),
            },
        )
        if any(r.route.provider for r in routed):
            self.on_queued()
        return "done", "", pipeline

    def _claim(self, uri: str, sha: str, action: str) -> bool:
        with self.book.transaction() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO pull_runs (uri, sha, action, received_ns) VALUES (?, ?, ?, ?)",
                    (uri, sha, action, time.time_ns()),
                ).rowcount
            )

    def _unclaim(self, uri: str, sha: str, action: str) -> None:
        with self.book.transaction() as conn:
            conn.execute(
                "DELETE FROM pull_runs WHERE uri=? AND sha=? AND action=? AND pipeline_rkey=''",
                (uri, sha, action),
            )

    async def _read_pull(self, author: str, rkey: str) -> dict[str, Any]:
        try:
            return await self.pds.get_record(RecordUri(author, PULL, rkey))
        except RecordError as exc:
            if exc.reason == "unavailable":
                raise Retry(str(exc)) from None
            raise BadRecord(f"pull record: {exc}") from None

    async def _blob(self, author: str, cid: str) -> bytes:
        """The blob from its author's PDS, as its DID document names it; bounded, public addresses only."""
        try:
            doc = await self.resolver.resolve(author)
        except ResolveError as exc:
            if exc.reason == "unavailable":
                raise Retry(str(exc)) from None
            raise PatchError("no_pds", f"cannot resolve the pull's author {author}: {exc}") from None
        if doc.pds is None:
            raise PatchError("no_pds", f"the DID document of {author} names no PDS")
        url = f"{doc.pds.rstrip('/')}/xrpc/com.atproto.sync.getBlob?{urlencode({'did': author, 'cid': cid})}"
        try:
            status, _, body = await self.fetcher.get_bytes(url, max_bytes=MAX_BLOB_BYTES, target="pds")
        except ValueError as exc:
            raise PatchError("too_large", f"the patch blob: {exc}") from None
        except Refused as exc:
            raise PatchError("forbidden_address", f"the author's PDS: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise Retry(f"the author's PDS: {exc}") from None
        if status >= 500 or status == 429:
            raise Retry(f"the author's PDS answered getBlob with HTTP {status}")
        if status != 200:
            raise PatchError("no_blob", f"the author's PDS answered getBlob with HTTP {status}")
        return body

    def _retry(self, event: QueuedPull, reason: str) -> None:
        at = time.time_ns() + int(backoff.delay(event.attempts + 1, base=2.0, cap=300.0) * 1e9)
        with self.book.transaction() as conn:
            conn.execute(
                "UPDATE pull_events SET attempts=attempts+1, next_attempt_ns=?, reason=? WHERE id=?",
                (at, reason, event.id),
            )
        log.warning(
            "pull request event will be retried",
            extra={
                "uri": event.uri,
                "action": event.action,
                "attempts": event.attempts + 1,
                "reason": reason[:300],
            },
        )
