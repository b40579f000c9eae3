"""The dispatcher: hands queued workflows to their providers with Spawn, durably and at least once.

Workflows wait in the ``workflows`` table (``dispatch='queued'``) until their
provider accepts them. A provider that is down is retried with backoff until
``give_up_s`` after the trigger, then the workflow is ``failed`` with the
reason. Spawn is idempotent at the provider, so resending after a crash or a
timeout never starts anything twice. Workflows whose status has not moved for
``reconcile_after_s`` are spawned again: the acceptance carries the run's
current status, and a provider that lost the run starts it afresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass

import grpc

from tack_common import backoff, status as st
from tack_common.notify import Notifier
from tack_common.pb import provider_pb2 as pb
from tack_common.throttle import LogThrottle
from tack_control import metrics
from tack_control.engine import due
from tack_control.engine.providers import RETRYABLE, ProviderClient
from tack_control.engine.statuses import StatusBook, pipeline_uri
from tack_control.ingest.wire import BadRecord, Pipeline, parse_pipeline


log = logging.getLogger(__name__)

_KINDS = {
    "push": pb.TRIGGER_KIND_PUSH,
    "pull_request": pb.TRIGGER_KIND_PULL_REQUEST,
    "manual": pb.TRIGGER_KIND_MANUAL,
}


@dataclass(frozen=True)
class Queued:
    """A workflow row waiting for Spawn."""

    id: int
    knot: str
    rkey: str
    name: str
    provider: str
    config: str
    attempts: int
    queued_ns: int
    solo: bool


@dataclass(frozen=True)
class Provenance:
    """What the pipeline row says beyond its record: whether the code is untrusted, and whether it was recovered."""

    untrusted: bool = False
    recovered: bool = False
    source_knot: str = ""


def spawn_request(
    knot: str, rkey: str, pipeline: Pipeline, rows: list[Queued], provenance: Provenance | None = None
) -> pb.SpawnRequest:
    """The Spawn request for some workflows of one pipeline."""
    t = pipeline.trigger
    p = provenance or Provenance()
    trigger = pb.Trigger(
        kind=_KINDS[t.kind],
        repo=pb.Repo(
            knot=t.repo.knot,
            did=t.repo.did,
            name=t.repo.name,
            default_branch=t.repo.default_branch,
            repo_did=t.repo.repo_did,
            rkey=t.repo.name if t.repo.repo_did else "",
        ),
        source_repo_did=t.source_repo,
        source_knot=p.source_knot if t.source_repo else "",
    )
    if t.kind == "push":
        trigger.push.CopyFrom(pb.PushTrigger(ref=t.ref, old_sha=t.old_sha, new_sha=t.new_sha))
    elif t.kind == "pull_request":
        trigger.pull_request.CopyFrom(
            pb.PullRequestTrigger(
                source_branch=t.source_branch,
                target_branch=t.target_branch,
                source_sha=t.source_sha,
                action=t.action,
                pull=t.pull,
            )
        )
    else:
        trigger.manual.CopyFrom(
            pb.ManualTrigger(
                inputs=[pb.ManualInput(key=k, value=v) for k, v in t.inputs], sha=t.sha, ref=t.ref
            )
        )
    by_name = {w.name: w for w in pipeline.workflows}
    workflows = []
    for row in rows:
        wf = by_name[row.name]
        stored = json.loads(row.config)
        workflows.append(
            pb.Workflow(
                name=wf.name,
                engine=wf.engine,
                raw=wf.raw,
                clone=pb.CloneOptions(
                    skip=wf.clone.skip,
                    depth=wf.clone.depth,
                    submodules=wf.clone.submodules,
                    tags=wf.clone.tags,
                ),
                config_json=json.dumps(stored["config"]),
                environment=stored["environment"],
            )
        )
    return pb.SpawnRequest(
        knot=knot,
        pipeline_rkey=rkey,
        actor_did=t.repo.did,
        trigger=trigger,
        workflows=workflows,
        untrusted=p.untrusted,
        recovered=p.recovered,
        pipeline_uri=pipeline_uri(knot, rkey),
    )


class Dispatcher:
    """Delivers queued workflows to providers."""

    def __init__(
        self,
        book: StatusBook,
        providers: dict[str, ProviderClient],
        spawn_timeout_s: float = 10.0,
        give_up_s: float = 600.0,
        reconcile_after_s: float = 1800.0,
        concurrency: int = 64,
        cancels: Notifier | None = None,
    ) -> None:
        self.book = book
        self.conn = book.conn
        self.providers = providers
        self.spawn_timeout_s = spawn_timeout_s
        self.give_up_s = give_up_s
        self.reconcile_after_s = reconcile_after_s
        self.wake = Notifier()
        self.inflight: set[int] = set()
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self._failure: Exception | None = None
        self.retry_logs = LogThrottle()
        self.cancels = cancels
        """Woken when a workflow cancelled while its Spawn was in flight must be cancelled at its provider."""

    def poke(self) -> None:
        """New work was queued."""
        self.wake.notify()

    def _due(self, now: int) -> list[Queued]:
        rows = self.conn.execute(
            "SELECT id, knot, rkey, name, provider, config, attempts, queued_ns, solo FROM workflows"
            " WHERE dispatch='queued' AND next_attempt_ns<=? ORDER BY id LIMIT 2000",
            (now,),
        ).fetchall()
        return [
            Queued(
                id=r[0],
                knot=r[1],
                rkey=r[2],
                name=r[3],
                provider=r[4],
                config=r[5],
                attempts=r[6],
                queued_ns=r[7],
                solo=bool(r[8]),
            )
            for r in rows
            if r[0] not in self.inflight
        ]

    def _next_due_s(self) -> float:
        return due.seconds_until(
            self.conn, "SELECT MIN(next_attempt_ns) FROM workflows WHERE dispatch='queued'", longest_s=5.0
        )

    async def run(self) -> None:
        """Dispatch forever; a delivery that could not even be put back in the queue ends it (run it
        supervised: the workflows stay queued in the database and are dispatched after the restart)."""
        last_reconcile = 0.0
        while True:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if time.monotonic() - last_reconcile > min(60.0, self.reconcile_after_s / 2):
                self.reconcile()
                last_reconcile = time.monotonic()
            due = self._due(time.time_ns())
            metrics.DISPATCH_QUEUED.set(len(due) + len(self.inflight))
            groups: dict[tuple[str, str, str, int], list[Queued]] = defaultdict(list)
            for row in due:
                groups[(row.knot, row.rkey, row.provider, row.id if row.solo else 0)].append(row)
            for rows in groups.values():
                await self.slots.acquire()
                self.inflight.update(r.id for r in rows)
                task = asyncio.create_task(self._deliver(rows))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            if not due:
                await self.wake.wait(self._next_due_s())

    async def close(self) -> None:
        """Cancel deliveries in flight (they are resent after restart)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _deliver(self, rows: list[Queued]) -> None:
        try:
            await self._spawn(rows)
        except Exception as exc:
            try:
                self._retry(rows, "internal error while dispatching")
            except Exception:
                # The database refuses writes too (full disk?): fail the dispatcher, which restarts with backoff.
                self._failure = exc
            else:
                log.exception("dispatch failed", extra={"knot": rows[0].knot, "rkey": rows[0].rkey})
        finally:
            self.inflight.difference_update(r.id for r in rows)
            self.slots.release()
            self.wake.notify()

    async def _spawn(self, rows: list[Queued]) -> None:
        first = rows[0]
        provider = self.providers.get(first.provider)
        if provider is None:
            names = ", ".join(self.providers) or "none"
            self._fail(
                rows, f"provider {first.provider!r} is no longer configured (configured providers: {names})"
            )
            return
        record, untrusted, origin, source_knot = self.conn.execute(
            "SELECT record, untrusted, origin, source_knot FROM pipelines WHERE knot=? AND rkey=?",
            (first.knot, first.rkey),
        ).fetchone()
        provenance = Provenance(
            untrusted=bool(untrusted), recovered=origin == "recovered", source_knot=source_knot
        )
        try:
            pipeline = parse_pipeline(json.loads(record))
        except BadRecord as exc:
            # The stored record never gets better: fail now rather than retrying until the give-up.
            self._fail(rows, f"tack cannot read this pipeline's record: {exc}")
            return
        request = spawn_request(first.knot, first.rkey, pipeline, rows, provenance)
        try:
            response = await provider.spawn(request, self.spawn_timeout_s)
        except grpc.aio.AioRpcError as exc:
            code, detail = exc.code(), (exc.details() or "").strip()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                if len(rows) > 1:
                    self._split(rows)
                else:
                    self._fail(rows, f"{first.provider} rejected the workflow: {detail}")
            elif code in RETRYABLE:
                self._retry(rows, f"provider {first.provider!r} unavailable ({code.name}: {detail})")
            else:
                self._fail(rows, f"provider {first.provider!r} refused the workflow ({code.name}: {detail})")
            return
        self._accept(rows, response)

    def _accept(self, rows: list[Queued], response: pb.SpawnResponse) -> None:
        by_name = {a.workflow: a for a in response.acceptances}
        now = time.time_ns()
        with self.book.transaction() as conn:
            for row in rows:
                conn.execute(
                    "UPDATE workflows SET dispatch='accepted', attempts=attempts+1, updated_ns=? WHERE id=?",
                    (now, row.id),
                )
                acceptance = by_name.get(row.name)
                if acceptance is not None and acceptance.status not in (pb.STATUS_UNSPECIFIED, st.PENDING):
                    self.book.record(conn, row.id, st.name(acceptance.status))
            rearmed = self._rearm_cancels(conn, rows)
        if rearmed:
            self._wake_cancels()
        log.info(
            "spawned",
            extra={
                "knot": rows[0].knot,
                "rkey": rows[0].rkey,
                "provider": rows[0].provider,
                "workflows": len(rows),
            },
        )

    def _split(self, rows: list[Queued]) -> None:
        with self.book.transaction() as conn:
            conn.executemany("UPDATE workflows SET solo=1 WHERE id=?", [(r.id,) for r in rows])

    def _retry(self, rows: list[Queued], reason: str) -> None:
        now = time.time_ns()
        attempts = max(r.attempts for r in rows) + 1
        if now - min(r.queued_ns for r in rows) > self.give_up_s * 1e9:
            self._fail(rows, f"{reason}; gave up after {self.give_up_s:.0f}s")
            return
        retry_at = now + int(backoff.delay(attempts, base=0.5, cap=30) * 1e9)
        # A provider that is down fails every delivery the same way: one line a minute says so.
        held = self.retry_logs.allow((rows[0].provider, reason))
        if held is not None:
            log.warning(
                "spawn will be retried",
                extra={
                    "knot": rows[0].knot,
                    "rkey": rows[0].rkey,
                    "reason": reason[:300],
                    "attempts": attempts,
                    "similar_not_logged": held,
                },
            )
        with self.book.transaction() as conn:
            conn.executemany(
                "UPDATE workflows SET attempts=?, next_attempt_ns=? WHERE id=?",
                [(attempts, retry_at, r.id) for r in rows],
            )
            # A Spawn that timed out may have reached the provider after all.
            rearmed = self._rearm_cancels(conn, rows)
        if rearmed:
            self._wake_cancels()

    @staticmethod
    def _rearm_cancels(conn: sqlite3.Connection, rows: list[Queued]) -> int:
        """Mark again for Cancel the workflows of ``rows`` cancelled while their Spawn was in flight (its run
        at the provider is then cancelled there too); how many."""
        return sum(
            conn.execute(
                "UPDATE workflows SET cancel='requested', next_cancel_ns=0, cancel_attempts=cancel_attempts+1"
                " WHERE id=? AND cancel<>''",
                (row.id,),
            ).rowcount
            for row in rows
        )

    def _wake_cancels(self) -> None:
        if self.cancels is not None:
            self.cancels.notify()

    def _fail(self, rows: list[Queued], reason: str) -> None:
        log.warning(
            "workflows failed by tack",
            extra={"knot": rows[0].knot, "rkey": rows[0].rkey, "reason": reason[:300]},
        )
        with self.book.transaction() as conn:
            for row in rows:
                # The error comes with the status (StatusBook.record): a workflow cancelled meanwhile keeps its own.
                conn.execute("UPDATE workflows SET dispatch='failed' WHERE id=?", (row.id,))
                self.book.record(conn, row.id, "failed", reason, -1)

    def reconcile(self) -> int:
        """Queue Spawn again for accepted workflows whose status has not moved for a long time."""
        cutoff = time.time_ns() - int(self.reconcile_after_s * 1e9)
        with self.book.transaction() as conn:
            count = conn.execute(
                "UPDATE workflows SET dispatch='queued', next_attempt_ns=0, queued_ns=?1, updated_ns=?1"
                " WHERE dispatch='accepted' AND status IN ('pending', 'running') AND updated_ns < ?2",
                (time.time_ns(), cutoff),
            ).rowcount
        if count:
            log.info("reconciling stalled workflows", extra={"count": count})
            self.poke()
        return count
