"""Reconciliation: the mirror made to agree with the owner's and members' PDSes, with Jetstream's word winning."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tack_control.engine.eventlog import EventLog
from tack_control.engine.statuses import StatusBook
from tack_control.identity.pds import PdsReader
from tack_control.identity.resolver import DidResolver
from tack_control.ingest.backfill import Limits, Reconciler
from tack_control.ingest.jetstream import JetstreamIngest
from tack_control.ingest.knotapi import KnotApi
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Registry
from tack_control.ingest.verify import Verifier, knot_from_document
from tack_control.netguard import Fetcher
from tack_sandbox.knot import HostedRepo, SimulatedKnot
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account
from tests.support.samples import HOST, OWNER


CREATED = "2026-01-01T00:00:00Z"


class Tangled:
    """The owner, members and repositories as they exist on PLC, PDSes and a current knot before tack looks."""

    def __init__(self, plc: FakePlc, pds: FakePds, knot: SimulatedKnot) -> None:
        self.plc = plc
        self.pds = pds
        self.knot = knot
        self.owner = plc.publish(Account(did=OWNER, pds=pds.url))
        pds.host(OWNER)
        self._rkeys = 0

    def account(self, pds: FakePds | None = None) -> Account:
        """A new account on ``pds`` (the owner's by default)."""
        home = pds or self.pds
        account = self.plc.publish(Account(pds=home.url))
        home.host(account.did)
        return account

    def rkey(self) -> str:
        """A fresh TID-like record key."""
        self._rkeys += 1
        return f"3m{self._rkeys:011d}"

    def member(self, subject: Account, instance: str = HOST) -> str:
        """The owner's member record for ``subject``; returns its rkey."""
        rkey = self.rkey()
        self.pds.put(
            OWNER, MEMBER, rkey, {"subject": subject.did, "instance": instance, "createdAt": CREATED}
        )
        return rkey

    def repo(self, author: Account, name: str, pds: FakePds | None = None, spindle: str = HOST) -> str:
        """A repository of ``author`` on the knot, with a repo DID whose document names the knot; returns it."""
        repo_did = self.plc.publish(Account(pds=f"http://{self.knot.hostname}")).did
        self.knot.host_repo(HostedRepo(repo_did, author.did, name))
        record = {"name": name, "knot": self.knot.hostname, "spindle": spindle, "repoDid": repo_did}
        (pds or self.pds).put(author.did, REPO, name, {**record, "createdAt": CREATED})
        return repo_did


@pytest.fixture
async def knot() -> AsyncIterator[SimulatedKnot]:
    """A current-protocol knot on loopback."""
    async with SimulatedKnot(protocol="current") as sim:
        yield sim


@pytest.fixture
async def pds2() -> AsyncIterator[FakePds]:
    """A second PDS, for members who live elsewhere."""
    fake = FakePds()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def tangled(plc: FakePlc, pds: FakePds, knot: SimulatedKnot) -> Tangled:
    """The world outside tack."""
    return Tangled(plc, pds, knot)


class Tack:
    """The parts of a control plane that reconciliation touches, over the test database."""

    def __init__(self, conn: sqlite3.Connection, plc: FakePlc, fetcher: Fetcher, limits: Limits) -> None:
        self.conn = conn
        self.book = StatusBook(conn, EventLog(conn))
        self.registry = Registry(conn, HOST, OWNER)
        resolver = DidResolver(fetcher, plc.url, dev=True)
        self.changed = 0
        self.verifier = Verifier(
            self.registry,
            self.book,
            KnotApi(fetcher.get_json, dev=True),
            lambda: None,
            knot_from_document(resolver),
        )
        self.reconciler = Reconciler(
            self.registry, self.book, PdsReader(resolver, fetcher), self._changed, 3600.0, limits
        )
        self.jetstream = JetstreamIngest("ws://unused", self.registry, self.book, lambda: None)

    def _changed(self) -> None:
        self.changed += 1

    def repos(self) -> dict[tuple[str, str], str]:
        """(author, rkey) → state of every repos row."""
        return {(r[0], r[1]): r[2] for r in self.conn.execute("SELECT did, rkey, state FROM repos")}

    def live(
        self, did: str, collection: str, rkey: str, operation: str, record: dict[str, Any] | None = None
    ) -> str:
        """Deliver one Jetstream commit; returns what became of it."""
        commit: dict[str, Any] = {"rev": "3m", "operation": operation, "collection": collection, "rkey": rkey}
        if record is not None:
            commit["record"] = {"$type": collection, **record}
        frame = {"did": did, "time_us": time.time_ns() // 1000, "kind": "commit", "commit": commit}
        return self.jetstream.handle(json.dumps(frame))[0]


@pytest.fixture
def tack(conn: sqlite3.Connection, plc: FakePlc, fetcher: Fetcher) -> Tack:
    """A tack that has never heard of anything (a DID's read is cut after 0.5 s or 20 pages)."""
    return Tack(conn, plc, fetcher, Limits(max_pages=20, fetch_timeout_s=0.5, retry_base_s=0.2))


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A metric sample's current value (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_tack_started_after_everything_exists_registers_all_five_repositories(
    tangled: Tangled, tack: Tack, pds2: FakePds, knot: SimulatedKnot
) -> None:
    """Owner, two members (one on another PDS) and five repositories: one pass registers all, verified by the knot."""
    alice, bob = tangled.account(), tangled.account(pds2)
    tangled.member(alice)
    tangled.member(bob)
    repo_dids = [
        tangled.repo(tangled.owner, "site"),
        tangled.repo(alice, "lib"),
        tangled.repo(alice, "app"),
        tangled.repo(bob, "tool", pds2),
        tangled.repo(bob, "docs", pds2),
    ]
    report = await tack.reconciler.reconcile()
    assert sorted(report.read) == sorted([OWNER, alice.did, bob.did]) and not report.failed
    assert tack.registry.members == {alice.did, bob.did}
    assert sorted(tack.repos().values()) == ["pending"] * 5 and tack.changed == 1
    await tack.verifier.verify_due()
    assert sorted(tack.repos().values()) == ["verified"] * 5
    assert tack.registry.knots() == {knot.hostname}
    assert all(tack.registry.by_repo_did(d) is not None for d in repo_dids)
    asked = len(knot.xrpc_calls)
    again = await tack.reconciler.reconcile()
    assert not again.changes and len(knot.xrpc_calls) == asked, "an unchanged record is not verified again"


async def test_records_deleted_while_tack_was_down_are_unregistered_at_start(
    conn: sqlite3.Connection, tangled: Tangled, tack: Tack, plc: FakePlc, fetcher: Fetcher
) -> None:
    """A deleted repo record and a repo moved to another spindle are gone after the next start; a revoked member
    is no member, so their repositories count for nothing."""
    alice, bob = tangled.account(), tangled.account()
    tangled.member(alice)
    bob_rkey = tangled.member(bob)
    tangled.repo(alice, "lib")
    tangled.repo(alice, "moved")
    bobs = tangled.repo(bob, "tool")
    tangled.repo(tangled.owner, "site")
    await tack.reconciler.reconcile()
    await tack.verifier.verify_due()
    assert len(tack.repos()) == 4 and tack.registry.by_repo_did(bobs) is not None
    # tack is down: the records change on the PDSes.
    tangled.pds.delete(alice.did, REPO, "lib")
    tangled.pds.put(
        alice.did, REPO, "moved", {"name": "moved", "knot": tangled.knot.hostname, "spindle": "elsewhere"}
    )
    tangled.pds.delete(OWNER, MEMBER, bob_rkey)
    restarted = Tack(conn, plc, fetcher, Limits())
    assert restarted.registry.members == {alice.did, bob.did}
    report = await restarted.reconciler.reconcile()
    assert restarted.registry.members == {alice.did}
    assert set(restarted.repos()) == {(OWNER, "site"), (bob.did, "tool")}
    assert restarted.registry.by_repo_did(bobs) is None
    assert report.changes[("repo", "removed")] == 2 and report.changes[("member", "removed")] == 1
    assert bob.did not in report.read


async def test_a_member_revoked_while_the_fetch_is_in_flight_stays_revoked(
    tangled: Tangled, tack: Tack
) -> None:
    """The member list read before a live revocation is not applied over it: the member stays revoked."""
    alice, bob = tangled.account(), tangled.account()
    tangled.member(alice)
    bob_rkey = tangled.member(bob)
    bobs = tangled.repo(bob, "tool")
    await tack.reconciler.reconcile()
    await tack.verifier.verify_due()
    assert bob.did in tack.registry.members and tack.registry.by_repo_did(bobs) is not None
    gate = tangled.pds.hold(OWNER, MEMBER)
    running = asyncio.create_task(tack.reconciler.reconcile())
    await asyncio.wait_for(gate.reached.wait(), 5)
    # The page (still listing bob) is computed; now the owner revokes bob, and Jetstream says so.
    tangled.pds.delete(OWNER, MEMBER, bob_rkey)
    assert tack.live(OWNER, MEMBER, bob_rkey, "delete") == "member_removed"
    gate.release()
    report = await asyncio.wait_for(running, 10)
    assert tack.registry.members == {alice.did}
    assert report.changes[("member", "kept_live")] == 1
    assert tack.registry.by_repo_did(bobs) is None and not tack.registry.may_push(bobs, bob.did)
    assert bob.did not in report.read


async def test_a_record_created_live_during_the_fetch_is_not_removed_by_the_older_snapshot(
    tangled: Tangled, tack: Tack
) -> None:
    """A repo created through Jetstream after its author's listing was read is kept, not deleted as missing."""
    gate = tangled.pds.hold(OWNER, REPO)
    running = asyncio.create_task(tack.reconciler.reconcile())
    await asyncio.wait_for(gate.reached.wait(), 5)
    repo_did = tangled.repo(tangled.owner, "fresh")
    record = {"name": "fresh", "knot": tangled.knot.hostname, "spindle": HOST, "repoDid": repo_did}
    assert tack.live(OWNER, REPO, "fresh", "create", record) == "repo_pending"
    gate.release()
    report = await asyncio.wait_for(running, 10)
    assert tack.repos() == {(OWNER, "fresh"): "pending"}
    assert report.changes[("repo", "kept_live")] == 1 and not report.changes[("repo", "removed")]


async def test_failing_pdses_keep_their_last_known_state_and_the_others_reconcile(
    tangled: Tangled, tack: Tack, pds2: FakePds
) -> None:
    """A PDS answering 500, one that stalls and one that pages forever fail their DIDs only; nothing known is lost."""
    broken, stalled, endless, fine = (tangled.account(pds2) for _ in range(4))
    for account in (broken, stalled, endless, fine):
        tangled.member(account)
        tangled.repo(account, "old", pds2)
    await tack.reconciler.reconcile()
    assert len(tack.repos()) == 4
    for account in (broken, stalled, endless, fine):
        pds2.delete(account.did, REPO, "old")
        tangled.repo(account, "new", pds2)
    pds2.failing[broken.did] = 500
    pds2.stalling.add(stalled.did)
    pds2.endless.add(endless.did)
    before = sample("tack_reconcile_passes_total", {"result": "partial"})
    started = time.monotonic()
    report = await tack.reconciler.reconcile()
    assert time.monotonic() - started < 5, "a stalled PDS is bounded by the per-DID time limit"
    assert set(report.failed) == {broken.did, stalled.did, endless.did}
    assert "HTTP 500" in report.failed[broken.did]
    assert "longer than 0.5s" in report.failed[stalled.did]
    assert "more than 20 pages" in report.failed[endless.did]
    repos = tack.repos()
    for account in (broken, stalled, endless):
        assert (account.did, "old") in repos and (account.did, "new") not in repos
    assert (fine.did, "old") not in repos and (fine.did, "new") in repos
    status = tack.reconciler.status()
    assert status["failing"] == 3
    failing = {d["did"]: d for d in status["dids"] if not d["ok"]}
    assert set(failing) == {broken.did, stalled.did, endless.did}
    assert failing[stalled.did]["reason"] == "timeout" and failing[broken.did]["reason"] == "unavailable"
    assert failing[endless.did]["reason"] == "too_many" and failing[broken.did]["retry_in_s"] is not None
    healthy = next(d for d in status["dids"] if d["did"] == fine.did)
    assert healthy["ok"] and healthy["last_success"] is not None and healthy["records"] == 1
    assert sample("tack_reconcile_passes_total", {"result": "partial"}) == before + 1
    assert sample("tack_reconcile_dids_failing") == 3
    assert sample("tack_reconcile_reads_total", {"collection": "repo", "result": "timeout"}) >= 1


async def test_a_failed_did_is_retried_with_backoff_and_recovers(
    tangled: Tangled, tack: Tack, pds2: FakePds
) -> None:
    """The run loop reads a failed DID again on its own, soon, and the failure clears once the PDS answers."""
    alice = tangled.account(pds2)
    tangled.member(alice)
    tangled.repo(alice, "lib", pds2)
    pds2.failing[alice.did] = 503
    runner = asyncio.create_task(tack.reconciler.run())
    try:
        while not any(d["failures"] for d in tack.reconciler.status()["dids"]):
            await asyncio.sleep(0.02)
        first = pds2.hits["listRecords"]
        del pds2.failing[alice.did]
        deadline = time.monotonic() + 5
        while (alice.did, "lib") not in tack.repos():
            assert time.monotonic() < deadline, tack.reconciler.status()
            await asyncio.sleep(0.02)
        assert pds2.hits["listRecords"] > first
        assert tack.reconciler.status()["failing"] == 0 and tack.reconciler.passes == 1
    finally:
        runner.cancel()


async def test_a_member_record_from_jetstream_triggers_a_pass_that_backfills_the_new_members_repos(
    tangled: Tangled, tack: Tack
) -> None:
    """Adding a member live makes the reconciler read that member's existing repositories at once."""
    carol = tangled.account()
    tangled.repo(carol, "old-project")
    runner = asyncio.create_task(tack.reconciler.run())
    try:
        while tack.reconciler.passes < 1:
            await asyncio.sleep(0.02)
        assert tack.repos() == {}
        rkey = tangled.member(carol)
        tack.jetstream.on_members_changed = tack.reconciler.poke
        assert (
            tack.live(OWNER, MEMBER, rkey, "create", {"subject": carol.did, "instance": HOST})
            == "member_saved"
        )
        deadline = time.monotonic() + 5
        while (carol.did, "old-project") not in tack.repos():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert tack.reconciler.passes == 2
    finally:
        runner.cancel()


async def test_collaborators_are_backfilled_and_removed_and_grant_push_accordingly(
    tangled: Tangled, tack: Tack
) -> None:
    """The owner's collaborator record found on the PDS grants push; once deleted there, reconciliation revokes it."""
    friend = tangled.account()
    repo_did = tangled.repo(tangled.owner, "site")
    tangled.pds.put(
        OWNER, COLLABORATOR, "3mc", {"subject": friend.did, "repo": repo_did, "createdAt": CREATED}
    )
    await tack.reconciler.reconcile()
    await tack.verifier.verify_due()
    assert tack.registry.may_push(repo_did, friend.did)
    tangled.pds.delete(OWNER, COLLABORATOR, "3mc")
    report = await tack.reconciler.reconcile()
    assert not tack.registry.may_push(repo_did, friend.did)
    assert report.changes[("collaborator", "removed")] == 1


async def test_an_unreadable_record_on_the_pds_leaves_the_mirror_as_it_was(
    tangled: Tangled, tack: Tack
) -> None:
    """A record that became malformed on the PDS neither updates nor removes the row, as a malformed live update."""
    tangled.repo(tangled.owner, "site")
    await tack.reconciler.reconcile()
    tangled.pds.records[(OWNER, REPO, "site")] = {"$type": REPO, "knot": "not a host!"}
    tangled.pds.records[(OWNER, REPO, "other")] = {"$type": "app.bsky.feed.post", "text": "hi"}
    report = await tack.reconciler.reconcile()
    assert tack.repos() == {(OWNER, "site"): "pending"}
    assert report.changes[("repo", "unreadable")] == 2 and not report.failed


async def test_a_did_with_more_records_than_allowed_fails_without_changing_anything(
    conn: sqlite3.Connection, tangled: Tangled, plc: FakePlc, fetcher: Fetcher
) -> None:
    """Past the per-DID record limit the DID's read fails (too_many) and what tack knew of it stays."""
    bounded = Tack(conn, plc, fetcher, Limits(max_records=3))
    for i in range(3):
        tangled.repo(tangled.owner, f"r{i}")
    await bounded.reconciler.reconcile()
    assert len(bounded.repos()) == 3
    tangled.repo(tangled.owner, "r3")
    report = await bounded.reconciler.reconcile()
    assert set(report.failed) == {OWNER} and "more than" in report.failed[OWNER]
    assert len(bounded.repos()) == 3
