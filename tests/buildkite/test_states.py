"""Buildkite build and job states mapped to Tangled statuses (tack_provider_buildkite.states)."""

from __future__ import annotations

from typing import Any

import pytest

from tack_common import status as st
from tack_provider_buildkite import states


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


# State mapping


def _job(state: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j", "type": "script", "name": "unit", "state": state, **extra}


@pytest.mark.parametrize(
    ("build", "status", "error", "exit_code"),
    [
        ({"state": "creating"}, st.PENDING, "", None),
        ({"state": "scheduled"}, st.PENDING, "", None),
        ({"state": "running"}, st.RUNNING, "", None),
        ({"state": "failing"}, st.RUNNING, "", None),
        ({"state": "canceling"}, st.RUNNING, "", None),
        ({"state": "passed", "blocked": True}, st.PENDING, "", None),
        ({"state": "failed", "blocked": True}, st.PENDING, "", None),
        ({"state": "blocked"}, st.PENDING, "", None),
        ({"state": "passed", "blocked": True, "started_at": "2026-01-01T00:00:00Z"}, st.RUNNING, "", None),
        (
            {"state": "blocked", "jobs": [_job("passed", started_at="2026-01-01 00:00:00 UTC")]},
            st.RUNNING,
            "",
            None,
        ),
        (
            {"state": "failed", "blocked": True, "jobs": [_job("passed", started_at="x")]},
            st.RUNNING,
            "",
            None,
        ),
        ({"state": "passed", "blocked": False}, st.SUCCESS, "", None),
        ({"state": "canceled"}, st.CANCELLED, "", None),
        (
            {"state": "skipped"},
            st.CANCELLED,
            "build skipped by Buildkite (superseded by a newer build)",
            None,
        ),
        ({"state": "not_run"}, st.CANCELLED, "build not run: every step was skipped", None),
        ({"state": "waiting"}, st.PENDING, "", None),
        ({"state": "waiting_failed"}, st.FAILED, "build failed while waiting on a dependency", None),
        (
            {"state": "failed", "jobs": [_job("passed"), _job("timed_out", exit_status=-1)]},
            st.TIMEOUT,
            "job 'unit' timed out",
            None,
        ),
        (
            {"state": "failed", "jobs": [_job("expired")]},
            st.TIMEOUT,
            "job 'unit' expired before an agent took it",
            None,
        ),
        (
            {
                "state": "failed",
                "jobs": [
                    _job("failed", exit_status=3, soft_failed=True),
                    _job("failed", name="lint", exit_status=2),
                ],
            },
            st.FAILED,
            "job 'lint' exited with status 2",
            2,
        ),
        (
            {"state": "failed", "jobs": [{"type": "waiter", "state": "passed"}]},
            st.FAILED,
            "build failed",
            None,
        ),
    ],
)
def test_build_state_mapping(
    build: dict[str, Any], status: st.Status, error: str, exit_code: int | None
) -> None:
    """Build states map to Tangled statuses per docs/buildkite-api.md §5, with error and exit code."""
    verdict = states.build_verdict(build)
    assert (verdict.status, verdict.error, verdict.exit_code, verdict.needs_jobs) == (
        status,
        error,
        exit_code,
        False,
    )


def test_failed_without_jobs_needs_a_rest_read() -> None:
    """A failed build without jobs (a webhook payload) cannot tell failed from timeout: needs jobs."""
    assert states.build_verdict({"state": "failed"}).needs_jobs


def test_unknown_state_keeps_status() -> None:
    """An unknown future build state yields no status."""
    assert states.build_verdict({"state": "teleporting"}).status is None


def test_cancel_reason_becomes_error() -> None:
    """A canceled build's cancel_reason is carried in the error."""
    assert (
        states.build_verdict({"state": "canceled", "cancel_reason": "by Ada"}).error
        == "build canceled: by Ada"
    )


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2015-05-09T21:05:59.874Z", 1431205559_874000000),
        ("2018-07-01 20:14:38 UTC", 1530476078_000000000),
        ("2020-03-14T20:04:43Z", 1584216283_000000000),
        ("", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_time_accepts_both_formats(text: str | None, ns: int | None) -> None:
    """Buildkite timestamps parse in ISO 8601 and '... UTC' form."""
    assert states.parse_time(text) == ns


def test_job_label_prefers_name_then_label() -> None:
    """Jobs are called by name, block steps by label, else step key or command."""
    assert states.job_label({"name": " Unit ", "label": "x"}) == "Unit"
    assert states.job_label({"type": "manual", "label": "Deploy?"}) == "Deploy?"
    assert states.job_label({"command": "make"}) == "make"
