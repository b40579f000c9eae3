"""The sourcehut provider's supervised tasks (access check, job poller, submissions) failed on purpose
(TACK_FAULT_INJECTION): each failure is logged and counted, gRPC health says NOT_SERVING while the task is down,
and the task's work gets done after its restart. The provider is a real process against the fake builds.sr.ht."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_common import status as st
from tack_provider_kit.contract.checks import collect, key, spawn_request, terminal_for
from tests.fakes.sourcehut import DEFAULT_TOKEN, FakeSourcehut
from tests.support.faults import crash, eventually, readiness
from tests.support.provider_rig import ProviderRig, histories, serving
from tests.support.sourcehut_harness import SourcehutProcess, fake_sourcehut, manifest, sourcehut_workflow


pytestmark = pytest.mark.e2e

# A submit answer stalls far longer than the crash takes to arrive, on a loaded machine too.
ENV = {"TACK_FAULT_INJECTION": "1", "TACK_SOURCEHUT_SUBMIT_TIMEOUT": "15"}


class Rig(ProviderRig[FakeSourcehut, SourcehutProcess]):
    pass


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = await fake_sourcehut()
    async with serving(Rig, fake, SourcehutProcess(tmp_path, fake, ENV)) as made:
        yield made


async def _has_job(rig: Rig) -> bool:
    """Whether the provider has read a job (it does once the job is its run's)."""
    return any(r.op == "job" for r in rig.fake.requests)


async def test_the_poller_fails_while_a_job_runs_to_its_end_and_the_end_is_still_reported_once(
    rig: Rig,
) -> None:
    """The job poller fails (and keeps failing for 3 s) while the job runs and succeeds unseen: NOT_SERVING
    meanwhile; the restarted poller reads the job and reports it, each status once, one job."""
    request = spawn_request([sourcehut_workflow("w.yml", manifest("build", image="held"))])
    k = key(request, "w.yml")
    await rig.stub.Spawn(request, timeout=10)
    await rig.fake.wait_for(lambda: len(rig.fake.jobs) == 1)
    await eventually(lambda: _has_job(rig), 30, "the job attached to its run")
    before = await rig.restarts("sourcehut_poll")
    assert await crash(rig.base, "sourcehut_poll", hold=3.0) == ["sourcehut_poll"]
    assert not await rig.serving()
    status, body = await readiness(rig.base)
    assert status == 503, body
    job = rig.fake.jobs[0]
    rig.fake.run_job(job.id)
    assert job.status == "SUCCESS"

    updates = await collect(rig.stub, 0, terminal_for([k]), timeout=30)
    assert histories(updates) == {"w.yml": [st.PENDING, st.RUNNING, st.SUCCESS]}
    await eventually(rig.serving, 20, "SERVING again")
    assert await rig.restarts("sourcehut_poll") >= before + 2
    assert rig.logged("sourcehut_poll")
    assert len(rig.fake.jobs) == 1


async def test_a_submission_that_fails_while_its_answer_is_lost_makes_exactly_one_job(rig: Rig) -> None:
    """The submit task fails while its submit landed but the answer has not come: after the restart the
    job is found by its run tag, not submitted again, and the workflow succeeds."""
    rig.fake.stall_next("submit", seconds=60.0)
    request = spawn_request([sourcehut_workflow("c.yml", manifest("build"))])
    k = key(request, "c.yml")
    await rig.stub.Spawn(request, timeout=10)
    await rig.fake.wait_for(lambda: len(rig.fake.jobs) == 1)
    before = await rig.restarts("sourcehut_submit")
    hit = await crash(rig.base, "sourcehut_submit", hold=2.0)
    assert len(hit) == 1 and hit[0].startswith("sourcehut_submit")
    assert not await rig.serving()

    updates = await collect(rig.stub, 0, terminal_for([k]), timeout=60)
    assert histories(updates)["c.yml"][-1] == st.SUCCESS
    await eventually(rig.serving, 20, "SERVING again")
    assert await rig.restarts("sourcehut_submit") >= before + 1
    assert rig.logged("sourcehut_submit")
    assert len(rig.fake.jobs) == 1 and len(rig.fake.submissions) == 1


async def test_the_access_check_fails_and_its_restart_checks_again(rig: Rig) -> None:
    """The access check fails while the token is revoked: after the restart it checks at once, finds the
    token refused and keeps the provider NOT_SERVING, saying what."""
    before = await rig.restarts("sourcehut_check")
    assert await crash(rig.base, "sourcehut_check", hold=2.0) == ["sourcehut_check"]
    assert not await rig.serving()
    rig.fake.revoke(DEFAULT_TOKEN)

    async def complains() -> bool:
        return "builds.sr.ht refused TACK_SOURCEHUT_TOKEN (HTTP 403" in rig.proc.output()

    await eventually(complains, 30, "the restarted check names the refused token")
    assert await rig.not_serving()
    assert await rig.restarts("sourcehut_check") >= before + 2
    assert rig.logged("sourcehut_check")
