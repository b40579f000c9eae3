"""Turning what Buildkite says about builds into run statuses, and polling when it says nothing.

Statuses only move forward (the kit's store refuses regressions), so late,
duplicated or reordered observations are harmless. A terminal status is only
published from a REST read of the build with its jobs: a webhook saying
"finished" makes the build due for such a read instead. A terminal status is
final: a build Buildkite runs again after it finished (a job retried, a late
unblock) is noted once (log and ``tack_buildkite_builds_total{outcome="reopened"}``)
and not reported; run the pipeline again from Tangled for a new status.

Polling is budgeted: a build is read when a webhook asks for confirmation,
after a cancel, or when nothing was heard about it for ``poll_interval``
seconds, an interval that doubles (up to 8x) while polls find the build
unchanged (a build waiting for an agent or on a block step for hours costs
little); any change resets it. Reads are background requests, paced by the
rate limiter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from tack_common import status as st
from tack_provider_buildkite import metrics
from tack_provider_buildkite.api import ApiError, BuildkiteClient, Unreachable
from tack_provider_buildkite.runs import BuildRef, RunBook
from tack_provider_buildkite.states import build_is_final, build_verdict
from tack_provider_kit.readloop import read_loop
from tack_provider_kit.store import ProviderStore


log = logging.getLogger(__name__)

CONCURRENT_READS = 4
MAX_QUIET_DOUBLINGS = 3
CANCELABLE = frozenset({"scheduled", "running", "failing", "blocked", "creating"})


class Tracker:
    """Observes builds and keeps every unfinished run's status converging."""

    def __init__(
        self,
        store: ProviderStore,
        book: RunBook,
        client: BuildkiteClient,
        poll_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.book = book
        self.client = client
        self.poll_interval = poll_interval
        self.clock = clock
        self._heard: dict[int, float] = {}
        self._due: dict[int, str] = {}
        self._wake = asyncio.Event()
        self._cancel_sent: dict[int, float] = {}
        self._state: dict[int, tuple[object, bool]] = {}
        self._quiet: dict[int, int] = {}
        self._reopened: set[int] = set()

    def observe(self, run_id: int, build: Mapping[str, Any], *, rest: bool) -> None:
        """Apply a build's state to its run (``rest``: read from the API, not a webhook payload)."""
        run = self.store.get_by_id(run_id)
        if run is None or run.terminal:
            if run is not None and not build_is_final(build):
                self._note_reopened(run_id, str(run.key), build)
            self._forget(run_id)
            return
        self._heard[run_id] = self.clock()
        state = (build.get("state"), bool(build.get("blocked")))
        if self._state.get(run_id) != state:
            self._state[run_id] = state
            self._quiet[run_id] = 0
        verdict = build_verdict(build)
        if verdict.status is None:
            log.warning("unknown build state", extra={"run": str(run.key), "state": str(build.get("state"))})
            return
        if st.is_terminal(verdict.status):
            if not rest or verdict.needs_jobs:
                self.due(run_id, "confirm")
                return
            if run.status == st.PENDING and build.get("started_at"):
                self.store.set_status(run_id, st.RUNNING)
        if self.store.set_status(run_id, verdict.status, verdict.error, verdict.exit_code):
            log.info(
                "status",
                extra={
                    "run": str(run.key),
                    "status": st.name(verdict.status),
                    "build_state": str(build.get("state")),
                },
            )
        if st.is_terminal(verdict.status):
            self._forget(run_id)

    def _note_reopened(self, run_id: int, key: str, build: Mapping[str, Any]) -> None:
        if run_id in self._reopened:
            return
        if len(self._reopened) > 10_000:
            self._reopened.clear()
        self._reopened.add(run_id)
        metrics.BUILDS.labels("reopened").inc()
        log.info(
            "a finished build runs again in Buildkite; the workflow keeps its final status",
            extra={"run": key, "build_state": str(build.get("state"))},
        )

    def _forget(self, run_id: int) -> None:
        for memory in (self._heard, self._cancel_sent, self._state, self._quiet):
            memory.pop(run_id, None)

    def due(self, run_id: int, reason: str) -> None:
        """Read the run's build from the API soon."""
        self._due.setdefault(run_id, reason)
        self._wake.set()

    async def cancel(self, run_id: int, ref: BuildRef) -> None:
        """Ask Buildkite to cancel the build; the outcome arrives by webhook or poll.

        A 422 means the build already finished, which is success. Raises
        ApiError/Unreachable when Buildkite could not be asked.
        """
        self._cancel_sent[run_id] = self.clock()
        reply = await self.client.cancel_build(ref.org, ref.pipeline, ref.number)
        if reply.status == 200 and isinstance(reply.json(), dict):
            self.observe(run_id, reply.json(), rest=True)
        elif reply.status == 404:
            self.store.set_status(run_id, st.CANCELLED, "the Buildkite build no longer exists")
        elif reply.status != 422:
            raise ApiError("cancel_build", reply.status, reply.message())
        self.due(run_id, "cancel")

    async def try_cancel(self, run_id: int, ref: BuildRef) -> None:
        """:meth:`cancel`, leaving a failure to the poll (which repeats the cancel)."""
        try:
            await self.cancel(run_id, ref)
        except (ApiError, Unreachable) as exc:
            log.warning("cancel failed; will retry", extra={"build": ref.id, "error": str(exc)})

    async def read(self, run_id: int, reason: str) -> dict[str, Any] | None:
        """Read the run's build (with jobs) and apply it; None when it could not be read."""
        ref = self.book.build_of(run_id)
        if ref is None:
            return None
        metrics.POLLS.labels(reason).inc()
        try:
            build = await self.client.get_build(
                ref.org, ref.pipeline, ref.number, background=reason not in ("confirm", "cancel")
            )
        except ApiError as exc:
            if exc.status == 404:
                self.store.set_status(
                    run_id,
                    st.FAILED,
                    f"Buildkite build {ref.pipeline}#{ref.number} is gone (deleted, or the token lost access)",
                )
            else:
                log.warning("build read failed", extra={"build": ref.id, "error": str(exc)})
            return None
        except Unreachable as exc:
            log.warning("build read failed", extra={"build": ref.id, "error": str(exc)})
            return None
        before = self._state.get(run_id)
        self.observe(run_id, build, rest=True)
        if reason == "poll" and self._state.get(run_id) == before:
            self._quiet[run_id] = self._quiet.get(run_id, 0) + 1
        data = self.book.data(run_id) or {}
        if (
            data.get("cancel")
            and build.get("state") in CANCELABLE
            and self.clock() - self._cancel_sent.get(run_id, -float("inf")) >= self.poll_interval
        ):
            await self.try_cancel(run_id, ref)
        return build

    def _pick(self) -> dict[int, str]:
        now = self.clock()
        picked, self._due = self._due, {}
        for run in self.store.active():
            if run.id in picked or run.data.get("build") is None:
                continue
            interval = self.poll_interval * 2 ** min(self._quiet.get(run.id, 0), MAX_QUIET_DOUBLINGS)
            if now - self._heard.get(run.id, -float("inf")) >= interval:
                picked[run.id] = "poll"
        for run_id in picked:
            self._heard[run_id] = now
        return picked

    def _later(self, run_id: int, reason: str) -> None:
        self._due.setdefault(run_id, reason)

    async def run(self) -> None:
        """The reconciliation loop (runs until cancelled); reads run concurrently, a few at a time.

        A read that fails unexpectedly (the database refused a write) ends the
        loop with its error: run it supervised; builds are read again after the restart.
        """
        await read_loop(
            self._pick,
            self.read,
            self._later,
            self._wake,
            concurrency=CONCURRENT_READS,
            tick=min(self.poll_interval, 1.0),
        )
