"""PipelineRun conditions and their reasons → Tangled statuses (docs/tekton-api.md §4)."""

from __future__ import annotations

from typing import Any

import pytest

from tack_common import status as st
from tack_provider_tekton.states import verdict


def run(state: str | None, reason: str = "", message: str = "") -> dict[str, Any]:
    if state is None:
        return {"metadata": {"name": "pr"}}
    return {
        "status": {
            "conditions": [{"type": "Succeeded", "status": state, "reason": reason, "message": message}]
        }
    }


def taskrun(task: str, reason: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    state = (
        "False"
        if reason not in ("Succeeded", "Running")
        else ("True" if reason == "Succeeded" else "Unknown")
    )
    return {
        "metadata": {"name": f"pr-{task}", "labels": {"tekton.dev/pipelineTask": task}},
        "status": {
            "conditions": [{"type": "Succeeded", "status": state, "reason": reason}],
            "steps": steps or [],
        },
    }


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (None, "", st.PENDING),
        ("Unknown", "Started", st.PENDING),
        ("Unknown", "ResolvingPipelineRef", st.PENDING),
        ("Unknown", "PipelineRunPending", st.PENDING),
        ("Unknown", "Running", st.RUNNING),
        ("Unknown", "PipelineRunStopping", st.RUNNING),
        ("Unknown", "CancelledRunningFinally", st.RUNNING),
        ("Unknown", "StoppedRunningFinally", st.RUNNING),
        ("Unknown", "PipelineRunTimeoutRunningFinally", st.RUNNING),
        ("True", "Succeeded", st.SUCCESS),
        ("True", "Completed", st.SUCCESS),
        ("False", "PipelineRunTimeout", st.TIMEOUT),
        ("False", "Cancelled", st.CANCELLED),
        ("False", "CouldntGetPipeline", st.FAILED),
        ("False", "ParameterMissing", st.FAILED),
        ("False", "InvalidWorkspaceBindings", st.FAILED),
        ("False", "PipelineValidationFailed", st.FAILED),
        ("False", "CreateRunFailed", st.FAILED),
        ("False", "PipelineRunCouldntCancel", st.FAILED),
    ],
)
def test_each_reason_maps_to_its_status(state: str | None, reason: str, expected: int) -> None:
    """Every documented Succeeded reason lands on the Tangled status the reference table gives it."""
    assert verdict(run(state, reason)).status == expected


def test_permanent_errors_carry_reason_and_message() -> None:
    """A validation failure reports the reason and Tekton's message as the workflow's error."""
    found = verdict(run("False", "CouldntGetPipeline", 'pipelines.tekton.dev "x" not found'))
    assert found.error == 'CouldntGetPipeline: pipelines.tekton.dev "x" not found'


def test_failed_needs_the_taskruns_to_be_told_apart() -> None:
    """A bare Failed asks for the TaskRuns; with them, the first non-zero step gives the exit code."""
    assert verdict(run("False", "Failed")).needs_taskruns
    steps = [{"name": "a", "terminated": {"exitCode": 0}}, {"name": "b", "terminated": {"exitCode": 3}}]
    found = verdict(run("False", "Failed"), [taskrun("ok", "Succeeded"), taskrun("unit", "Failed", steps)])
    assert (found.status, found.exit_code) == (st.FAILED, 3)
    assert found.error == "task 'unit' step 'b' exited with status 3"


def test_a_task_timeout_makes_the_workflow_time_out() -> None:
    """Failed because a TaskRun hit TaskRunTimeout is a timeout, not a failure."""
    found = verdict(run("False", "Failed"), [taskrun("deploy", "TaskRunTimeout")])
    assert found.status == st.TIMEOUT
    assert "task 'deploy' timed out" in found.error


def test_failed_without_a_failed_step_names_the_task() -> None:
    """A TaskRun that failed without a step exit code (image pull) is reported by its reason."""
    found = verdict(run("False", "Failed"), [taskrun("build", "TaskRunImagePullFailed")])
    assert (found.status, found.exit_code) == (st.FAILED, None)
    assert found.error.startswith("task 'build' failed")


def test_nothing_is_reported_while_a_cancel_is_processed_or_for_unknown_condition_statuses() -> None:
    """`Unknown`/`Cancelled` (a run that may never have started is being cancelled) and a condition status
    Tekton never documented change nothing."""
    assert verdict(run("Unknown", "Cancelled")).status is None
    assert verdict(run("Maybe", "Running")).status is None
