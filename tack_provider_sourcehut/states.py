"""What a builds.sr.ht job's status means for Tangled (docs/sourcehut-api.md §3), free of I/O.

``PENDING`` and ``QUEUED`` are Tangled's ``pending``, ``RUNNING`` is ``running``, and the four ends map
to the four terminal statuses of the same names. A failed job's error names its first failed task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tack_common import status as st


JOB_STATUSES: dict[str, st.Status] = {
    "PENDING": st.PENDING,
    "QUEUED": st.PENDING,
    "RUNNING": st.RUNNING,
    "SUCCESS": st.SUCCESS,
    "FAILED": st.FAILED,
    "TIMEOUT": st.TIMEOUT,
    "CANCELLED": st.CANCELLED,
}
TASK_DONE = frozenset({"SUCCESS", "FAILED", "SKIPPED"})
ERRORS = {
    "TIMEOUT": "the builds.sr.ht job timed out",
    "CANCELLED": "the builds.sr.ht job was cancelled",
}


@dataclass(frozen=True)
class Verdict:
    """What a job's state means for its workflow (``status`` None: an unknown job status)."""

    status: st.Status | None
    error: str = ""


def tasks_of(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The job's tasks that have a name, in order."""
    tasks = job.get("tasks")
    if not isinstance(tasks, list):
        return []
    return [t for t in tasks if isinstance(t, Mapping) and isinstance(t.get("name"), str)]


def is_final(job: Mapping[str, Any]) -> bool:
    """Whether the job has ended."""
    return st.is_terminal(JOB_STATUSES.get(str(job.get("status")), st.PENDING))


def verdict(job: Mapping[str, Any]) -> Verdict:
    """The workflow status a job stands for."""
    name = str(job.get("status"))
    status = JOB_STATUSES.get(name)
    if status is None:
        return Verdict(None)
    if name == "FAILED":
        failed = [t["name"] for t in tasks_of(job) if t.get("status") == "FAILED"]
        if failed:
            return Verdict(status, f"task {failed[0]!r} failed")
        return Verdict(status, "the builds.sr.ht job failed before its tasks ran (see the setup log)")
    return Verdict(status, ERRORS.get(name, ""))
