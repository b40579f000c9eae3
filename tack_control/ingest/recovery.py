"""Missed-push recovery: pushes tack never heard of are found by comparing refs, and run once.

A knot stream can lose history: tack was down longer than the knot keeps
events (Knot2 keeps a bounded ring in memory), the knot restarted, or a
subscription started fresh. Events cannot tell tack what it missed, but the
repository can: for each verified repository of a current knot, the refs the
knot serves now (``git ls-remote``) are compared with the newest commit tack
saw per ref (``repo_refs``, written for every refUpdate). A head that moved, or
a branch or tag that appeared, is queued as a push marked ``recovered`` (its
changed files are unknown, so ``paths:`` filters are taken to match); the
push worker then runs it like any push, and the usual (repository, ref,
commit) key keeps it from running twice if its event arrives after all.

The first time a repository is scanned its refs are only recorded: a
repository registered today does not build every branch it already has.
Scans run after a knot (re)connects and its backlog has drained, and then
every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from tack_common.notify import Notifier
from tack_control import metrics
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.registry import Registry, Repo
from tack_control.ingest.wire import is_sha, is_zero_sha


log = logging.getLogger(__name__)

ListRefs = Callable[[str, str], Awaitable[Mapping[str, str]]]
"""(knot, repo DID) → {ref: commit} for the branches and tags the knot serves now (tags peeled)."""


class Recovery:
    """Scans verified repositories of current knots for pushes the stream did not deliver."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        list_refs: ListRefs,
        on_push: Callable[[], None],
        interval_s: float = 300.0,
        settle_s: float = 2.0,
    ) -> None:
        self.registry = registry
        self.book = book
        self.list_refs = list_refs
        self.on_push = on_push
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.wake = Notifier()
        self._knots_to_scan: set[str] = set()

    def knot_connected(self, knot: str) -> None:
        """A knot stream (re)connected: scan its repositories once its backlog has had time to arrive."""
        self._knots_to_scan.add(knot)
        self.wake.notify()

    async def run(self) -> None:
        """Scan on connects and on the interval, forever."""
        last_full = 0.0
        while True:
            await self.wake.wait(max(1.0, self.interval_s - (time.monotonic() - last_full)))
            if self._knots_to_scan:
                await asyncio.sleep(self.settle_s)
            if time.monotonic() - last_full >= self.interval_s:
                knots = None
                last_full = time.monotonic()
            else:
                knots = set(self._knots_to_scan)
            self._knots_to_scan.clear()
            await self.scan(knots)

    def repositories(self, knots: set[str] | None) -> list[Repo]:
        """Verified repositories on current-protocol knots (all of them, or those on ``knots``)."""
        rows = self.book.conn.execute(
            "SELECT r.did, r.rkey, r.name, r.knot, r.repo_did, r.state FROM repos r"
            " LEFT JOIN knot_cursors k ON k.knot = r.knot"
            " WHERE r.state='verified' AND r.spindle=? AND COALESCE(k.speaks, '') <> 'legacy'",
            (self.registry.hostname,),
        ).fetchall()
        return [Repo(*r) for r in rows if knots is None or r[3] in knots]

    async def scan(self, knots: set[str] | None = None) -> int:
        """Compare refs of the selected repositories; returns how many pushes were queued."""
        queued = 0
        for repo in self.repositories(knots):
            try:
                refs = await self.list_refs(repo.knot, repo.repo_did)
            except (OSError, TimeoutError, ValueError) as exc:
                metrics.RECOVERY_SCANS.labels("failed").inc()
                log.warning(
                    "could not list refs to recover missed pushes",
                    extra={"knot": repo.knot, "repo_did": repo.repo_did, "error": str(exc)[:300]},
                )
                continue
            metrics.RECOVERY_SCANS.labels("ok").inc()
            queued += self._compare(repo, refs)
        if queued:
            self.on_push()
        return queued

    def _compare(self, repo: Repo, refs: Mapping[str, str]) -> int:
        now = time.time_ns()
        queued = 0
        with self.book.transaction() as conn:
            seen = dict(
                conn.execute("SELECT ref, sha FROM repo_refs WHERE repo_did=?", (repo.repo_did,)).fetchall()
            )
            # The row with an empty ref marks a repository scanned before: only then is a difference a missed push.
            baseline = "" in seen
            for ref, sha in sorted(refs.items()):
                if not (ref.startswith(("refs/heads/", "refs/tags/")) and is_sha(sha)) or is_zero_sha(sha):
                    continue
                old = seen.get(ref)
                if old == sha:
                    continue
                conn.execute(
                    "INSERT INTO repo_refs (repo_did, ref, sha, updated_ns) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (repo_did, ref) DO UPDATE SET sha=excluded.sha, updated_ns=excluded.updated_ns",
                    (repo.repo_did, ref, sha, now),
                )
                if not baseline:
                    continue
                event: dict[str, object] = {
                    "oldSha": old or "0" * len(sha),
                    "recovered": True,
                    "changedFiles": [],
                }
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO pushes (repo, ref, new_sha, knot, state, event, received_ns)"
                    " VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                    (repo.repo_did, ref, sha, repo.knot, json.dumps(event), now),
                ).rowcount
                if inserted:
                    queued += 1
                    metrics.PUSHES.labels("recovered").inc()
                    log.warning(
                        "recovering a push the knot stream did not deliver",
                        extra={
                            "knot": repo.knot,
                            "repo_did": repo.repo_did,
                            "ref": ref,
                            "sha": sha,
                            "was": old or "",
                        },
                    )
            if not baseline:
                conn.execute(
                    "INSERT OR IGNORE INTO repo_refs (repo_did, ref, sha, updated_ns) VALUES (?, '', '', ?)",
                    (repo.repo_did, now),
                )
                log.info(
                    "recorded refs of a repository", extra={"repo_did": repo.repo_did, "refs": len(refs)}
                )
        return queued
