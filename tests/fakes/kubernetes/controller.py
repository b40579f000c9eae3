"""The fake Tekton controller: moves each PipelineRun through its life as Tekton does (docs/tekton-api.md §4-§7).

A Pipeline's behaviour is scripted per Pipeline name (:class:`PipelineScript`): its tasks and their
steps (output, duration, exit code), a task that times out, a step that runs until cancelled, a pipeline
timeout, a run held pending. Every change goes through the store, so watches see it; step output is
appended to the step container's log as it is "written".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.kubernetes.store import JSON, Store


@dataclass
class StepScript:
    """One step container: ``output`` lines spread over ``seconds``, then ``exit_code``."""

    name: str
    output: list[str] = field(default_factory=lambda: ["ok"])
    seconds: float = 0.05
    exit_code: int = 0
    hang: bool = False
    """Run (printing a line now and then) until the run is cancelled or times out."""


@dataclass
class TaskScript:
    """One pipeline task."""

    name: str
    steps: list[StepScript]
    timeout: bool = False
    """The TaskRun times out during its first step (``TaskRunTimeout``)."""


@dataclass
class PipelineScript:
    """How PipelineRuns of one Pipeline behave."""

    tasks: list[TaskScript]
    finally_tasks: list[TaskScript] = field(default_factory=list)
    queue_seconds: float = 0.05
    pipeline_timeout: bool = False
    """The PipelineRun times out during its first step (``PipelineRunTimeout``)."""
    held: bool = False
    """Never starts (stays ``Started`` without a start time) until cancelled."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cancelled(Exception):
    """The run was cancelled (or timed out) while a step ran."""


class Logs:
    """Container logs: (unix ns, text) lines per (namespace, pod, container), and whether each ended."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
        self.ended: set[tuple[str, str, str]] = set()
        self.changed = asyncio.Condition()

    async def write(self, key: tuple[str, str, str], text: str) -> None:
        self.lines.setdefault(key, []).append((time.time_ns(), text))
        async with self.changed:
            self.changed.notify_all()

    async def end(self, key: tuple[str, str, str]) -> None:
        self.ended.add(key)
        async with self.changed:
            self.changed.notify_all()


class Controller:
    """Drives PipelineRuns; one task per run."""

    def __init__(self, store: Store, logs: Logs, knobs: dict[str, Any]) -> None:
        self.store = store
        self.logs = logs
        self.knobs = knobs
        self.scripts: dict[tuple[str, str], PipelineScript] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def start(self, namespace: str, name: str) -> None:
        """Begin driving a newly created PipelineRun."""
        key = (namespace, name)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._drive(namespace, name))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # helpers

    def _pr(self, ns: str, name: str) -> JSON:
        found = self.store.get("pipelineruns", ns, name)
        if found is None:
            raise Cancelled("deleted")
        return found

    def _spec_status(self, ns: str, name: str) -> str:
        return str(self._pr(ns, name).get("spec", {}).get("status") or "")

    def _set_status(self, ns: str, name: str, **fields: Any) -> None:
        pr = self._pr(ns, name)
        status = pr.setdefault("status", {})
        for key, value in fields.items():
            if key == "condition":
                status["conditions"] = [{"type": "Succeeded", "lastTransitionTime": now_rfc3339(), **value}]
            else:
                status[key] = value
        self.store.put("pipelineruns", ns, pr)

    async def _tick(self) -> None:
        await asyncio.sleep(float(self.knobs.get("tick", 0.02)))

    # the run

    async def _drive(self, ns: str, name: str) -> None:
        with contextlib.suppress(Cancelled):
            await self._run(ns, name)

    async def _run(self, ns: str, name: str) -> None:
        await self._tick()
        pr = self._pr(ns, name)
        pipeline = pr["spec"].get("pipelineRef", {}).get("name", "")
        self._set_status(ns, name, condition={"status": "Unknown", "reason": "Started", "message": ""})
        script = self.scripts.get((ns, pipeline))
        if script is None or self.store.get("pipelines", ns, pipeline) is None:
            self._set_status(
                ns,
                name,
                condition={
                    "status": "False",
                    "reason": "CouldntGetPipeline",
                    "message": f'Error retrieving pipeline for pipelinerun {ns}/{name}: pipelines.tekton.dev "{pipeline}" not found',
                },
                completionTime=now_rfc3339(),
            )
            return
        deadline = time.monotonic() + script.queue_seconds
        while (
            script.held or time.monotonic() < deadline or self._spec_status(ns, name) == "PipelineRunPending"
        ):
            if self._spec_status(ns, name) in ("Cancelled", "CancelledRunFinally", "StoppedRunFinally"):
                self._finish(ns, name, "False", "Cancelled", f'PipelineRun "{name}" was cancelled')
                return
            await self._tick()
        spec = {
            "tasks": [{"name": t.name, "taskRef": {"name": t.name}} for t in script.tasks],
            "finally": [{"name": t.name, "taskRef": {"name": t.name}} for t in script.finally_tasks],
        }
        self._set_status(
            ns,
            name,
            startTime=now_rfc3339(),
            pipelineSpec=spec,
            childReferences=[],
            condition={"status": "Unknown", "reason": "Running", "message": "Tasks Completed: 0"},
        )
        outcome = "ok"
        failed = cancelled = 0
        for task in script.tasks:
            mode = self._spec_status(ns, name)
            if mode in ("Cancelled", "CancelledRunFinally", "StoppedRunFinally") or outcome != "ok":
                break
            result = await self._task(ns, name, task, script, "tasks")
            if result == "failed":
                failed += 1
                outcome = "failed"
            elif result in ("cancelled", "pipeline_timeout"):
                cancelled += 1
                outcome = result
            elif result == "task_timeout":
                failed += 1
                outcome = "failed"
        mode = self._spec_status(ns, name)
        if outcome == "pipeline_timeout":
            self._finish(
                ns,
                name,
                "False",
                "PipelineRunTimeout",
                f'PipelineRun "{name}" failed to finish within "1h0m0s"',
            )
            return
        if mode != "Cancelled":
            for task in script.finally_tasks:
                if mode in ("CancelledRunFinally", "StoppedRunFinally"):
                    reason = (
                        "CancelledRunningFinally"
                        if mode == "CancelledRunFinally"
                        else "StoppedRunningFinally"
                    )
                    self._set_status(
                        ns, name, condition={"status": "Unknown", "reason": reason, "message": ""}
                    )
                result = await self._task(ns, name, task, script, "finally", in_finally=True)
                if result == "failed":
                    failed += 1
        message = (
            f"Tasks Completed: {len(script.tasks)} (Failed: {failed}, Cancelled {cancelled}), Skipped: 0"
        )
        if failed:
            self._finish(ns, name, "False", "Failed", message)
        elif mode in ("Cancelled", "CancelledRunFinally", "StoppedRunFinally") or cancelled:
            self._finish(ns, name, "False", "Cancelled", f'PipelineRun "{name}" was cancelled')
        else:
            self._finish(ns, name, "True", "Succeeded", message)

    def _finish(self, ns: str, name: str, state: str, reason: str, message: str) -> None:
        self._set_status(
            ns,
            name,
            condition={"status": state, "reason": reason, "message": message},
            completionTime=now_rfc3339(),
        )
        if self.knobs.get("prune_pods"):
            for pod in self.store.items("pods", ns, f"tekton.dev/pipelineRun={name}"):
                self.store.delete("pods", ns, pod["metadata"]["name"])

    async def _task(
        self,
        ns: str,
        pr_name: str,
        task: TaskScript,
        script: PipelineScript,
        member: str,
        in_finally: bool = False,
    ) -> str:
        """Run one task; ``ok``, ``failed``, ``task_timeout``, ``cancelled`` or ``pipeline_timeout``."""
        tr_name = f"{pr_name}-{task.name}"
        pod_name = f"{tr_name}-pod"
        labels = {
            **(self._pr(ns, pr_name)["metadata"].get("labels") or {}),
            "tekton.dev/pipelineRun": pr_name,
            "tekton.dev/pipelineTask": task.name,
            "tekton.dev/memberOf": member,
        }
        steps: list[JSON] = [
            {"name": s.name, "container": f"step-{s.name}", "waiting": {"reason": "PodInitializing"}}
            for s in task.steps
        ]
        taskrun: JSON = {
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {"name": tr_name, "labels": labels},
            "spec": {"taskRef": {"name": task.name}},
            "status": {
                "podName": pod_name,
                "startTime": now_rfc3339(),
                "steps": steps,
                "conditions": [
                    {"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": ""}
                ],
            },
        }
        self.store.put("taskruns", ns, taskrun)
        self.store.put(
            "pods",
            ns,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "labels": {**labels, "tekton.dev/taskRun": tr_name}},
                "spec": {"containers": [{"name": f"step-{s.name}"} for s in task.steps]},
                "status": {"phase": "Running"},
            },
        )
        pr = self._pr(ns, pr_name)
        children = pr["status"].get("childReferences") or []
        children.append(
            {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": tr_name, "pipelineTaskName": task.name}
        )
        self._set_status(ns, pr_name, childReferences=children)
        result = "ok"
        for index, step in enumerate(task.steps):
            key = (ns, pod_name, f"step-{step.name}")
            steps[index] = {
                "name": step.name,
                "container": f"step-{step.name}",
                "running": {"startedAt": now_rfc3339()},
            }
            self._put_taskrun(ns, tr_name, steps=steps)
            try:
                await self._step(ns, pr_name, key, step, task, script, index, in_finally)
                code, reason = step.exit_code, "Completed" if step.exit_code == 0 else "Error"
            except Cancelled as why:
                code, reason = 1, str(why)
            await self.logs.end(key)
            steps[index] = {
                "name": step.name,
                "container": f"step-{step.name}",
                "terminated": {"exitCode": code, "reason": reason, "finishedAt": now_rfc3339()},
            }
            if reason == "TaskRunTimeout":
                result = "task_timeout"
            elif reason in ("TaskRunCancelled", "PipelineRunTimeout"):
                result = "pipeline_timeout" if reason == "PipelineRunTimeout" else "cancelled"
            elif code != 0:
                result = "failed"
            if result != "ok":
                for rest in range(index + 1, len(task.steps)):
                    later = task.steps[rest]
                    steps[rest] = {
                        "name": later.name,
                        "container": f"step-{later.name}",
                        "terminated": {"exitCode": 1, "reason": "Skipped" if result == "failed" else reason},
                    }
                    await self.logs.end((ns, pod_name, f"step-{later.name}"))
                break
        condition = {
            "ok": ("True", "Succeeded", "All Steps have completed executing"),
            "failed": (
                "False",
                "Failed",
                f'"step-{task.steps[index].name}" exited with code {task.steps[index].exit_code}',
            ),
            "task_timeout": (
                "False",
                "TaskRunTimeout",
                f'TaskRun "{tr_name}" failed to finish within "1m0s"',
            ),
            "cancelled": (
                "False",
                "TaskRunCancelled",
                "TaskRun cancelled as the PipelineRun it belongs to has been cancelled.",
            ),
            "pipeline_timeout": (
                "False",
                "TaskRunCancelled",
                "TaskRun cancelled as the PipelineRun it belongs to has timed out.",
            ),
        }[result]
        self._put_taskrun(ns, tr_name, steps=steps, condition=condition)
        if result in ("cancelled", "pipeline_timeout"):
            self.store.delete("pods", ns, pod_name)  # Tekton deletes the pods of cancelled TaskRuns
        return result

    def _put_taskrun(
        self, ns: str, name: str, steps: list[JSON], condition: tuple[str, str, str] | None = None
    ) -> None:
        taskrun = self.store.get("taskruns", ns, name)
        if taskrun is None:
            return
        taskrun["status"]["steps"] = [dict(s) for s in steps]
        if condition is not None:
            state, reason, message = condition
            taskrun["status"]["conditions"] = [
                {"type": "Succeeded", "status": state, "reason": reason, "message": message}
            ]
            taskrun["status"]["completionTime"] = now_rfc3339()
        self.store.put("taskruns", ns, taskrun)

    async def _step(
        self,
        ns: str,
        pr_name: str,
        key: tuple[str, str, str],
        step: StepScript,
        task: TaskScript,
        script: PipelineScript,
        index: int,
        in_finally: bool,
    ) -> None:
        """Write the step's output over its duration; Cancelled(reason) when stopped."""
        lines = list(step.output)
        gap = step.seconds / max(len(lines), 1)
        written = 0
        while True:
            mode = self._spec_status(ns, pr_name)
            if not in_finally and mode in ("Cancelled", "CancelledRunFinally"):
                raise Cancelled("TaskRunCancelled")
            if in_finally and mode == "Cancelled":
                raise Cancelled("TaskRunCancelled")
            if written < len(lines):
                await self.logs.write(key, lines[written])
                written += 1
                await asyncio.sleep(gap)
                continue
            if index == 0 and task.timeout:
                raise Cancelled("TaskRunTimeout")
            if index == 0 and script.pipeline_timeout and not in_finally:
                raise Cancelled("PipelineRunTimeout")
            if not step.hang:
                return
            await self.logs.write(key, "still working")
            await asyncio.sleep(0.1)
