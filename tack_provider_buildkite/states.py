"""Buildkite build and job states, and what they mean for Tangled (docs/buildkite-api.md §5), free of I/O.

The build's state decides the workflow's status; the event name of a webhook
never does. A build waiting on a block step reads as ``pending`` until a job
has run and as ``running`` after (a running workflow that reaches a block
step stays running), a ``failed`` build with a ``timed_out``/``expired`` job
is a ``timeout``, ``waiting_failed`` is ``failed``, and
``canceled``/``skipped``/``not_run`` builds are ``cancelled``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tack_common import status as st


BUILD_TERMINAL = frozenset({"passed", "failed", "canceled", "skipped", "not_run", "waiting_failed"})
BUILD_PENDING = frozenset({"creating", "scheduled", "waiting", "blocked"})
BUILD_RUNNING = frozenset({"running", "failing", "canceling"})

JOB_TERMINAL = frozenset(
    {
        "passed",
        "failed",
        "canceled",
        "timed_out",
        "skipped",
        "broken",
        "expired",
        "not_run",
        "finished",
        "waiting_failed",
        "blocked_failed",
        "unblocked_failed",
    }
)
JOB_RUNNING = frozenset({"running", "canceling", "timing_out"})
JOB_TIMEOUT = frozenset({"timed_out", "expired"})


@dataclass(frozen=True)
class Verdict:
    """What a build's state means for its workflow.

    ``status`` None: an unknown (future) state, keep the current status.
    ``needs_jobs``: the verdict is a guess because the jobs were not in the
    payload (webhooks never carry them); confirm with a REST read.
    """

    status: st.Status | None
    error: str = ""
    exit_code: int | None = None
    needs_jobs: bool = False


def is_blocked(build: Mapping[str, Any]) -> bool:
    """Whether the build waits on a block step (REST says ``blocked: true``; filters say ``blocked``)."""
    return bool(build.get("blocked")) or build.get("state") == "blocked"


def build_is_final(build: Mapping[str, Any]) -> bool:
    """Whether the build has finished and is not waiting on a block step."""
    return build.get("state") in BUILD_TERMINAL and not is_blocked(build)


def job_label(job: Mapping[str, Any]) -> str:
    """How a job is called: its name, else its label (block steps), step key or command."""
    for field in ("name", "label", "step_key", "command"):
        value = job.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return f"{job.get('type') or 'job'} {str(job.get('id', ''))[:8]}".strip()


def _jobs(build: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    jobs = build.get("jobs")
    return [j for j in jobs if isinstance(j, Mapping)] if isinstance(jobs, list) else []


def _failed_verdict(build: Mapping[str, Any]) -> Verdict:
    if not isinstance(build.get("jobs"), list):
        return Verdict(st.FAILED, "build failed", needs_jobs=True)
    jobs = _jobs(build)
    for job in jobs:
        if job.get("state") in JOB_TIMEOUT:
            verb = "timed out" if job.get("state") == "timed_out" else "expired before an agent took it"
            return Verdict(st.TIMEOUT, f"job {job_label(job)!r} {verb}")
    for job in jobs:
        if job.get("state") == "failed" and not job.get("soft_failed"):
            code = job.get("exit_status")
            exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
            detail = f"exited with status {exit_code}" if exit_code is not None else "failed"
            return Verdict(st.FAILED, f"job {job_label(job)!r} {detail}", exit_code)
    for job in jobs:
        if job.get("state") in ("broken", "blocked_failed", "unblocked_failed", "waiting_failed"):
            return Verdict(st.FAILED, f"job {job_label(job)!r} could not run ({job.get('state')})")
    return Verdict(st.FAILED, "build failed")


def has_started(build: Mapping[str, Any]) -> bool:
    """Whether any of the build's work has begun (the build, or one of its jobs, has a start time)."""
    return bool(build.get("started_at")) or any(job.get("started_at") for job in _jobs(build))


def build_verdict(build: Mapping[str, Any]) -> Verdict:
    """The workflow status a build's state stands for."""
    state = build.get("state")
    if is_blocked(build) and state in ("passed", "failed", "blocked", None):
        # Waiting on a person: not started yet if no job ran; a build already under way stays running.
        return Verdict(st.RUNNING if has_started(build) else st.PENDING)
    if state in BUILD_PENDING:
        return Verdict(st.PENDING)
    if state in BUILD_RUNNING:
        return Verdict(st.RUNNING)
    if state == "passed":
        return Verdict(st.SUCCESS)
    if state == "failed":
        return _failed_verdict(build)
    if state == "waiting_failed":
        return Verdict(st.FAILED, "build failed while waiting on a dependency")
    if state == "canceled":
        reason = build.get("cancel_reason")
        return Verdict(
            st.CANCELLED, f"build canceled: {reason}" if isinstance(reason, str) and reason else ""
        )
    if state == "skipped":
        return Verdict(st.CANCELLED, "build skipped by Buildkite (superseded by a newer build)")
    if state == "not_run":
        return Verdict(st.CANCELLED, "build not run: every step was skipped")
    return Verdict(None)


def parse_time(value: object) -> int | None:
    """Unix nanoseconds of a Buildkite timestamp (ISO 8601, or ``2018-07-01 20:14:38 UTC``); None if absent."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4].replace(" ", "T") + "+00:00"
    elif text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
