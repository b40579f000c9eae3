"""A run's log as Tangled steps, free of I/O (docs/tekton-api.md §6-§7): which step containers exist, in
pipeline order, where each one's log is, and what a timestamped log line says.

Pipeline order is the resolved Pipeline in the PipelineRun's status (``tasks`` then ``finally``, as
declared), each task's steps in their order. A task's steps are known once its TaskRun reports them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tack_provider_tekton.states import succeeded_condition, task_name


_TIMESTAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


@dataclass(frozen=True)
class StepRef:
    """One step container of one task."""

    task: str
    step: str
    container: str
    pod: str
    state: Mapping[str, Any]
    """The step's container state: ``{"running": …}``, ``{"terminated": …}`` or ``{"waiting": …}`` or empty."""

    @property
    def title(self) -> str:
        """How Tangled shows the step."""
        return f"{self.task}/{self.step}"

    @property
    def terminated(self) -> Mapping[str, Any] | None:
        """The container's end, once it ended."""
        value = self.state.get("terminated")
        return value if isinstance(value, Mapping) else None

    @property
    def started(self) -> bool:
        """Whether the container has started (running or ended)."""
        return "running" in self.state or self.terminated is not None


@dataclass(frozen=True)
class TaskEntry:
    """One pipeline task: its steps once its TaskRun reports them, or why it never ran."""

    task: str
    taskrun: Mapping[str, Any] | None
    steps: tuple[StepRef, ...]
    skipped: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the task's TaskRun has ended."""
        condition = succeeded_condition(self.taskrun or {}) or {}
        return condition.get("status") in ("True", "False")


def _declared_tasks(pipelinerun: Mapping[str, Any]) -> list[str] | None:
    status = pipelinerun.get("status")
    spec = status.get("pipelineSpec") if isinstance(status, Mapping) else None
    if not isinstance(spec, Mapping):
        return None
    names = []
    for section in ("tasks", "finally"):
        tasks = spec.get(section)
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, Mapping) and isinstance(task.get("name"), str):
                names.append(task["name"])
    return names


def _skipped(pipelinerun: Mapping[str, Any]) -> dict[str, str]:
    status = pipelinerun.get("status")
    skipped = status.get("skippedTasks") if isinstance(status, Mapping) else None
    out = {}
    for item in skipped if isinstance(skipped, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            out[item["name"]] = str(item.get("reason") or "skipped")
    return out


def _steps(task: str, taskrun: Mapping[str, Any]) -> tuple[StepRef, ...]:
    status = taskrun.get("status")
    if not isinstance(status, Mapping):
        return ()
    pod = status.get("podName")
    steps = status.get("steps")
    out = []
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, Mapping) or not isinstance(step.get("name"), str):
            continue
        container = step.get("container")
        state = {k: step[k] for k in ("running", "terminated", "waiting") if isinstance(step.get(k), Mapping)}
        out.append(
            StepRef(
                task=task,
                step=step["name"],
                container=container if isinstance(container, str) and container else f"step-{step['name']}",
                pod=pod if isinstance(pod, str) else "",
                state=state,
            )
        )
    return tuple(out)


def plan(pipelinerun: Mapping[str, Any], taskruns: Sequence[Mapping[str, Any]]) -> list[TaskEntry] | None:
    """The run's tasks in pipeline order; None while the Pipeline is not resolved yet."""
    declared = _declared_tasks(pipelinerun)
    if declared is None:
        return None
    by_task = {task_name(tr): tr for tr in taskruns}
    skipped = _skipped(pipelinerun)
    return [
        TaskEntry(
            task=name,
            taskrun=by_task.get(name),
            steps=_steps(name, by_task[name]) if name in by_task else (),
            skipped=skipped.get(name),
        )
        for name in declared
    ]


def split_timestamp(line: bytes) -> tuple[int | None, str]:
    """(Unix ns, text) of a log line written with ``timestamps=true``; no time when it has no prefix."""
    found = _TIMESTAMP.match(line)
    if found is None:
        return None, line.decode("utf-8", "replace").rstrip("\r")
    base = dt.datetime.fromisoformat(found.group(1).decode() + found.group(3).decode().replace("Z", "+00:00"))
    ns = int(base.timestamp()) * 1_000_000_000 + int((found.group(2) or b"0").decode().ljust(9, "0"))
    return ns, line[found.end() :].decode("utf-8", "replace").rstrip("\r")


def outcome_line(step: StepRef) -> str | None:
    """How a step that did not succeed ended (``exit status 2``, ``TaskRunCancelled``), None when it passed."""
    end = step.terminated
    if end is None:
        return None
    code = end.get("exitCode")
    reason = end.get("reason")
    if isinstance(code, int) and code != 0:
        return f"exit status {code}" + (
            f" ({reason})" if isinstance(reason, str) and reason not in ("", "Error") else ""
        )
    if isinstance(reason, str) and reason not in ("", "Completed"):
        return reason
    return None
