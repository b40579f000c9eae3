"""Cancelling workflows: ``cancelled`` in Tangled's view at once, the provider told until it has heard.

A cancel is decided and published in one transaction: each unfinished
workflow of the pipeline (or the ones named) gets ``cancelled`` with the stock
spindle's error text, so the appview shows it immediately, and is marked for
its provider (``cancel='requested'``). A workflow still waiting for ``Spawn``
is not spawned any more (``dispatch='cancelled'``). A supervised loop then
calls the provider's ``Cancel`` for every marked workflow the provider may
have: one it accepted, and one whose ``Spawn`` may have reached it (in flight,
or timed out); a provider that never had the run answers ``NOT_FOUND`` and the
mark is dropped. When the provider cannot be reached or fails, it is asked
again with backoff (1 s doubling to 5 minutes, with jitter; the mark survives
restarts). A ``Spawn`` that was in flight when the cancel came and is accepted
afterwards marks the workflow again (:meth:`Dispatcher._accept`), so the run
it started is cancelled too. Whatever the provider reports later about such a
run is a move backwards from a terminal status and is dropped by the state
machine.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence

import grpc

from tack_common import backoff
from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.engine import due
from tack_control.engine.providers import ProviderClient
from tack_control.engine.statuses import StatusBook


log = logging.getLogger(__name__)

CANCELLED_ERROR = "User canceled the workflow"
"""The error stock spindles give a cancelled workflow (the CI API's ``error``)."""


class Cancellations(due.QueueWorker):
    """Records cancels and delivers them to providers."""

    def __init__(
        self, book: StatusBook, providers: dict[str, ProviderClient], timeout_s: float = 10.0
    ) -> None:
        super().__init__(
            book.conn,
            "SELECT MIN(next_cancel_ns) FROM workflows"
            " WHERE cancel='requested' AND dispatch IN ('accepted', 'cancelled')",
        )
        self.book = book
        self.providers = providers
        self.timeout_s = timeout_s

    def request(
        self, conn: sqlite3.Connection, knot: str, rkey: str, names: Sequence[str] | None
    ) -> list[str]:
        """Cancel the unfinished workflows of pipeline (knot, rkey) (all, or those in ``names``), inside the
        caller's :meth:`StatusBook.transaction`; returns the names cancelled now (already finished ones are left)."""
        rows = conn.execute(
            "SELECT id, name FROM workflows WHERE knot=? AND rkey=? AND status IN ('', 'pending', 'running')",
            (knot, rkey),
        ).fetchall()
        cancelled = []
        for workflow_id, name in rows:
            if names is not None and name not in names:
                continue
            # Not yet spawned: it never will be. A Spawn in flight (or one that timed out) may still have
            # reached the provider, so every routed workflow is marked for its provider (see the module doc).
            conn.execute(
                "UPDATE workflows SET dispatch=CASE WHEN dispatch='queued' THEN 'cancelled' ELSE dispatch END,"
                " cancel=CASE WHEN provider IS NULL THEN '' ELSE 'requested' END, next_cancel_ns=0 WHERE id=?",
                (workflow_id,),
            )
            self.book.record(conn, workflow_id, "cancelled", CANCELLED_ERROR, -1)
            metrics.STATUS_TRANSITIONS.labels("cancelled").inc()
            cancelled.append(name)
        return cancelled

    async def work_due(self) -> int:
        """Call Cancel for every requested cancel that is due; returns how many were tried."""
        rows = self.book.conn.execute(
            "SELECT id, knot, rkey, name, provider, cancel_attempts FROM workflows"
            " WHERE cancel='requested' AND dispatch IN ('accepted', 'cancelled') AND next_cancel_ns<=? LIMIT 256",
            (time.time_ns(),),
        ).fetchall()
        await asyncio.gather(*(self._deliver(*row) for row in rows))
        return len(rows)

    async def _deliver(
        self, workflow_id: int, knot: str, rkey: str, name: str, provider: str, attempts: int
    ) -> None:
        client = self.providers.get(provider)
        outcome, reason = "done", ""
        if client is None:
            outcome, reason = "dropped", f"provider {provider!r} is no longer configured"
        else:
            try:
                await client.cancel(
                    pb.WorkflowKey(knot=knot, pipeline_rkey=rkey, workflow=name), self.timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    outcome, reason = "dropped", "the provider has no such run"
                else:
                    outcome, reason = "retry", f"{exc.code().name}: {(exc.details() or '')[:200]}"
        metrics.CANCELS.labels(outcome).inc()
        # cancel_attempts is also the mark's generation: a Spawn accepted while Cancel was on its way marks the
        # workflow again (Dispatcher), and then this outcome is stale and the new mark stays.
        with self.book.transaction() as conn:
            if outcome == "retry":
                at = time.time_ns() + int(backoff.delay(attempts + 1, base=1.0, cap=300.0) * 1e9)
                conn.execute(
                    "UPDATE workflows SET cancel_attempts=cancel_attempts+1, next_cancel_ns=?"
                    " WHERE id=? AND cancel_attempts=?",
                    (at, workflow_id, attempts),
                )
                log.warning(
                    "provider did not take a cancel; asking again",
                    extra={
                        "knot": knot,
                        "rkey": rkey,
                        "workflow": name,
                        "provider": provider,
                        "reason": reason,
                    },
                )
            else:
                conn.execute(
                    "UPDATE workflows SET cancel=? WHERE id=? AND cancel_attempts=?",
                    (outcome, workflow_id, attempts),
                )
                log.info(
                    "cancel delivered" if outcome == "done" else "cancel not deliverable",
                    extra={
                        "knot": knot,
                        "rkey": rkey,
                        "workflow": name,
                        "provider": provider,
                        "reason": reason,
                    },
                )
