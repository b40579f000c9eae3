"""Creating each run's build exactly once, in the background.

Creating a build is not idempotent, so the intent is stored before the POST
(phase ``sending``). When the outcome of a create is unknown (timeout, reset,
5xx), and before any create after a restart, the pipeline's builds are first
searched by the run's meta-data and an existing build is adopted. A search
for a create whose outcome is unknown waits until ``create_timeout`` after it
was sent, the longest the request could still be in flight. A create is sent
again without searching only when the previous one surely did nothing (a 429,
or no connection at all).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from tack_common import status as st
from tack_common.supervise import Supervisor
from tack_provider_buildkite import metrics
from tack_provider_buildkite.api import ApiError, BuildkiteClient, OutcomeUnknown, Unreachable
from tack_provider_buildkite.build_request import meta_data_for
from tack_provider_buildkite.runs import QUEUED, REJECTED, SENDING, BuildRef, RunBook
from tack_provider_buildkite.tracker import Tracker
from tack_provider_kit.runtasks import RunTasks, until_done
from tack_provider_kit.store import ProviderStore, RunKey


log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
SETTLE_MARGIN = 1.0


class Creator:
    """One background task per run that still needs its build."""

    def __init__(
        self,
        store: ProviderStore,
        book: RunBook,
        client: BuildkiteClient,
        tracker: Tracker,
        ready: asyncio.Event,
        create_timeout: float,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.supervisor = supervisor or Supervisor()
        self.store = store
        self.book = book
        self.client = client
        self.tracker = tracker
        self.ready = ready
        self.create_timeout = create_timeout
        self._tasks = RunTasks(self.supervisor, "buildkite_create")
        self._must_search: set[int] = set()

    def launch(self, run_id: int, *, search_first: bool) -> None:
        """Start creating the run's build unless that is already under way."""
        # Supervised: a creation that fails unexpectedly is restarted; its stored phase says what to do next.
        task = self._tasks.launch(run_id, functools.partial(self._create, run_id, search_first))
        if task is not None:
            task.add_done_callback(lambda _: self._must_search.discard(run_id))

    async def stop(self) -> None:
        """Cancel every creation task (their state is durable; the next start resumes them)."""
        await self._tasks.stop()

    def _key(self, run_id: int) -> RunKey | None:
        run = self.store.get_by_id(run_id)
        return None if run is None else run.key

    def _reject(self, run_id: int, where: str, reason: str) -> None:
        metrics.BUILDS.labels("rejected").inc()
        data = self.book.update(run_id, phase=REJECTED)
        self.store.set_status(
            run_id, st.FAILED, f"Buildkite refused to create the build on {where}: {reason}", data=data
        )
        log.warning("create rejected", extra={"run": str(self._key(run_id)), "reason": reason})

    def _cancel_unsent(self, run_id: int) -> None:
        self.store.set_status(run_id, st.CANCELLED, "cancelled before the Buildkite build was created")

    async def _adopt(self, run_id: int, build: dict[str, Any], org: str, pipeline: str, how: str) -> bool:
        ref = BuildRef.from_build(build, org, pipeline)
        if ref is None:
            return False
        outcome = self.book.attach(run_id, ref)
        if outcome == "other":
            metrics.DUPLICATE_BUILDS.inc()
            log.warning(
                "run already has another build", extra={"run": str(self._key(run_id)), "build": ref.id}
            )
            return True
        if outcome == "attached":
            metrics.BUILDS.labels(how).inc()
            log.info(
                how,
                extra={
                    "run": str(self._key(run_id)),
                    "build": ref.id,
                    "number": ref.number,
                    "url": ref.web_url,
                },
            )
        self.tracker.observe(run_id, build, rest=True)
        data = self.book.data(run_id) or {}
        if data.get("cancel"):
            await self.tracker.try_cancel(run_id, ref)
        return True

    async def _search(self, run_id: int, data: dict[str, Any]) -> list[dict[str, Any]]:
        sent_ns = data.get("sent_ns")
        if data.get("phase") == SENDING and isinstance(sent_ns, int):
            settle = sent_ns / 1e9 + self.create_timeout + SETTLE_MARGIN - time.time()
            if settle > 0:
                log.info(
                    "waiting before looking for the build",
                    extra={"run_id": run_id, "seconds": round(settle, 1)},
                )
                await asyncio.sleep(settle)
        key = self._key(run_id)
        assert key is not None
        found = await self.client.find_builds(data["org"], data["pipeline"], meta_data_for(key))
        return sorted(found, key=lambda b: b["number"] if isinstance(b.get("number"), int) else 0)

    async def _create(self, run_id: int, search_first: bool) -> None:
        if search_first:
            self._must_search.add(run_id)
        await until_done(self.ready, functools.partial(self._step, run_id), max_backoff=MAX_BACKOFF)

    async def _step(self, run_id: int) -> bool:
        """Give the run its build unless it has one or needs none; True when nothing more is to be done."""
        run = self.store.get_by_id(run_id)
        data = self.book.data(run_id)
        if run is None or data is None or run.terminal or data.get("build") or data.get("phase") == REJECTED:
            return True
        return await self._attempt(run_id, data)

    async def _attempt(self, run_id: int, data: dict[str, Any]) -> bool:
        """One try at giving the run a build; True when nothing more is to be done."""
        org, pipeline = data["org"], data["pipeline"]
        if run_id in self._must_search or data.get("phase") == SENDING:
            try:
                found = await self._search(run_id, data)
            except ApiError as exc:
                if exc.definitive:
                    self._reject(run_id, f"{org}/{pipeline}", exc.message)
                    return True
                log.warning("looking for the build failed", extra={"run_id": run_id, "error": str(exc)})
                return False
            except Unreachable as exc:
                log.warning("looking for the build failed", extra={"run_id": run_id, "error": str(exc)})
                return False
            if found and await self._adopt(run_id, found[0], org, pipeline, "adopted"):
                if len(found) > 1:
                    metrics.DUPLICATE_BUILDS.inc(len(found) - 1)
                return True
            self._must_search.discard(run_id)
            run = self.store.get_by_id(run_id)
            current = self.book.data(run_id)
            if run is None or current is None or run.terminal or current.get("build"):
                return True  # a webhook adopted the build (or the run ended) meanwhile
            data = self.book.update(run_id, phase=QUEUED)
        if data.get("cancel"):
            self._cancel_unsent(run_id)
            return True
        self.book.update(run_id, phase=SENDING, sent_ns=time.time_ns())
        try:
            reply = await self.client.create_build(org, pipeline, data["body"])
        except OutcomeUnknown as exc:
            log.warning(
                "create outcome unknown; will look for the build", extra={"run_id": run_id, "error": str(exc)}
            )
            return False
        except (Unreachable, ApiError) as exc:
            # No connection at all, or 429s throughout: Buildkite surely created nothing.
            log.warning("create failed; retrying", extra={"run_id": run_id, "error": str(exc)})
            self.book.update(run_id, phase=QUEUED)
            return False
        if reply.status in (200, 201):
            if await self._adopt(run_id, reply.json(), org, pipeline, "created"):
                return True
            log.warning("create answer has no build; will look for it", extra={"run_id": run_id})
            return False
        if 400 <= reply.status < 500 and reply.status != 408:
            self._reject(run_id, f"{org}/{pipeline}", f"{reply.message()} (HTTP {reply.status})")
            return True
        self.book.update(run_id, phase=QUEUED)
        return False
