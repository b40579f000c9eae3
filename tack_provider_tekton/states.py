"""What a PipelineRun's ``Succeeded`` condition means for Tangled (docs/tekton-api.md §4), free of I/O.

``Failed`` is read further from the child TaskRuns: a TaskRun that timed out makes the workflow
``timeout``, and the first failed step's exit code becomes the status's ``exit_code``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tack_common import status as st


PENDING_REASONS = frozenset({"Started", "ResolvingPipelineRef", "PipelineRunPending", ""})
RUNNING_REASONS = frozenset(
    {
        "Running",
        "PipelineRunStopping",
        "CancelledRunningFinally",
        "StoppedRunningFinally",
        "PipelineRunTimeoutRunningFinally",
    }
)
SUCCESS_REASONS = frozenset({"Succeeded", "Completed"})
TIMEOUT_REASON = "PipelineRunTimeout"
CANCELLED_REASON = "Cancelled"
FAILED_REASON = "Failed"
TASK_TIMEOUT = "TaskRunTimeout"
MAX_ERROR = 1000


@dataclass(frozen=True)
class Verdict:
    """What a PipelineRun's state means for its workflow.

    ``status`` None: nothing to report (an unknown condition status). ``needs_taskruns``:
    the run failed and its TaskRuns must be read to tell a task timeout and find the exit code.
    """

    status: st.Status | None
    error: str = ""
    exit_code: int | None = None
    needs_taskruns: bool = False


def succeeded_condition(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object's ``Succeeded`` condition, if it has one."""
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == "Succeeded":
            return condition
    return None


def _text(condition: Mapping[str, Any], key: str) -> str:
    value = condition.get(key)
    return value if isinstance(value, str) else ""


def _error(reason: str, message: str) -> str:
    text = f"{reason}: {message}" if message else reason
    return text[:MAX_ERROR]


def _failed_step(taskrun: Mapping[str, Any]) -> tuple[str, int] | None:
    """(step name, exit code) of the TaskRun's first step that exited non-zero."""
    status = taskrun.get("status")
    steps = status.get("steps") if isinstance(status, Mapping) else None
    for step in steps if isinstance(steps, list) else []:
        terminated = step.get("terminated") if isinstance(step, Mapping) else None
        code = terminated.get("exitCode") if isinstance(terminated, Mapping) else None
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            return str(step.get("name", "")), code
    return None


def task_name(taskrun: Mapping[str, Any]) -> str:
    """The pipeline task a TaskRun runs (its label), else the TaskRun's name."""
    metadata = taskrun.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if isinstance(labels, Mapping) and isinstance(labels.get("tekton.dev/pipelineTask"), str):
        return str(labels["tekton.dev/pipelineTask"])
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(name or "task")


def _failed(message: str, taskruns: Sequence[Mapping[str, Any]]) -> Verdict:
    for taskrun in taskruns:
        condition = succeeded_condition(taskrun) or {}
        if _text(condition, "reason") == TASK_TIMEOUT:
            return Verdict(
                st.TIMEOUT, _error(f"task {task_name(taskrun)!r} timed out", _text(condition, "message"))
            )
    for taskrun in taskruns:
        condition = succeeded_condition(taskrun) or {}
        if condition.get("status") != "False":
            continue
        step = _failed_step(taskrun)
        if step is not None:
            name, code = step
            return Verdict(
                st.FAILED, f"task {task_name(taskrun)!r} step {name!r} exited with status {code}", code
            )
        return Verdict(st.FAILED, _error(f"task {task_name(taskrun)!r} failed", _text(condition, "message")))
    return Verdict(st.FAILED, _error(FAILED_REASON, message))


def verdict(pipelinerun: Mapping[str, Any], taskruns: Sequence[Mapping[str, Any]] | None = None) -> Verdict:
    """The workflow status a PipelineRun stands for (``taskruns``: its TaskRuns, when read)."""
    condition = succeeded_condition(pipelinerun)
    if condition is None:
        return Verdict(st.PENDING)
    state, reason, message = condition.get("status"), _text(condition, "reason"), _text(condition, "message")
    if state == "Unknown":
        if reason == CANCELLED_REASON:
            return Verdict(None)  # being cancelled: it may never have started, and its end is coming
        if reason in PENDING_REASONS:
            return Verdict(st.PENDING)
        return Verdict(st.RUNNING)
    if state == "True":
        return Verdict(st.SUCCESS)
    if state != "False":
        return Verdict(None)
    if reason == TIMEOUT_REASON:
        return Verdict(st.TIMEOUT, _error(reason, message))
    if reason == CANCELLED_REASON:
        return Verdict(st.CANCELLED, _error(reason, message))
    if reason == FAILED_REASON:
        if taskruns is None:
            return Verdict(st.FAILED, _error(reason, message), needs_taskruns=True)
        return _failed(message, taskruns)
    return Verdict(st.FAILED, _error(reason or "Failed", message))
