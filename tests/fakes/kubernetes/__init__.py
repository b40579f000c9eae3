"""A fake Kubernetes API server with a fake Tekton controller, for the Tekton provider's tests (docs/tekton-api.md §10)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.kubernetes.app import Api
from tests.fakes.kubernetes.controller import Controller, Logs, PipelineScript, StepScript, TaskScript
from tests.fakes.kubernetes.store import JSON, Store


__all__ = ["FakeKubernetes", "PipelineScript", "StepScript", "TaskScript"]

TOKEN = "fake-kubernetes-token"
NAMESPACE = "ci"


class FakeKubernetes:
    """The API server on a loopback port, with its knobs:

    ``tick`` (controller step, seconds), ``bookmark_interval`` (seconds; 0 = none), ``gone_as_http`` (410 as the
    watch request's status instead of an ERROR event), ``prune_pods`` (delete pods when a run ends),
    ``deny`` (set of (verb, resource) access reviews answer False), ``fail`` ({"POST pipelineruns": n}: the
    next n such requests answer 500), ``stall_creates``/``stall_seconds`` (a create lands, its answer stalls),
    ``tekton_installed``.
    """

    def __init__(self, token: str = TOKEN, **knobs: Any) -> None:
        self.token = token
        self.knobs: dict[str, Any] = {"tick": 0.02, **knobs}
        self.store = Store()
        self.logs = Logs()
        self.controller = Controller(self.store, self.logs, self.knobs)
        self.api = Api(self.store, self.controller, self.logs, self.knobs, token)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self.api.middleware])
        app.add_routes(self.api.routes())
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self.controller.stop()
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, path: Path, namespace: str = NAMESPACE) -> Path:
        """Write a kubeconfig that reaches this server with its token."""
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {self.url}\n"
            f"users:\n- name: tack\n  user:\n    token: {self.token}\n"
            f"contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tack\n    namespace: {namespace}\n"
        )
        return path

    def add_pipeline(self, name: str, script: PipelineScript, namespace: str = NAMESPACE) -> None:
        """A Pipeline object and how its runs behave."""
        self.controller.scripts[(namespace, name)] = script
        spec = {"tasks": [{"name": t.name, "taskRef": {"name": t.name}} for t in script.tasks]}
        self.store.put(
            "pipelines",
            namespace,
            {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": name}, "spec": spec},
        )

    def drop_watches(self) -> int:
        """Cut every open watch connection (as a network failure would); how many."""
        tasks = list(self.api.watches)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def compact(self) -> None:
        """Forget the change history: resuming a watch from any version seen so far answers 410."""
        self.store.compact()

    def set_spec_status(self, name: str, value: str, namespace: str = NAMESPACE) -> None:
        """Set a PipelineRun's ``spec.status`` as an operator would (``tkn pipelinerun cancel``)."""
        found = self.store.get("pipelineruns", namespace, name)
        assert found is not None, name
        found["spec"]["status"] = value
        self.store.put("pipelineruns", namespace, found)

    def pipeline_runs(self, namespace: str = NAMESPACE) -> list[JSON]:
        return self.store.items("pipelineruns", namespace)

    def pipeline_run(self, name: str, namespace: str = NAMESPACE) -> JSON | None:
        return self.store.get("pipelineruns", namespace, name)

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        """Wait until ``predicate()`` is true."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
