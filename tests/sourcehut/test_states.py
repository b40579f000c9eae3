"""How builds.sr.ht job statuses map to Tangled's six statuses (docs/sourcehut-api.md §3)."""

from __future__ import annotations

import pytest

from tack_common import status as st
from tack_provider_sourcehut.states import is_final, verdict


@pytest.mark.parametrize(
    ("job_status", "expected"),
    [
        ("PENDING", st.PENDING),
        ("QUEUED", st.PENDING),
        ("RUNNING", st.RUNNING),
        ("SUCCESS", st.SUCCESS),
        ("FAILED", st.FAILED),
        ("TIMEOUT", st.TIMEOUT),
        ("CANCELLED", st.CANCELLED),
    ],
)
def test_every_job_status_maps_to_a_tangled_status(job_status: str, expected: st.Status) -> None:
    """Each JobStatus has one Tangled status; the terminal ones are final."""
    assert verdict({"status": job_status}).status == expected
    assert is_final({"status": job_status}) == st.is_terminal(expected)


def test_a_failed_job_names_its_first_failed_task() -> None:
    """The error says which task failed; without a failed task it points at the setup log."""
    job = {
        "status": "FAILED",
        "tasks": [
            {"name": "build", "status": "SUCCESS"},
            {"name": "test", "status": "FAILED"},
            {"name": "deploy", "status": "SKIPPED"},
        ],
    }
    assert verdict(job).error == "task 'test' failed"
    assert "setup log" in verdict({"status": "FAILED", "tasks": []}).error
    assert verdict({"status": "TIMEOUT"}).error == "the builds.sr.ht job timed out"


def test_an_unknown_status_reports_nothing() -> None:
    """A status this version does not know publishes nothing (and is not final)."""
    assert verdict({"status": "EXPLODED"}).status is None
    assert not is_final({"status": "EXPLODED"})
