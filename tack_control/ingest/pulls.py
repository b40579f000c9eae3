"""Pull requests run CI on their own: Jetstream's pull records become pipelines tack mints.

Jetstream delivers ``sh.tangled.repo.pull`` and ``sh.tangled.repo.pull.status``
records from any author (they are exempt from the member filter). A pull record
created is ``opened``, updated is ``synchronize``; a status record
``open``/``closed``/``merged`` is ``reopened``/``closed``/``merged``, and its pull
record is then read from the author's PDS. :class:`PullIntake` keeps, in the
transaction that advances the Jetstream cursor, each event that may concern a
repository registered here; :class:`PullWorker` then decides it, once:

- only branch pull requests run: ``target.repo`` registered here and no
  ``source.repo`` (a fork's pull request waits for an authorized "Run CI");
- the pull's author, and the event's actor when different, need push rights on
  the target (:meth:`Registry.may_push`);
- the commit is the last patch's of the latest round: the blob is fetched from
  the author's PDS (the ``#atproto_pds`` of the author's DID document; bounded
  in time and bytes, public addresses only, no redirects), checked against its
  CID, expanded within bounds (:mod:`tack_control.ingest.patches`);
- workflows are loaded at that commit from the target repository's knot and
  matched with ``when:`` (``types`` decides which actions run);
- a run is remembered by (pull, occasion, commit), the occasion being the
  pull's round (opened, synchronize) or the status record (reopened, closed,
  merged), in the transaction that writes the pipeline: a Jetstream replay, or
  an edit of the record that adds no round, runs nothing new, and a crash
  before that commit only means the event is decided again.

Each event ends ``done`` (a pipeline, or no workflow matched), ``skipped`` (not
for tack to run, or already run) or ``rejected`` (unusable: the outcome and
reason are kept in ``pull_events``, logged and counted); a PDS or knot that is
down or stalls is retried with backoff, then rejected. Pull events that arrive
while tack is down are read from Jetstream's replay window when it comes back
(the cursor is kept); beyond that window the pull's next round or status change
runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tack_common import backoff
from tack_control import metrics
from tack_control.engine import due
from tack_control.engine.pipelines import Pipelines, PipelineSpec
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
    target_repo_did,
    verify_blob,
)
from tack_control.ingest.registry import Registry
from tack_control.ingest.when import Trigger as WhenTrigger
from tack_control.ingest.wire import BadRecord, JetstreamEvent
from tack_control.netguard import Fetcher, Refused


log = logging.getLogger(__name__)

COLLECTIONS = (PULL, PULL_STATUS)
MAX_ATTEMPTS = 6
CONCURRENCY = 8


class PullIntake:
    """Keeps the pull events that may concern this spindle, durably, for the worker."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def accept(self, conn: sqlite3.Connection, event: JetstreamEvent) -> str:
        """Queue ``event`` if it may concern a repository here (inside the caller's transaction); the outcome label.

        A pull record is kept when it targets a repository registered here,
        whoever wrote it (the worker records why an outsider's runs nothing),
        malformed or not (the worker records why). A status record is kept when
        its writer and the pull's author both have push rights on some
        repository here: nothing else could run, and strangers' PDSes are not
        read. BadRecord for a status record that names no pull.
        """
        if event.operation == "delete" or event.record is None:
            return "pull_ignored"
        if event.collection == PULL:
            target = target_repo_did(event.record)
            if not target or self.registry.by_repo_did(target) is None:
                return "pull_elsewhere"
            uri = pull_uri(event.did, event.rkey)
            action = "opened" if event.operation == "create" else "synchronize"
            record = json.dumps(event.record)
        else:
            if event.operation != "create":
                return "pull_ignored"  # status records are append-only: only a new one means something
            if not self.registry.may_push_somewhere(event.did):
                return "pull_elsewhere"
            uri, action = status_action(event.record)
            if not action:
                return "pull_ignored"
            if not self.registry.may_push_somewhere(parse_pull_uri(uri)[0]):
                return "pull_elsewhere"
            record = ""
        conn.execute(
            "INSERT INTO pull_events (uri, collection, actor, action, record, event_rkey, state, received_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
            (uri, event.collection, event.did, action, record, event.rkey, time.time_ns()),
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
    event_rkey: str
    attempts: int

    @property
    def occasion_of_status(self) -> str:
        """The occasion a status event is: its own record."""
        return f"status {self.actor}/{self.event_rkey}"


class Retry(Exception):
    """Something outside tack failed for now; the event is tried again later. ``outcome`` is a metric label."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class Rejected(Exception):
    """The event cannot be run, for good. ``outcome`` is a metric label."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Verdict:
    """What became of an event: ``state`` done, skipped or rejected; ``outcome`` the metric label."""

    state: str
    outcome: str
    reason: str = ""
    occasion: str = ""
    """Set when the event is to be remembered as run: (pull, occasion, sha) runs once."""
    sha: str = ""
    spec: PipelineSpec | None = None


class PullWorker(due.QueueWorker):
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
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.registry = registry
        super().__init__(
            book.conn,
            "SELECT MIN(next_attempt_ns) FROM pull_events WHERE state='queued'",
        )
        self.book = book
        self.pipelines = pipelines
        self.minter = minter
        self.load = load
        self.resolver = resolver
        self.pds = pds
        self.fetcher = fetcher
        self.on_queued = on_queued
        self.max_attempts = max_attempts

    async def work_due(self) -> int:
        """Decide every queued pull event that is due; returns how many.

        Each pull's events are decided in order; different pulls side by side
        (at most ``CONCURRENCY``), so one author's stalled PDS holds up no one else.
        """
        rows = self.book.conn.execute(
            "SELECT id, uri, collection, actor, action, record, event_rkey, attempts FROM pull_events"
            " WHERE state='queued' AND next_attempt_ns<=? ORDER BY id LIMIT 64",
            (time.time_ns(),),
        ).fetchall()
        by_pull: dict[str, list[QueuedPull]] = {}
        for row in rows:
            by_pull.setdefault(row[1], []).append(QueuedPull(*row))
        slots = asyncio.Semaphore(CONCURRENCY)

        async def decide_in_order(events: list[QueuedPull]) -> None:
            async with slots:
                for event in events:
                    await self.process(event)

        async with asyncio.TaskGroup() as group:
            for events in by_pull.values():
                group.create_task(decide_in_order(events))
        return len(rows)

    async def process(self, event: QueuedPull) -> None:
        """Decide one event: a pipeline, a skip, a rejection with its reason, or a later retry."""
        try:
            verdict = await self._decide(event)
        except Retry as exc:
            if event.attempts + 1 < self.max_attempts:
                self._retry(event, exc)
                return
            verdict = Verdict("rejected", exc.outcome, f"gave up after {self.max_attempts} attempts: {exc}")
        except Rejected as exc:
            verdict = Verdict("rejected", exc.outcome, str(exc))
        except PatchError as exc:
            verdict = Verdict("rejected", exc.reason, str(exc))
        except BadRecord as exc:
            verdict = Verdict("rejected", "bad_record", str(exc))
        except sqlite3.Error:
            raise
        except Exception as exc:
            # A bug deciding one event must not stop every other pull request: retried, then rejected.
            log.error(
                "deciding a pull request event failed",
                exc_info=True,
                extra={"uri": event.uri, "action": event.action},
            )
            retry = Retry("internal_error", f"{type(exc).__name__}: {str(exc)[:200]}")
            if event.attempts + 1 < self.max_attempts:
                self._retry(event, retry)
                return
            verdict = Verdict(
                "rejected", retry.outcome, f"gave up after {self.max_attempts} attempts: {retry}"
            )
        self._finish(event, verdict)

    async def _decide(self, event: QueuedPull) -> Verdict:
        author, rkey = parse_pull_uri(event.uri)
        record = json.loads(event.record) if event.record else await self._read_pull(author, rkey)
        pull = parse_pull(record)
        if not pull.branch_based:
            return Verdict(
                "skipped",
                "not_branch",
                "a fork's pull request or a pasted patch: it runs only by Run CI in Tangled",
            )
        repo = self.registry.by_repo_did(pull.target_repo)
        if repo is None:
            return Verdict(
                "skipped", "unregistered", f"{pull.target_repo} is not a repository registered here"
            )
        for who in sorted({author, event.actor}):
            if not self.registry.may_push(repo.repo_did, who):
                return Verdict("skipped", "not_authorized", f"{who} has no push rights on {repo.repo_did}")
        if pull.patch_mime and pull.patch_mime != "application/gzip":
            raise Rejected("bad_mime", f"the patch blob is {pull.patch_mime[:80]!r}, not application/gzip")
        blob = await self._blob(author, pull.patch_cid)
        verify_blob(pull.patch_cid, blob)
        sha = last_patch_sha(gunzip(blob))
        occasion = f"round {pull.rounds}" if event.collection == PULL else event.occasion_of_status
        if self._ran(event.uri, occasion, sha):
            return Verdict("skipped", "duplicate", f"already decided for {sha} ({occasion})")
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
        started = time.monotonic()
        try:
            files = await self.load(repo.knot, repo.repo_did, sha)
        except LoadFailed as exc:
            if exc.transient and event.attempts + 1 < self.max_attempts:
                raise Retry("knot_unavailable", str(exc)) from None
            spec = await self.minter.spec(mint, self.pipelines.mint_rkey(), load_failure(str(exc)))
            return Verdict("done", "load_failed", str(exc), occasion, sha, spec)
        metrics.WORKFLOW_LOAD_SECONDS.observe(time.monotonic() - started)
        routed = self.minter.select(files, mint)
        if not routed:
            reason = "no workflow matched" if files else "no workflows at this commit"
            return Verdict("done", "no_workflows", reason, occasion, sha)
        spec = await self.minter.spec(mint, self.pipelines.mint_rkey(), routed)
        return Verdict("done", "pipeline", "", occasion, sha, spec)

    def _ran(self, uri: str, occasion: str, sha: str) -> bool:
        row = self.book.conn.execute(
            "SELECT 1 FROM pull_runs WHERE uri=? AND occasion=? AND sha=?", (uri, occasion, sha)
        ).fetchone()
        return row is not None

    def _finish(self, event: QueuedPull, verdict: Verdict) -> None:
        """Write the verdict, the run it remembers and its pipeline, in one transaction; then log and count it."""
        with self.book.transaction() as conn:
            if verdict.occasion:
                spec = verdict.spec
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO pull_runs (uri, occasion, sha, action, pipeline_rkey, received_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event.uri,
                        verdict.occasion,
                        verdict.sha,
                        event.action,
                        spec.rkey if spec else "",
                        time.time_ns(),
                    ),
                ).rowcount
                if not claimed:
                    verdict = Verdict(
                        "skipped", "duplicate", f"already decided for {verdict.sha} ({verdict.occasion})"
                    )
                elif spec is not None:
                    self.pipelines.create(conn, spec)
            conn.execute(
                "UPDATE pull_events SET state=?, outcome=?, reason=?, pipeline_rkey=?"
                " WHERE id=? AND state='queued'",
                (
                    verdict.state,
                    verdict.outcome,
                    verdict.reason[:1000],
                    verdict.spec.rkey if verdict.spec else "",
                    event.id,
                ),
            )
        metrics.PULL_EVENTS.labels(verdict.outcome).inc()
        fields = {
            "uri": event.uri,
            "action": event.action,
            "actor": event.actor,
            "state": verdict.state,
            "outcome": verdict.outcome,
            "reason": verdict.reason[:300],
        }
        if verdict.sha:
            fields["sha"] = verdict.sha
        if verdict.spec is not None:
            fields["rkey"] = verdict.spec.rkey
            fields["workflows"] = str(len(verdict.spec.workflows))
        if verdict.state == "rejected":
            log.warning("pull request event rejected", extra=fields)
        else:
            log.info("pull request event decided", extra=fields)
        if verdict.spec is not None and any(r.route.provider for r in verdict.spec.workflows):
            self.on_queued()

    async def _read_pull(self, author: str, rkey: str) -> dict[str, Any]:
        """The pull record a status event is about, from its author's PDS."""
        try:
            return await self.pds.get_record(RecordUri(author, PULL, rkey))
        except RecordError as exc:
            if exc.refused:
                raise Rejected("forbidden_address", f"the pull record: {exc}") from None
            if exc.reason == "unavailable":
                raise Retry("pds_unavailable", f"the pull record: {exc}") from None
            raise Rejected("pull_not_found", f"the pull record: {exc}") from None

    async def _blob(self, author: str, cid: str) -> bytes:
        """The blob from its author's PDS, as its DID document names it; bounded, public addresses only."""
        try:
            doc = await self.resolver.resolve(author)
        except ResolveError as exc:
            if exc.reason == "unavailable":
                raise Retry("did_unavailable", f"the pull's author {author}: {exc}") from None
            raise Rejected("no_pds", f"the pull's author {author}: {exc}") from None
        if doc.pds is None:
            raise Rejected("no_pds", f"the DID document of {author} names no PDS")
        url = f"{doc.pds.rstrip('/')}/xrpc/com.atproto.sync.getBlob?{urlencode({'did': author, 'cid': cid})}"
        try:
            status, _, body = await self.fetcher.get_bytes(url, max_bytes=MAX_BLOB_BYTES, target="pds")
        except ValueError:
            raise Rejected(
                "blob_too_large", f"the patch blob is larger than {MAX_BLOB_BYTES} bytes"
            ) from None
        except Refused as exc:
            raise Rejected("forbidden_address", f"the author's PDS {doc.pds[:200]}: {exc}") from None
        except TimeoutError as exc:
            raise Retry("timeout", f"the author's PDS {doc.pds[:200]}: {exc}") from None
        except OSError as exc:
            raise Retry("unreachable", f"the author's PDS {doc.pds[:200]}: {exc}") from None
        if 300 <= status < 400:
            raise Rejected(
                "redirected",
                f"the author's PDS answered getBlob with a redirect (HTTP {status}); tack follows none",
            )
        if status >= 500 or status == 429:
            raise Retry(
                "pds_error", f"the author's PDS answered getBlob with HTTP {status}{_xrpc_error(body)}"
            )
        if status != 200:
            raise Rejected(
                "no_blob", f"the author's PDS answered getBlob with HTTP {status}{_xrpc_error(body)}"
            )
        return body

    def _retry(self, event: QueuedPull, exc: Retry) -> None:
        at = time.time_ns() + int(backoff.delay(event.attempts + 1, base=2.0, cap=300.0) * 1e9)
        with self.book.transaction() as conn:
            conn.execute(
                "UPDATE pull_events SET attempts=attempts+1, next_attempt_ns=?, outcome=?, reason=? WHERE id=?",
                (at, exc.outcome, str(exc)[:1000], event.id),
            )
        metrics.PULL_EVENTS.labels("retried").inc()
        log.warning(
            "pull request event will be retried",
            extra={
                "uri": event.uri,
                "action": event.action,
                "attempts": event.attempts + 1,
                "outcome": exc.outcome,
                "reason": str(exc)[:300],
            },
        )


def _xrpc_error(body: bytes) -> str:
    """`` (Name: message)`` of an XRPC error body, "" when it is not one."""
    try:
        error = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(error, dict) or not isinstance(error.get("error"), str):
        return ""
    message = error.get("message")
    text = f"{error['error']}: {message}" if isinstance(message, str) else error["error"]
    return f" ({text[:200]})"
