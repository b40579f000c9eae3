"""A run's steps in pipeline order, and its log lines' timestamps (docs/tekton-api.md §6-§7)."""

from __future__ import annotations

from typing import Any

from tack_provider_tekton.steps import StepRef, outcome_line, plan, split_timestamp


def taskrun(task: str, steps: list[dict[str, Any]], state: str = "Unknown") -> dict[str, Any]:
    return {
        "metadata": {"name": f"pr-{task}", "labels": {"tekton.dev/pipelineTask": task}},
        "status": {
            "podName": f"pr-{task}-pod",
            "steps": steps,
            "conditions": [{"type": "Succeeded", "status": state}],
        },
    }


def test_tasks_come_in_declared_order_then_finally_each_with_its_step_containers() -> None:
    """Pipeline order is status.pipelineSpec (tasks, then finally), whatever order the TaskRuns were listed in."""
    pipelinerun = {
        "status": {
            "pipelineSpec": {"tasks": [{"name": "build"}, {"name": "test"}], "finally": [{"name": "notify"}]},
            "skippedTasks": [{"name": "test", "reason": "When Expressions evaluated to false"}],
        }
    }
    found = plan(
        pipelinerun,
        [
            taskrun("notify", [{"name": "post", "container": "step-post", "running": {}}]),
            taskrun(
                "build", [{"name": "make", "container": "step-make", "terminated": {"exitCode": 0}}], "True"
            ),
        ],
    )
    assert found is not None
    assert [(t.task, t.skipped) for t in found] == [
        ("build", None),
        ("test", "When Expressions evaluated to false"),
        ("notify", None),
    ]
    [make] = found[0].steps
    assert (make.title, make.container, make.pod, make.started) == (
        "build/make",
        "step-make",
        "pr-build-pod",
        True,
    )
    assert found[0].finished and not found[2].finished


def test_an_unresolved_pipeline_has_no_plan_yet() -> None:
    """Before Tekton resolved the Pipeline there is nothing to order."""
    assert plan({"status": {}}, []) is None


def test_log_lines_lose_their_timestamp_prefix_and_keep_the_time() -> None:
    """``timestamps=true`` prefixes become the line's time in ns; lines without one keep their text."""
    ns, text = split_timestamp(b"2026-07-01T10:00:00.123456789Z compiling main.c")
    assert (ns, text) == (1782900000123456789, "compiling main.c")
    ns, text = split_timestamp(b"2026-07-01T10:00:00Z ok")
    assert (ns, text) == (1782900000000000000, "ok")
    assert split_timestamp(b"no stamp here\r") == (None, "no stamp here")


def test_how_a_step_ended_is_said_when_it_did_not_pass() -> None:
    """A non-zero exit and a cancel get a closing line; a clean exit gets none."""

    def step(end: dict[str, Any]) -> StepRef:
        return StepRef("t", "s", "step-s", "p", {"terminated": end})

    assert outcome_line(step({"exitCode": 2, "reason": "Error"})) == "exit status 2"
    assert (
        outcome_line(step({"exitCode": 1, "reason": "TaskRunCancelled"}))
        == "exit status 1 (TaskRunCancelled)"
    )
    assert outcome_line(step({"exitCode": 0, "reason": "Completed"})) is None
