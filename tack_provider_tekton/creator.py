"""Creating each run's PipelineRun exactly once, in the background (docs/tekton-api.md §3).

The name is deterministic, so a create whose outcome is unknown (a timeout, a reset) is simply sent
again, even when the watch already reported the run finished (the run needs its PipelineRun for its log,
and for a cancel that came meanwhile): 409 AlreadyExists then means an earlier one landed, and the existing PipelineRun is adopted when
its ``tack.tangled.org/run`` label is this run's. A cancel that came while the create was in flight is
applied to the PipelineRun as soon as it exists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from tack_common import status as st
from tack_common.supervise import Supervisor
from tack_provider_kit.runtasks import RunTasks
from tack_provider_kit.store import ProviderStore
from tack_provider_tekton import metrics
from tack_provider_tekton.kube import Kube, KubeError, Unreachable
from tack_provider_tekton.run_request import RUN_LABEL
from tack_provider_tekton.runs import CREATED, REJECTED, RunBook
from tack_provider_tekton.tracker import Tracker


log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


class Creator:
    """One supervised task per run that still needs its PipelineRun."""

    def __init__(
        self,
        store: ProviderStore,
        book: RunBook,
        kube: Kube,
        tracker: Tracker,
        ready: asyncio.Event,
        supervisor: Supervisor,
    ) -> None:
        self.store = store
        self.book = book
        self.kube = kube
        self.tracker = tracker
        self.ready = ready
        self.supervisor = supervisor
        self._tasks = RunTasks(supervisor, "tekton_create")

    def launch(self, run_id: int) -> None:
        """Start creating the run's PipelineRun unless that is under way."""
        self._tasks.launch_until_done(run_id, self.ready, self._step, max_backoff=MAX_BACKOFF)

    async def stop(self) -> None:
        """Cancel every creation (their state is durable; the next start resumes them)."""
        await self._tasks.stop()

    def _fail(self, run_id: int, outcome: str, reason: str) -> None:
        metrics.PIPELINE_RUNS.labels(outcome).inc()
        data = self.book.update(run_id, phase=REJECTED)
        self.store.set_status(run_id, st.FAILED, reason, data=data)
        log.warning("PipelineRun not created", extra={"run_id": run_id, "reason": reason[:500]})

    async def _adopt(self, run_id: int, obj: Mapping[str, Any], how: str) -> None:
        metrics.PIPELINE_RUNS.labels(how).inc()
        data = self.book.update(run_id, phase=CREATED)
        log.info(f"PipelineRun {how}", extra={"run_id": run_id, "pipelinerun": data["name"]})
        await self.tracker.observe(obj)
        if data.get("cancel_requested"):
            await self.cancel(run_id)

    async def cancel(self, run_id: int) -> None:
        """Set the PipelineRun's ``spec.status`` to the run's cancel mode; a PipelineRun that is gone is cancelled.

        Raises KubeError/Unreachable when the API server could not be asked.
        """
        data = self.book.data(run_id) or {}
        try:
            await self.kube.patch_pipeline_run_status(str(data["name"]), str(data.get("cancel", "Cancelled")))
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.store.set_status(run_id, st.CANCELLED, "the PipelineRun no longer exists")

    async def _step(self, run_id: int) -> bool:
        """Create the run's PipelineRun unless that is settled; True when nothing more is to be done."""
        run = self.store.get_by_id(run_id)
        data = self.book.data(run_id)
        if run is None or data is None or data.get("phase") in (CREATED, REJECTED):
            return True
        if run.terminal and not data.get("sent"):
            return True  # cancelled before anything was sent
        return await self._attempt(run_id, data)

    async def _attempt(self, run_id: int, data: Mapping[str, Any]) -> bool:
        """One try at creating the run's PipelineRun; True when nothing more is to be done."""
        name = str(data["name"])
        self.book.update(run_id, sent=True)
        try:
            await self._adopt(run_id, await self.kube.create_pipeline_run(data["body"]), "created")
            return True
        except Unreachable as exc:
            log.warning("create failed; retrying", extra={"run_id": run_id, "error": str(exc)})
            return False
        except KubeError as exc:
            if exc.status == 409:
                return await self._claim(run_id, name, str(data["run_hash"]))
            if exc.status in (408, 429) or exc.status >= 500:
                log.warning("create failed; retrying", extra={"run_id": run_id, "error": str(exc)})
                return False
            self._fail(
                run_id,
                "rejected",
                f"Kubernetes refused the PipelineRun {name}: {exc.message or exc.reason} (HTTP {exc.status})",
            )
            return True

    async def _claim(self, run_id: int, name: str, run_hash: str) -> bool:
        try:
            existing = await self.kube.get_pipeline_run(name)
        except (KubeError, Unreachable) as exc:
            log.warning(
                "reading the existing PipelineRun failed; retrying",
                extra={"run_id": run_id, "error": str(exc)},
            )
            return False
        if _labels(existing).get(RUN_LABEL) != run_hash:
            self._fail(
                run_id,
                "foreign",
                f"a PipelineRun named {name} exists that tack did not create for this workflow; tack leaves it alone",
            )
            return True
        await self._adopt(run_id, existing, "adopted")
        return True
