"""Following every PipelineRun tack made: list, then watch from the list's version (docs/tekton-api.md §2).

The watch's last resourceVersion (from events and bookmarks) is stored after each event is applied,
so a restart, even ``kill -9``, resumes where it stopped; an event applied twice is harmless
because statuses only move forward. A 410 (the version is too old) relists: every listed
PipelineRun is applied, and a run whose PipelineRun is missing from the list was deleted. A watch the
server ends is reopened at once; errors are retried with backoff. While the watch is down the
provider is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from tack_common import backoff, status as st
from tack_provider_kit.store import ProviderStore
from tack_provider_tekton import metrics, states
from tack_provider_tekton.kube import Kube, KubeError, Unreachable
from tack_provider_tekton.run_request import SELECTOR
from tack_provider_tekton.runs import CREATED, RunBook
from tack_provider_tekton.watchwire import LineTooLong, Malformed, object_version


log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""


def _started(obj: Mapping[str, Any]) -> bool:
    status = obj.get("status")
    return isinstance(status, Mapping) and bool(status.get("startTime"))


class Tracker:
    """Keeps every run's status in step with its PipelineRun."""

    def __init__(self, store: ProviderStore, book: RunBook, kube: Kube) -> None:
        self.store = store
        self.book = book
        self.kube = kube
        self.connected = False
        self.failing = False
        """True while the watch keeps failing (the provider is then not ready)."""
        self.synced = asyncio.Event()
        """Set once a list (or a resumed watch) has brought every run up to date."""

    async def observe(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Apply one PipelineRun's state to its run (nothing for PipelineRuns of no run of ours)."""
        name = _name(obj)
        run_id = self.book.run_for(name)
        if run_id is None:
            return
        run = self.store.get_by_id(run_id)
        if run is None or run.terminal:
            return
        if deleted:
            data = self.book.data(run_id) or {}
            if data.get("cancel_requested"):
                self.store.set_status(run_id, st.CANCELLED, "the PipelineRun was deleted after a cancel")
            else:
                self.store.set_status(
                    run_id, st.FAILED, f"the PipelineRun {name} was deleted before it finished"
                )
            return
        verdict = states.verdict(obj)
        if verdict.needs_taskruns:
            try:
                verdict = states.verdict(obj, await self.kube.list_task_runs(name))
            except (KubeError, Unreachable) as exc:
                log.warning(
                    "TaskRuns could not be read; reporting the run failed",
                    extra={"run": name, "error": str(exc)},
                )
        if verdict.status is None:
            return
        if st.is_terminal(verdict.status) and run.status == st.PENDING and _started(obj):
            self.store.set_status(run_id, st.RUNNING)
        if self.store.set_status(run_id, verdict.status, verdict.error, verdict.exit_code):
            log.info(
                "status", extra={"run": str(run.key), "status": st.name(verdict.status), "pipelinerun": name}
            )

    async def relist(self) -> str | None:
        """List every PipelineRun of tack's, apply each, fail runs whose PipelineRun vanished; the list's version."""
        # Only runs whose PipelineRun existed before the list was asked for can be missing from it.
        existed = {
            run.id: run.data.get("name") for run in self.store.active() if run.data.get("phase") == CREATED
        }
        answer = await self.kube.list_pipeline_runs(SELECTOR)
        items = answer.get("items")
        present = set()
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                present.add(_name(item))
                await self.observe(item)
        for name in existed.values():
            if isinstance(name, str) and name not in present:
                await self.observe({"metadata": {"name": name}}, deleted=True)
        return object_version(answer)

    async def run(self) -> None:
        """Watch until cancelled (run supervised)."""
        attempt = 0
        while True:
            try:
                version = self.book.watch_version()
                if version is None:
                    version = await self.relist()
                    self.book.set_watch_version(version)
                    if version is None:
                        raise KubeError("list_pipelineruns", 200, "", "the list has no resourceVersion")
                self.synced.set()
                self.failing = False
                opened = time.monotonic()
                reason = await self._watch(version)
                attempt = 0
                if reason == "ended" and time.monotonic() - opened < 1.0:
                    await asyncio.sleep(1.0)  # a server (or proxy) that ends watches at once is not hammered
            except (KubeError, Unreachable, Malformed, LineTooLong) as exc:
                reason = "error"
                attempt += 1
                self.failing = attempt > 1
                log.warning(
                    "PipelineRun watch failed; retrying", extra={"error": str(exc)[:500], "attempt": attempt}
                )
            metrics.WATCH_RESTARTS.labels(reason).inc()
            if reason == "error":
                await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=MAX_BACKOFF))

    async def _watch(self, version: str) -> str:
        """One watch from ``version``; why it ended (``ended`` or ``gone``)."""
        self.connected = True
        metrics.WATCH_CONNECTED.set(1)
        try:
            async with contextlib.aclosing(self.kube.watch_pipeline_runs(SELECTOR, version)) as stream:
                async for event in stream:
                    if event.kind == "GONE":
                        log.info("watch version expired (410); listing again", extra={"version": version})
                        self.book.set_watch_version(None)
                        return "gone"
                    if event.kind == "ERROR":
                        raise KubeError(
                            "watch_pipelineruns", event.code, "", str(event.obj.get("message", ""))
                        )
                    if event.kind != "BOOKMARK":
                        await self.observe(event.obj, deleted=event.kind == "DELETED")
                    if event.version is not None:
                        version = event.version
                        self.book.set_watch_version(version)
            return "ended"
        finally:
            self.connected = False
            metrics.WATCH_CONNECTED.set(0)
