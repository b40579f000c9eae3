"""The Tekton provider: the kit's Provider, wired to a Kubernetes cluster running Tekton Pipelines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from tack_common import backoff, loglines, status as st
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.provider import Provider, Unavailable
from tack_provider_kit.store import JSONDict, ProviderStore, Run
from tack_provider_tekton import access, run_request, workflow_config
from tack_provider_tekton.config import Settings
from tack_provider_tekton.creator import Creator
from tack_provider_tekton.kube import Kube, KubeError, Unreachable
from tack_provider_tekton.logs import LogView
from tack_provider_tekton.runs import CREATED, QUEUED, RunBook
from tack_provider_tekton.tracker import Tracker


log = logging.getLogger(__name__)

RECHECK_S = 30.0


class TektonProvider(Provider):
    """One PipelineRun per workflow; statuses from a watch; each step container a log step."""

    name = "tekton"
    description = "Tekton: one PipelineRun per workflow of the Pipeline named by tack.tekton.pipeline"
    capabilities = pb.Capabilities(cancel=True, live_logs=True, webhooks=False)

    def __init__(self, store: ProviderStore, settings: Settings) -> None:
        super().__init__(store)
        self.settings = settings
        self.kube = Kube(settings)
        self.book = RunBook(store)
        self.tracker = Tracker(store, self.book, self.kube)
        self._checked = asyncio.Event()
        self.creator = Creator(store, self.book, self.kube, self.tracker, self._checked, self.supervisor)
        self.access_problems: list[str] = []

    # Lifecycle

    async def startup(self) -> None:
        """Load the cluster configuration; check the cluster in the background; resume creations and the watch.

        A configuration that cannot be loaded stops the process (it exits with status 2).
        """
        try:
            await self.kube.open()
        except Exception as exc:  # the loader raises many kinds for a bad file; all mean the same here
            where = "TACK_TEKTON_KUBECONFIG" if self.settings.kubeconfig else "the in-cluster configuration"
            self.stop_process(f"{where} cannot be used: {type(exc).__name__}: {exc}")
            return
        self.supervisor.spawn("tekton_check", self._check_access)
        self.supervisor.spawn("tekton_watch", self._watch_when_checked)
        for run in self.store.active():
            name = run.data.get("name")
            if isinstance(name, str):
                self.book.register(run.id, name)
            if run.data.get("phase") == QUEUED:
                self.creator.launch(run.id)

    async def shutdown(self) -> None:
        """Stop background work; every run's state is durable and resumes at the next start."""
        await self.supervisor.stop("tekton_check")
        await self.supervisor.stop("tekton_watch")
        await self.creator.stop()
        await self.kube.close()

    def problems(self) -> list[str]:
        """Not serving until the cluster grants what the provider needs and the watch is up to date."""
        found = [f"Tekton access: {problem}" for problem in self.access_problems]
        if not self._checked.is_set():
            # The watch starts once access is granted: until then only the check can be wrong.
            return found or ["the cluster's access check has not succeeded yet (retrying)"]
        if self.tracker.failing:
            found.append("the PipelineRun watch keeps failing (retrying)")
        elif not self.tracker.synced.is_set():
            found.append("the PipelineRun watch has not caught up yet")
        return found

    async def _check_access(self) -> None:
        """Check access until it is granted, then every few minutes (RBAC can change)."""
        attempt = 0
        while True:
            try:
                found = await access.problems(self.kube)
            except (KubeError, Unreachable) as exc:
                attempt += 1
                log.warning("cluster unreachable; retrying", extra={"error": str(exc)[:500]})
                await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=RECHECK_S))
                continue
            attempt = 0
            if found != self.access_problems:
                for problem in found:
                    log.error("Tekton access check failed", extra={"problem": problem})
                if not found:
                    log.info("Tekton access checked", extra={"namespace": self.settings.namespace})
            self.access_problems = found
            if found:
                self._checked.clear()
            else:
                self._checked.set()
            await asyncio.sleep(RECHECK_S if found else 10 * RECHECK_S)

    async def _watch_when_checked(self) -> None:
        await self._checked.wait()
        await self.tracker.run()

    # Provider contract

    def prepare(self, request: pb.SpawnRequest, workflow: pb.Workflow) -> JSONDict:
        """Validate ``tack.tekton`` and prepare the PipelineRun (nothing is sent yet)."""
        config = workflow_config.parse_json(workflow.config_json)
        plan = run_request.plan(
            request, workflow, config, self.settings.namespace, self.settings.untrusted_pipelines
        )
        return {
            "name": plan.name,
            "run_hash": plan.run_hash,
            "body": plan.body,
            "cancel": config.cancel,
            "phase": QUEUED,
        }

    async def start(self, run: Run) -> None:
        """Create the PipelineRun in the background."""
        self.book.register(run.id, str(run.data["name"]))
        self.creator.launch(run.id)

    async def cancel(self, run: Run) -> st.Status:
        """Set the PipelineRun's ``spec.status`` (or make sure none is created); ``cancelled`` follows by watch."""
        data = self.book.update(run.id, cancel_requested=True)
        if data.get("phase") != CREATED:
            self.store.set_status(run.id, st.CANCELLED, "cancelled before the PipelineRun was created")
        else:
            try:
                await self.creator.cancel(run.id)
            except (KubeError, Unreachable) as exc:
                raise Unavailable(f"Kubernetes did not take the cancel: {exc}") from None
        current = self.store.get_by_id(run.id)
        return st.CANCELLED if current is None else current.status

    async def log(self, run: Run) -> AsyncIterator[Sequence[pb.LogLine]]:
        """Nothing until the PipelineRun exists; then each step container, live until the run ends."""
        while True:
            data = self.book.data(run.id) or {}
            if data.get("phase") == CREATED:
                break
            current = self.store.get_by_id(run.id)
            if current is None or current.terminal:
                reason = (
                    current.error if current is not None and current.error else "no PipelineRun was created"
                )
                yield loglines.synthetic_log("tekton", reason)
                return
            await self.book.created.wait(1.0)
        view = LogView(
            self.kube, str(data["name"]), self.settings.log_poll_interval, lambda: self._run_over(run.id)
        )
        async for chunk in view.stream():
            yield chunk

    def _run_over(self, run_id: int) -> bool:
        current = self.store.get_by_id(run_id)
        return current is None or current.terminal
