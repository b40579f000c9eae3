"""What the launcher prints about a new pipeline: its trigger and its workflows, one line."""

from __future__ import annotations

from typing import Any

import pytest

from tack_sandbox.watch import describe_pipeline


WORKFLOWS = [{"name": "build.yml"}, {"name": "lint.yml"}]
SHA = "a656932d3bc0ffee" + "0" * 24


@pytest.mark.parametrize(
    ("meta", "line"),
    [
        (
            {"kind": "push", "push": {"ref": "refs/heads/main", "newSha": SHA}},
            "push to refs/heads/main at a656932d3b: build.yml, lint.yml",
        ),
        (
            {
                "kind": "pull_request",
                "pullRequest": {
                    "action": "opened",
                    "sourceBranch": "sandbox/pr-1",
                    "targetBranch": "main",
                    "sourceSha": SHA,
                },
            },
            "pull request opened sandbox/pr-1 → main at a656932d3b: build.yml, lint.yml",
        ),
        ({"kind": "manual", "manual": {"sha": SHA}}, "manual run at a656932d3b: build.yml, lint.yml"),
    ],
)
def test_each_trigger_kind_is_described(meta: dict[str, Any], line: str) -> None:
    """Push, pull request and manual pipeline records each get their own wording, with the short commit."""
    assert describe_pipeline({"triggerMetadata": meta, "workflows": WORKFLOWS}) == line


def test_a_record_without_workflows_or_trigger_still_prints() -> None:
    """An unexpected record does not stop the launcher's output."""
    assert describe_pipeline({}) == "?: no workflows"
