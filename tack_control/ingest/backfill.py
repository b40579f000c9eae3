"""Reconciliation: the mirror made to agree with the records on the PDSes, at start, on a timer and on demand.

Jetstream is the fast path but has no history beyond a short window: a tack
started (or restored) after a record was written would never hear of it. So
the reconciler reads the owner's ``sh.tangled.spindle.member`` records and
every member's (and the owner's) ``sh.tangled.repo`` and
``sh.tangled.repo.collaborator`` records from their PDSes
(``com.atproto.repo.listRecords``), compares them with the mirror
(:mod:`tack_control.ingest.snapshot`), and applies the differences as
synthetic commits through :meth:`Registry.apply`, the same path as live
records: a repository found this way is verified against its knot like any
other.

- A record that changed live (Jetstream) after the snapshot's token was taken
  is left alone (:mod:`tack_control.ingest.livemarks`): a revoked member stays
  revoked even if the snapshot read while it was revoked still lists it.
- A DID whose records cannot be read completely keeps what the mirror holds
  for it (a collection that was read completely is still applied), is
  retried with backoff, and is reported by :meth:`Reconciler.status` and the
  ``tack_reconcile_*`` metrics. Nothing here stops the rest of tack.
- Bounded: ``listRecords`` pages of 100, at most ``max_records`` records per
  DID and ``max_pages`` pages per collection, ``fetch_timeout_s`` per DID,
  ``concurrency`` DIDs at a time; every fetch through ``netguard``.
- Only the owner and current members are read. Rows of a former member stay
  as they are and count for nothing (as after a live revocation); they are
  read again if the owner makes them a member again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tack_common import backoff
from tack_common.notify import Notifier
from tack_common.timefmt import rfc3339_seconds
from tack_control import metrics
from tack_control.engine.statuses import StatusBook
from tack_control.identity.listing import ListingError
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Registry
from tack_control.ingest.snapshot import Snapshot, plan
from tack_control.ingest.wire import BadRecord, JetstreamEvent


log = logging.getLogger(__name__)

SHORT = {MEMBER: "member", REPO: "repo", COLLABORATOR: "collaborator"}
"""The ``collection`` label of the metrics."""


class Lister(Protocol):
    """Lists one collection of one repository from its PDS (:meth:`tack_control.identity.pds.PdsReader.list_records`)."""

    async def list_records(
        self, did: str, collection: str, *, max_records: int, max_pages: int, fresh: bool
    ) -> dict[str, dict[str, Any] | None]: ...


@dataclass(frozen=True)
class Limits:
    """How much one reconciliation may read."""

    max_records: int = 10_000
    """Records per DID, all its collections together."""
    max_pages: int = 200
    """``listRecords`` pages per collection."""
    fetch_timeout_s: float = 60.0
    """Seconds to read all of one DID's collections."""
    concurrency: int = 8
    """DIDs read at the same time."""
    retry_base_s: float = 5.0
    """First delay before a DID that could not be read is read again (doubling, up to the interval)."""


@dataclass
class DidState:
    """How reading one DID's records went."""

    last_success: float | None = None
    last_failure: float | None = None
    reason: str = ""
    error: str = ""
    failures: int = 0
    retry_at: float | None = None
    records: int = 0


@dataclass
class Report:
    """What one pass did: DIDs read, DIDs that failed (with why), changes by (collection, kind)."""

    read: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)


class Reconciler:
    """Keeps the mirror in agreement with the PDSes; one pass at a time."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        lister: Lister,
        on_changed: Callable[[], None],
        interval_s: float = 300.0,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.book = book
        self.lister = lister
        self.on_changed = on_changed
        self.interval_s = interval_s
        self.limits = limits or Limits()
        self.clock = clock
        self.wake = Notifier()
        self.dids: dict[str, DidState] = {}
        self.passes = 0
        self.last_pass: float | None = None
        self.running = False
        self._poked = False

    def poke(self) -> None:
        """Membership changed: reconcile everything soon (again, if a pass is running)."""
        self._poked = True
        self.wake.notify()

    async def run(self) -> None:
        """Reconcile at once, then every ``interval_s``, when poked, and retry failed DIDs as they fall due."""
        next_full = self.clock()
        while True:
            now = self.clock()
            if self._poked or now >= next_full:
                self._poked = False
                await self._guarded(None)
                next_full = self.clock() + self.interval_s
            elif due := {d for d, s in self.dids.items() if s.retry_at is not None and s.retry_at <= now}:
                await self._guarded(due)
            retries = [s.retry_at for s in self.dids.values() if s.retry_at is not None]
            if not self._poked:
                await self.wake.wait(max(0.0, min([next_full, *retries]) - self.clock()))

    async def _guarded(self, only: set[str] | None) -> None:
        try:
            await self.reconcile(only)
        except Exception:
            log.exception("reconciliation failed; it runs again later")

    async def reconcile(self, only: set[str] | None = None) -> Report:
        """One pass over the owner and every member (only those in ``only``, when given)."""
        self.running = True
        report = Report()
        try:
            owner = self.registry.owner
            changed = False
            if only is None or owner in only:
                changed |= await self._reconcile_did(owner, (MEMBER, REPO, COLLABORATOR), report)
            members = set(self.registry.members) - {owner}
            gate = asyncio.Semaphore(self.limits.concurrency)

            async def one(did: str) -> bool:
                async with gate:
                    try:
                        return await self._reconcile_did(did, (REPO, COLLABORATOR), report)
                    except Exception:  # a bug: the other DIDs still go on
                        log.exception("reconciling a DID failed", extra={"did": did})
                        report.failed[did] = "internal error"
                        return False

            targets = members if only is None else members & only
            changed |= any(await asyncio.gather(*(one(did) for did in sorted(targets))))
        finally:
            self.running = False
            self.registry.live.forget(self.registry.live.token())
        for did in [d for d in self.dids if not self.registry.wanted(d)]:
            del self.dids[did]
        failing = sum(s.failures > 0 for s in self.dids.values())
        metrics.RECONCILE_DIDS_FAILING.set(failing)
        if only is None:
            self.passes += 1
            self.last_pass = time.time()
            metrics.RECONCILE_PASSES.labels("partial" if report.failed else "complete").inc()
            metrics.RECONCILE_LAST_PASS.set(self.last_pass)
            log.info(
                "reconciliation pass done",
                extra={
                    "dids": len(report.read) + len(report.failed),
                    "failed": len(report.failed),
                    "changes": sum(report.changes.values()),
                },
            )
        if changed:
            self.on_changed()
        return report

    async def _reconcile_did(self, did: str, collections: tuple[str, ...], report: Report) -> bool:
        """Read and apply one DID's collections; True when knots or pending registrations changed."""
        token = self.registry.live.token()
        state = self.dids.setdefault(did, DidState())
        snapshots, failure = await read_did(
            self.lister, did, collections, self.limits, fresh=state.failures > 0
        )
        changed = False
        if snapshots:
            try:
                changed = self._apply(did, snapshots, token, report)
            except Exception as exc:
                self.registry.reload()
                log.exception("reconciled records could not be written", extra={"did": did})
                failure = ListingError("database", f"the records could not be written: {str(exc)[:200]}")
        if failure is None:
            state.last_success, state.failures, state.retry_at = time.time(), 0, None
            state.reason = state.error = ""
            state.records = sum(len(s) for s in snapshots.values())
            report.read.append(did)
            return changed
        state.failures += 1
        state.last_failure, state.reason, state.error = time.time(), failure.reason, str(failure)
        cap = max(self.limits.retry_base_s, min(self.interval_s, 900.0))
        state.retry_at = self.clock() + backoff.delay(state.failures, base=self.limits.retry_base_s, cap=cap)
        report.failed[did] = str(failure)
        if failure.reason != "database":  # logged with its traceback above
            log.warning(
                "records could not be read; keeping what tack knows for this DID",
                extra={
                    "did": did,
                    "reason": failure.reason,
                    "error": str(failure)[:300],
                    "failures": state.failures,
                },
            )
        return changed

    def _apply(self, did: str, snapshots: dict[str, Snapshot], token: int, report: Report) -> bool:
        """Apply the differences in one transaction; records changed live since ``token`` are left alone."""
        counts: Counter[tuple[str, str]] = Counter()
        applied_log: list[tuple[str, str, str]] = []
        changed = False
        with self.book.transaction() as conn:
            for collection, snapshot in snapshots.items():
                mirrored = self.registry.mirrored(conn, did, collection)
                planned = plan(collection, self.registry.hostname, mirrored, snapshot)
                counts[(SHORT[collection], "unreadable")] += len(planned.unreadable)
                for change in planned.changes:
                    if self.registry.live.since(did, collection, change.rkey, token):
                        counts[(SHORT[collection], "kept_live")] += 1
                        continue
                    event = JetstreamEvent(
                        did=did,
                        time_us=time.time_ns() // 1000,
                        kind="commit",
                        operation=change.operation,
                        collection=collection,
                        rkey=change.rkey,
                        record=change.record,
                    )
                    try:
                        applied = self.registry.apply(conn, event, live=False)
                    except BadRecord:
                        counts[(SHORT[collection], "unreadable")] += 1
                        continue
                    counts[(SHORT[collection], change.kind)] += 1
                    applied_log.append((collection, change.rkey, applied.outcome))
                    changed |= applied.knots_changed or applied.outcome == "repo_pending"
        for (collection, kind), n in counts.items():
            if n:
                metrics.RECONCILE_CHANGES.labels(collection, kind).inc(n)
                report.changes[(collection, kind)] += n
        for collection, rkey, outcome in applied_log:
            log.info(
                "reconciled a record",
                extra={"did": did, "collection": collection, "rkey": rkey, "outcome": outcome},
            )
        return changed

    def status(self) -> dict[str, Any]:
        """For the health report: the last pass, and per DID when its records were last read or failed."""
        now = self.clock()

        def when(seconds: float | None) -> str | None:
            return None if seconds is None else rfc3339_seconds(int(seconds * 1e9))

        dids = [
            {
                "did": did,
                "role": "owner" if did == self.registry.owner else "member",
                "ok": state.failures == 0 and state.last_success is not None,
                "last_success": when(state.last_success),
                "last_failure": when(state.last_failure),
                "reason": state.reason,
                "error": state.error,
                "failures": state.failures,
                "records": state.records,
                "retry_in_s": None if state.retry_at is None else round(max(0.0, state.retry_at - now), 1),
            }
            for did, state in sorted(self.dids.items())
        ]
        return {
            "interval_s": self.interval_s,
            "passes": self.passes,
            "last_pass": when(self.last_pass),
            "running": self.running,
            "failing": sum(state.failures > 0 for state in self.dids.values()),
            "dids": dids,
        }


async def read_did(
    lister: Lister, did: str, collections: tuple[str, ...], limits: Limits, *, fresh: bool = False
) -> tuple[dict[str, Snapshot], ListingError | None]:
    """Read ``collections`` of ``did`` in order, within the limits; what was read completely, and the failure
    that stopped the rest (None when all were read). Counted in ``tack_reconcile_reads_total``."""
    snapshots: dict[str, Snapshot] = {}
    budget = limits.max_records
    collection = collections[0]
    try:
        async with asyncio.timeout(limits.fetch_timeout_s):
            for collection in collections:
                records = await lister.list_records(
                    did,
                    collection,
                    max_records=budget,
                    max_pages=limits.max_pages,
                    fresh=fresh and not snapshots,
                )
                metrics.RECONCILE_READS.labels(SHORT[collection], "ok").inc()
                budget -= len(records)
                snapshots[collection] = records
    except ListingError as exc:
        failure = exc
    except TimeoutError:
        failure = ListingError("timeout", f"reading the records took longer than {limits.fetch_timeout_s:g}s")
    else:
        return snapshots, None
    metrics.RECONCILE_READS.labels(SHORT[collection], failure.reason).inc()
    return snapshots, failure
