"""Reconciliation in the running control plane: a tack started after everything exists knows it all, without Jetstream."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tack_sandbox.gitrepos import create_repository
from tack_sandbox.knot import HostedRepo, SimulatedKnot, pipeline_record
from tests.fakes.appview import AppviewClient
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account
from tests.support.stack import OWNER, QUICK, ControlPlane, Stack, finished, metric, stub_runs, stub_workflow


pytestmark = pytest.mark.e2e
MEMBER = "sh.tangled.spindle.member"
REPO = "sh.tangled.repo"


@dataclass
class World:
    """A stack whose knot speaks current Tangled, and the owner's and members' PDSes, before tack starts."""

    stack: Stack
    plc: FakePlc
    pds: FakePds
    pds2: FakePds
    owner: Account

    @property
    def cp(self) -> ControlPlane:
        return self.stack.cp

    @property
    def knot(self) -> SimulatedKnot:
        return self.stack.knot

    def account(self, pds: FakePds | None = None) -> Account:
        """A new account hosted on ``pds`` (the owner's by default)."""
        home = pds or self.pds
        account = self.plc.publish(Account(pds=home.url))
        home.host(account.did)
        return account

    def member(self, subject: Account) -> str:
        """The owner's member record for ``subject``; returns its rkey."""
        rkey = self.stack.rkey()
        self.pds.put(OWNER, MEMBER, rkey, {"subject": subject.did, "instance": self.cp.hostname})
        return rkey

    def repo(self, author: Account, name: str, pds: FakePds | None = None) -> str:
        """A repository of ``author`` hosted by the knot, its repo DID's document naming the knot; returns the DID."""
        repo_did = self.plc.publish(Account(pds=f"http://{self.knot.hostname}")).did
        self.knot.host_repo(HostedRepo(repo_did, author.did, name))
        record = {
            "name": name,
            "knot": self.knot.hostname,
            "spindle": self.cp.hostname,
            "repoDid": repo_did,
            "createdAt": "2026-01-01T00:00:00Z",
        }
        (pds or self.pds).put(author.did, REPO, name, record)
        return repo_did

    def repo_states(self) -> dict[str, str]:
        """repo DID → state, from the control plane's database."""
        with sqlite3.connect(self.cp.db_path) as conn:
            return dict(conn.execute("SELECT repo_did, state FROM repos").fetchall())

    def members(self) -> set[str]:
        """Subjects of the member rows in the control plane's database."""
        with sqlite3.connect(self.cp.db_path) as conn:
            return {r[0] for r in conn.execute("SELECT subject FROM members")}


@pytest.fixture
async def pds2() -> AsyncIterator[FakePds]:
    """A second PDS."""
    fake = FakePds()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def world(tmp_path: Path, plc: FakePlc, pds: FakePds, pds2: FakePds) -> AsyncIterator[World]:
    """Everything but the control plane running; the control plane's hostname is known (records name it)."""
    stack = Stack(tmp_path)
    stack.knot = SimulatedKnot(protocol="current", ping_interval=1.0, git_root=tmp_path / "git")
    await stack.jetstream.start()
    await stack.knot.start()
    await stack.stub.start_serving()
    env = {
        "TACK_JETSTREAM_URL": stack.jetstream.url,
        "TACK_PROVIDERS": f"stub={stack.stub.address}",
        "TACK_PLC_URL": plc.url,
        "TACK_RECONCILE_RECORDS_TIMEOUT": "2",
    }
    stack.control = ControlPlane(tmp_path, env)
    owner = plc.publish(Account(did=OWNER, pds=pds.url))
    pds.host(OWNER)
    try:
        yield World(stack, plc, pds, pds2, owner)
    finally:
        await stack.stop()


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def five_repositories(world: World) -> dict[str, str]:
    """The owner, two members (one on the second PDS) and five repositories; name → repo DID."""
    alice, bob = world.account(), world.account(world.pds2)
    world.member(alice)
    world.member(bob)
    return {
        "site": world.repo(world.owner, "site"),
        "lib": world.repo(alice, "lib"),
        "app": world.repo(alice, "app"),
        "tool": world.repo(bob, "tool", world.pds2),
        "docs": world.repo(bob, "docs", world.pds2),
    }


async def test_tack_started_after_everything_exists_registers_all_five_and_follows_their_knot(
    world: World,
) -> None:
    """Without a single Jetstream event, the five repositories are verified and their knot followed."""
    repos = await five_repositories(world)
    await world.cp.start_ready()
    await until(
        lambda: sorted(world.repo_states().get(d, "") for d in repos.values()) == ["verified"] * 5,
        "all five are verified",
    )
    await world.stack.wait_knot_connected()
    assert world.stack.jetstream.events == []
    assert len(world.members()) == 2
    assert await metric(world.stack, 'tack_reconcile_passes_total{result="complete"}') >= 1
    assert await metric(world.stack, 'tack_reconcile_changes_total{change="added",collection="repo"}') == 5


async def test_a_record_deleted_while_tack_was_down_is_unregistered_at_start(world: World) -> None:
    """kill -9, delete a repo record and a collaborator's member record on the PDS, start: both are gone."""
    repos = await five_repositories(world)
    await world.cp.start_ready()
    await until(lambda: list(world.repo_states().values()).count("verified") == 5, "all five are verified")
    world.cp.kill9()
    world.pds.delete(OWNER, REPO, "site")
    await world.cp.start_ready()
    await until(lambda: repos["site"] not in world.repo_states(), "the deleted repository is unregistered")
    assert list(world.repo_states().values()).count("verified") == 4


async def test_a_member_revoked_during_the_first_fetch_stays_revoked(world: World) -> None:
    """Jetstream's delete of a member record, arriving while the owner's member list is being read, wins."""
    alice, bob = world.account(), world.account()
    world.member(alice)
    bob_rkey = world.member(bob)
    world.repo(bob, "tool")
    gate = world.pds.hold(OWNER, MEMBER)
    await world.cp.start_ready()
    await world.stack.jetstream.wait_connected(1, timeout=10)
    await asyncio.wait_for(gate.reached.wait(), 10)
    # The list naming bob is computed and held back; now the owner revokes bob, and Jetstream says so.
    world.pds.delete(OWNER, MEMBER, bob_rkey)
    world.stack.remove_member(bob_rkey)
    deadline = time.monotonic() + 10
    while await metric(world.stack, 'tack_jetstream_events_total{outcome="member_removed"}') < 1:
        assert time.monotonic() < deadline, "the revocation reaches tack"
        await asyncio.sleep(0.05)
    gate.release()
    while await metric(world.stack, "tack_reconcile_passes_total") < 1:
        assert time.monotonic() < deadline + 10, "the first pass ends"
        await asyncio.sleep(0.05)
    assert world.members() == {alice.did}
    assert (
        await metric(world.stack, 'tack_reconcile_changes_total{change="kept_live",collection="member"}') == 1
    )
    assert await metric(world.stack, 'tack_reconcile_changes_total{change="added",collection="member"}') == 1


async def test_pdses_that_fail_stall_or_page_forever_leave_the_others_reconciled_and_tack_serving(
    world: World, appview_factory: Callable[[Stack], AppviewClient]
) -> None:
    """500, a stall and an endless listing fail their DIDs (reported in the metrics and the health report);
    everyone else registers."""
    fine, broken, stalled, endless = world.account(), *(world.account(world.pds2) for _ in range(3))
    for account in (fine, broken, stalled, endless):
        world.member(account)
    good = world.repo(fine, "good")
    for account in (broken, stalled, endless):
        world.repo(account, "unseen", world.pds2)
    world.pds2.failing[broken.did] = 500
    world.pds2.stalling.add(stalled.did)
    world.pds2.endless.add(endless.did)
    await world.cp.start_ready()
    await until(lambda: world.repo_states().get(good) == "verified", "the healthy member's repo is verified")
    await until(lambda: len(world.members()) == 4, "all four members are known")
    deadline = time.monotonic() + 20
    while await metric(world.stack, "tack_reconcile_dids_failing") != 3:
        assert time.monotonic() < deadline, "three DIDs reported failing"
        await asyncio.sleep(0.1)
    assert len(world.repo_states()) == 1
    async with aiohttp.ClientSession() as session:
        async with session.get(world.cp.http + "/readyz") as resp:
            assert resp.status == 200
        async with session.get(world.cp.http + "/healthz?verbose=1") as resp:
            reconciliation = (await resp.json())["reconciliation"]
    assert reconciliation["failing"] == 3
    by_did = {d["did"]: d for d in reconciliation["dids"]}
    assert {did for did, d in by_did.items() if not d["ok"]} == {broken.did, stalled.did, endless.did}
    assert all(
        by_did[a.did]["reason"] and by_did[a.did]["retry_in_s"] is not None
        for a in (broken, stalled, endless)
    )
    assert by_did[fine.did]["ok"] and by_did[fine.did]["records"] == 1
    assert world.cp.alive()
    appview = appview_factory(world.stack)
    await appview.connect_events()
    try:
        rkey = world.stack.push(fine.did, "good", [stub_workflow("a.yml", QUICK)])
        await appview.wait_for(lambda: finished(appview, world.knot.hostname, rkey, ["a.yml"]), timeout=20)
    finally:
        await appview.close()


@pytest.fixture
def appview_factory() -> Callable[[Stack], AppviewClient]:
    """An appview-like client of a stack started by the test itself."""
    return lambda stack: AppviewClient(stack.cp.http)


async def test_a_push_to_a_repository_registered_only_through_backfill_runs(
    world: World, appview_factory: Callable[[Stack], AppviewClient]
) -> None:
    """The knot's pipeline for a repository tack learnt of only from its owner's PDS reaches the provider and
    finishes, its statuses on /events."""
    alice = world.account()
    world.member(alice)
    repo_did = world.repo(alice, "lib")
    await world.cp.start_ready()
    await until(lambda: world.repo_states().get(repo_did) == "verified", "the repository is verified")
    await world.stack.wait_knot_connected()
    appview = appview_factory(world.stack)
    await appview.connect_events()
    try:
        rkey = world.knot.new_rkey()
        record = pipeline_record(
            knot=world.knot.hostname, did=alice.did, repo="lib", workflows=[stub_workflow("build.yml", QUICK)]
        )
        world.knot.emit_pipeline(rkey, record)
        await appview.wait_for(
            lambda: finished(appview, world.knot.hostname, rkey, ["build.yml"]), timeout=20
        )
        assert (appview.latest(world.knot.hostname, rkey, "build.yml") or {}).get("status") == "success"
    finally:
        await appview.close()
    assert stub_runs(world.stack) == 1
    assert world.stack.jetstream.events == []


async def test_a_current_tangled_push_to_a_repository_registered_only_through_backfill_runs(
    world: World, appview_factory: Callable[[Stack], AppviewClient]
) -> None:
    """The held-out style end to end: a refUpdate for a repository known only from its owner's PDS runs."""
    alice = world.account()
    world.member(alice)
    repo_did = world.repo(alice, "lib")
    await world.cp.start_ready()
    await until(lambda: world.repo_states().get(repo_did) == "verified", "the repository is verified")
    await world.stack.wait_knot_connected()
    assert world.knot.git is not None
    await create_repository(world.knot.git.repo_path(repo_did))
    workflow = 'when:\n  - event: ["push"]\n    branch: ["main"]\nengine: tack\ntack:\n  stub: {"queue_seconds": 0}\n'
    await world.knot.push(repo_did, {".tangled/workflows/ci.yml": workflow})
    await until(lambda: stub_runs(world.stack) >= 1, "a workflow reaches the provider", timeout=20)
