"""The control plane's current-Tangled tasks, failed on purpose (TACK_FAULT_INJECTION): the push and pull
workers, missed-push recovery, repository verification, reconciliation with the PDSes and cancel delivery.
Each failure is logged and counted, /readyz is 503 naming the task while it is down, the task is restarted,
and the work handed to it while it was down gets done. Real processes: the control plane and the stub, a
current-protocol knot serving real git repositories, a fake PLC and PDS. Together with test_supervision.py
every task kind the control plane runs is covered (checked below)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tack_common.pb import provider_pb2 as pb
from tack_sandbox.pulls import PULL_NSID, format_patch, pull_uri
from tests.control.test_supervision import CONTROL_TASKS, logged_failure
from tests.support.current import COLLABORATOR, CREATED_AT, World, make_world, until, workflow
from tests.support.faults import crash, eventually, kinds, metric, readiness, report
from tests.support.pulls import pull_of
from tests.support.stack import OWNER


pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]

HOLD = 5.0
ON_PUSH = 'when:\n  - event: ["push"]\n    branch: ["main"]\n'
ON_PULL = 'when:\n  - event: ["pull_request"]\n    branch: ["main"]\n'
LONG = {"queue_seconds": 0, "steps": [{"name": "work", "command": "sleep", "output": ["w"], "duration": 120}]}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """The owner's repository with push and pull request workflows on main, its refs scanned once."""
    w = await make_world(
        tmp_path_factory.mktemp("supervision-current"), control_env={"TACK_FAULT_INJECTION": "1"}
    )
    try:
        await w.knot.push(
            w.repo_did,
            {
                ".tangled/workflows/push.yml": workflow(ON_PUSH),
                ".tangled/workflows/pr.yml": workflow(ON_PULL),
            },
        )
        await until(lambda: [s for _, s, _ in w.pushes()] == ["done"], "the first push is decided")
        await until(lambda: baseline(w), "recovery recorded the repository's refs", timeout=30)
        yield w
    finally:
        await w.stop()


def baseline(world: World) -> bool:
    """Whether missed-push recovery scanned the repository once (a later difference is a missed push)."""
    with world.db() as conn:
        row = conn.execute(
            "SELECT 1 FROM repo_refs WHERE repo_did=? AND ref=''", (world.repo_did,)
        ).fetchone()
    return row is not None


def pipeline_of(world: World, sha: str, kind: str) -> str | None:
    """The rkey of the pipeline of ``kind`` at commit ``sha``, once it exists."""
    return next((rkey for rkey, k, c, _, _ in world.pipelines() if (k, c) == (kind, sha)), None)


Check = Callable[[], Awaitable[None]]


async def succeeds(world: World, sha: str, kind: str, name: str) -> None:
    """The pipeline of ``kind`` at ``sha`` is made and its workflow ``name`` succeeds."""
    await until(lambda: pipeline_of(world, sha, kind) is not None, f"a {kind} pipeline at {sha}", timeout=30)
    rkey = pipeline_of(world, sha, kind)
    assert rkey is not None
    await until(lambda: world.status(rkey, name) == "success", f"{name} succeeds", timeout=30)


async def push_work(world: World) -> Check:
    """A push to main while the push worker is down: its pipeline runs afterwards."""
    pushed = await world.knot.push(world.repo_did, {"src/a.c": f"int a = {time.monotonic_ns()};\n"})
    return lambda: succeeds(world, pushed.new_sha, "push", "push.yml")


async def pull_work(world: World) -> Check:
    """The owner opens a branch pull request while the pull worker is down: it runs afterwards."""
    branch = f"feature-{time.monotonic_ns()}"
    pushed = await world.knot.push(world.repo_did, {"src/f.c": "int f;\n"}, branch=branch, base="main")
    assert world.knot.git is not None
    blob = await format_patch(world.knot.git.repo_path(world.repo_did), "main", branch)
    world.pds.upload(OWNER, blob)
    rkey = f"3mr7m2f6g{time.monotonic_ns() % 10**4:04d}"
    record = pull_of(world.repo_did, [blob], source_branch=branch)
    world.pds.put(OWNER, PULL_NSID, rkey, record)
    world.stack.jetstream.commit(OWNER, PULL_NSID, rkey, "create", record)

    async def check() -> None:
        await succeeds(world, pushed.new_sha, "pull_request", "pr.yml")
        with world.db() as conn:
            [(trigger,)] = conn.execute(
                "SELECT record FROM pipelines WHERE kind='pull_request' AND commit_sha=?", (pushed.new_sha,)
            ).fetchall()
        assert json.loads(trigger)["triggerMetadata"]["pullRequest"]["pull"] == pull_uri(OWNER, rkey)

    return check


async def recovery_work(world: World) -> Check:
    """A push the knot never announces, made while recovery is down: found by the scan after the restart."""
    pushed = await world.knot.push(
        world.repo_did, {"src/b.c": f"int b = {time.monotonic_ns()};\n"}, emit=False
    )
    return lambda: succeeds(world, pushed.new_sha, "push", "push.yml")


async def verifier_work(world: World) -> Check:
    """A repository registered while verification is down: verified afterwards."""
    registering = asyncio.create_task(world.register_repo(f"late{time.monotonic_ns()}"))

    async def check() -> None:
        await registering

    return check


async def reconciler_work(world: World) -> Check:
    """A collaborator record that only the owner's PDS holds (Jetstream missed it), written while
    reconciliation is down: known after the restart, whose first pass lists the PDS."""
    subject = world.account().did
    rkey = f"3mcollab{time.monotonic_ns() % 10**5:05d}"
    world.pds.put(
        OWNER, COLLABORATOR, rkey, {"subject": subject, "repo": world.repo_did, "createdAt": CREATED_AT}
    )
    return lambda: until(
        lambda: subject in world.collaborators(), "the PDS's collaborator is known", timeout=30
    )


def stub_status(world: World, rkey: str, name: str) -> int | None:
    with sqlite3.connect(world.stack.stub.db_path) as conn:
        row = conn.execute(
            "SELECT status FROM runs WHERE pipeline_rkey=? AND workflow=?", (rkey, name)
        ).fetchone()
    return None if row is None else int(row[0])


async def running_long_workflow(world: World) -> str:
    """A pushed workflow the stub runs for two minutes, once it runs; its pipeline."""
    pushed = await world.knot.push(
        world.repo_did,
        {
            ".tangled/workflows/push.yml": workflow(ON_PUSH, LONG),
            "src/c.c": f"int c = {time.monotonic_ns()};\n",
        },
    )
    await until(
        lambda: pipeline_of(world, pushed.new_sha, "push") is not None, "the long pipeline", timeout=30
    )
    rkey = pipeline_of(world, pushed.new_sha, "push")
    assert rkey is not None
    await until(
        lambda: stub_status(world, rkey, "push.yml") == pb.STATUS_RUNNING, "the stub runs it", timeout=30
    )
    return rkey


async def cancel_work(world: World, rkey: str) -> Check:
    """A cancel of a running workflow while cancel delivery is down: the stub stops the run afterwards."""
    status, answer = await world.call(
        "sh.tangled.ci.cancelPipeline", {"repo": world.repo_did, "pipeline": rkey}
    )
    assert (status, answer) == (200, None)
    assert world.status(rkey, "push.yml") == "cancelled"  # shown at once, delivered by the task
    assert stub_status(world, rkey, "push.yml") == pb.STATUS_RUNNING

    async def check() -> None:
        await until(
            lambda: stub_status(world, rkey, "push.yml") == pb.STATUS_CANCELLED,
            "the stub stops the run",
            timeout=30,
        )

    return check


CURRENT_TASKS: dict[str, Callable[[World], Awaitable[Check]]] = {
    "push_worker": push_work,
    "pull_worker": pull_work,
    "recovery": recovery_work,
    "verifier": verifier_work,
    "reconciler": reconciler_work,
}


async def down_then_ready(world: World, kind: str, before: float) -> None:
    """Readiness names the task while it is down; then it is restarted and counted, its failure logged."""
    base = world.stack.cp.http
    status, body = await readiness(base)
    assert status == 503, body
    assert any(f"task {kind}" in problem and "is down" in problem for problem in body["problems"]), body

    async def ready() -> bool:
        return (await readiness(base))[0] == 200

    await eventually(ready, 30, "ready again")
    assert await metric(base, "tack_task_restarts_total", {"task": kind}) >= before + 2
    assert logged_failure(world.stack.cp.output(), kind)
    assert all(t["state"] == "running" for t in (await report(base))["tasks"])


@pytest.mark.parametrize("kind", sorted(CURRENT_TASKS))
async def test_each_current_tangled_task_recovers_from_a_failure(world: World, kind: str) -> None:
    """The task fails (and keeps failing for 5 s): logged, counted, /readyz 503 naming it, restarted, and the
    work given to it meanwhile (a push, a pull request, a missed push, a registration, a PDS record) done."""
    base = world.stack.cp.http
    before = await metric(base, "tack_task_restarts_total", {"task": kind})
    assert await crash(base, kind, hold=HOLD) == [kind]
    check = await CURRENT_TASKS[kind](world)
    await down_then_ready(world, kind, before)
    await check()


async def test_a_cancel_made_while_its_delivery_is_down_reaches_the_provider_after_the_restart(
    world: World,
) -> None:
    """cancels fails while a cancel is asked for: the workflow is cancelled in Tangled's view at once, and
    once the task is back the stub is told and stops the run."""
    rkey = await running_long_workflow(world)
    base = world.stack.cp.http
    before = await metric(base, "tack_task_restarts_total", {"task": "cancels"})
    assert await crash(base, "cancels", hold=HOLD) == ["cancels"]
    check = await cancel_work(world, rkey)
    await down_then_ready(world, "cancels", before)
    await check()


async def test_every_control_plane_task_kind_has_a_failure_test(world: World) -> None:
    """Each task kind the control plane runs is failed on purpose by this module or test_supervision.py."""
    running = set(await kinds(world.stack.cp.http))
    covered = set(CONTROL_TASKS) | set(CURRENT_TASKS) | {"cancels"}
    assert running - covered == set()
    assert {"push_worker", "pull_worker", "jetstream", "knot"} <= running
