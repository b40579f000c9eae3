"""The Tekton provider's supervised tasks (access check, PipelineRun watch, PipelineRun creations) failed on
purpose (TACK_FAULT_INJECTION): each failure is logged and counted, gRPC health says NOT_SERVING while the task
is down, and the task's work gets done after its restart. The provider is a real process against the fake
Kubernetes API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_common import status as st
from tack_provider_kit.contract.checks import collect, key, spawn_request, terminal_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.support.faults import crash, eventually, readiness
from tests.support.provider_rig import ProviderRig, histories, serving
from tests.support.tekton_harness import TektonProcess, fake_kubernetes, tekton_workflow


pytestmark = pytest.mark.e2e

# A create answer stalls far longer than the crash takes to arrive, on a loaded machine too.
ENV = {"TACK_FAULT_INJECTION": "1", "TACK_TEKTON_REQUEST_TIMEOUT": "15"}


class Rig(ProviderRig[FakeKubernetes, TektonProcess]):
    def runs_of(self, workflow: str) -> list[str]:
        """The names of the PipelineRuns made for ``workflow``."""
        return [
            pr["metadata"]["name"]
            for pr in self.fake.pipeline_runs()
            if pr["metadata"]["annotations"]["tack.tangled.org/workflow"] == workflow
        ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = await fake_kubernetes(bookmark_interval=0.5)
    async with serving(Rig, fake, TektonProcess(tmp_path, fake, ENV)) as made:
        yield made


async def test_the_watch_fails_while_a_run_finishes_and_its_end_is_still_reported_once(rig: Rig) -> None:
    """The PipelineRun watch fails (and keeps failing for 3 s) while the run succeeds unseen: NOT_SERVING
    meanwhile; the restarted watch resumes and reports success, each status once, one PipelineRun."""
    request = spawn_request([tekton_workflow("w.yml", "slow")])
    k = key(request, "w.yml")
    await rig.stub.Spawn(request, timeout=10)
    await collect(rig.stub, 0, lambda got: any(u.status == st.RUNNING for u in got), timeout=30)
    before = await rig.restarts("tekton_watch")
    assert await crash(rig.base, "tekton_watch", hold=3.0) == ["tekton_watch"]
    assert not await rig.serving()
    status, body = await readiness(rig.base)
    assert status == 503, body
    [name] = rig.runs_of("w.yml")
    await rig.fake.wait_for(lambda: "completionTime" in (rig.fake.pipeline_run(name) or {}).get("status", {}))

    updates = await collect(rig.stub, 0, terminal_for([k]), timeout=30)
    assert histories(updates) == {"w.yml": [st.PENDING, st.RUNNING, st.SUCCESS]}
    await eventually(rig.serving, 20, "SERVING again")
    assert await rig.restarts("tekton_watch") >= before + 2
    assert rig.logged("tekton_watch")
    assert rig.runs_of("w.yml") == [name]


async def test_a_creation_that_fails_while_its_answer_is_lost_makes_exactly_one_pipelinerun(rig: Rig) -> None:
    """The create task fails while its create landed but the answer has not come: after the restart the
    PipelineRun is adopted, not made again, and the workflow succeeds."""
    rig.fake.knobs.update(stall_creates=1, stall_seconds=30)
    request = spawn_request([tekton_workflow("c.yml", "build")])
    k = key(request, "c.yml")
    await rig.stub.Spawn(request, timeout=10)
    await rig.fake.wait_for(lambda: len(rig.runs_of("c.yml")) == 1)
    before = await rig.restarts("tekton_create")
    hit = await crash(rig.base, "tekton_create", hold=2.0)
    assert len(hit) == 1 and hit[0].startswith("tekton_create")
    assert not await rig.serving()

    updates = await collect(rig.stub, 0, terminal_for([k]), timeout=40)
    assert histories(updates) == {"c.yml": [st.PENDING, st.RUNNING, st.SUCCESS]}
    await eventually(rig.serving, 20, "SERVING again")
    assert await rig.restarts("tekton_create") >= before + 1
    assert rig.logged("tekton_create")
    assert len(rig.runs_of("c.yml")) == 1
    posts = [path for method, path in rig.fake.api.requests if method == "POST" and "pipelineruns" in path]
    assert len(posts) == 2  # the lost answer, then the retry that met 409 and adopted
    await asyncio.sleep(1.0)
    assert len(rig.runs_of("c.yml")) == 1


async def test_the_access_check_fails_and_its_restart_checks_again(rig: Rig) -> None:
    """The access check fails while a permission is withdrawn: after the restart it checks at once, finds the
    missing verb and keeps the provider NOT_SERVING, saying what."""
    before = await rig.restarts("tekton_check")
    assert await crash(rig.base, "tekton_check", hold=2.0) == ["tekton_check"]
    assert not await rig.serving()
    rig.fake.knobs["deny"] = {("patch", "pipelineruns")}

    async def complains() -> bool:
        return "may not patch pipelineruns.tekton.dev in namespace ci" in rig.proc.output()

    await eventually(complains, 30, "the restarted check names the missing verb")
    assert await rig.not_serving()
    assert await rig.restarts("tekton_check") >= before + 2
    assert rig.logged("tekton_check")
