"""Registering current-Tangled repositories: repo DIDs claimed by records, verified against their knot."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from tack_control.engine.eventlog import EventLog
from tack_control.engine.statuses import StatusBook
from tack_control.identity.resolver import DidResolver
from tack_control.ingest.knotapi import KnotApi
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Registry
from tack_control.ingest.verify import Verifier, knot_from_document, knot_host
from tack_control.ingest.wire import AclUpdate
from tack_control.netguard import Fetcher
from tack_sandbox.knot import HostedRepo, SimulatedKnot
from tests.fakes.atproto import FakePlc
from tests.support.atproto import Account
from tests.support.samples import (
    MEMBER_DID,
    OTHER_DID,
    OWNER,
    apply,
    commit,
    member_record,
    repo_record,
)


REPO_DID = "did:plc:repo7abcdefghijklmnopqrs"
OTHER_REPO_DID = "did:plc:repo6abcdefghijklmnopqrs"


def state(conn: sqlite3.Connection, did: str, rkey: str) -> tuple[str, str] | None:
    """(state, reason) of the repos row."""
    row = conn.execute("SELECT state, reason FROM repos WHERE did=? AND rkey=?", (did, rkey)).fetchone()
    return None if row is None else (row[0], row[1])


def test_a_record_with_a_repo_did_waits_for_verification_and_follows_nothing(registry: Registry) -> None:
    """A repoDid record is pending: its knot is not followed and its DID authorizes nothing yet."""
    applied = apply(registry, commit(OWNER, REPO, "hello", record=repo_record(repo_did=REPO_DID)))
    assert applied.outcome == "repo_pending" and not applied.knots_changed
    assert registry.knots() == set()
    assert registry.by_repo_did(REPO_DID) is None
    assert not registry.may_push(REPO_DID, OWNER)


def test_a_repo_did_claimed_by_a_second_owner_is_refused(
    conn: sqlite3.Connection, registry: Registry
) -> None:
    """Once an owner's record claims a repo DID, a member's record claiming it too is refused, with the reason."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(repo_did=REPO_DID)))
    applied = apply(registry, commit(MEMBER_DID, REPO, "mine", record=repo_record("mine", repo_did=REPO_DID)))
    assert applied.outcome == "repo_refused"
    refused = state(conn, MEMBER_DID, "mine")
    assert refused is not None and refused[0] == "refused" and OWNER in refused[1]


def test_delete_and_spindle_change_unregister(conn: sqlite3.Connection, registry: Registry) -> None:
    """Deleting the record, or naming another spindle, removes the repository (and frees its repo DID)."""
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(repo_did=REPO_DID)))
    assert (
        apply(
            registry, commit(OWNER, REPO, "hello", "update", repo_record(spindle="x", repo_did=REPO_DID))
        ).outcome
        == "repo_elsewhere"
    )
    assert state(conn, OWNER, "hello") is None
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(repo_did=REPO_DID)))
    assert apply(registry, commit(OWNER, REPO, "hello", "delete")).outcome == "repo_removed"
    assert state(conn, OWNER, "hello") is None


@pytest.fixture
async def knot() -> AsyncIterator[SimulatedKnot]:
    """A current-protocol knot on loopback hosting REPO_DID for OWNER under rkey 'hello'."""
    sim = SimulatedKnot(protocol="current")
    sim.host_repo(HostedRepo(REPO_DID, OWNER, "hello"))
    async with sim:
        yield sim


@pytest.fixture
async def verifier(conn: sqlite3.Connection, registry: Registry) -> AsyncIterator[Verifier]:
    """A verifier asking knots over real HTTP (dev mode: loopback allowed)."""
    fetcher = Fetcher(dev=True, timeout_s=3)
    changes: list[int] = []
    v = Verifier(
        registry,
        StatusBook(conn, EventLog(conn)),
        KnotApi(fetcher.get_json, dev=True),
        lambda: changes.append(1),
    )
    try:
        yield v
    finally:
        await fetcher.close()


async def test_the_knot_confirms_owner_and_rkey_and_the_repo_is_followed(
    conn: sqlite3.Connection, registry: Registry, knot: SimulatedKnot, verifier: Verifier
) -> None:
    """describeRepo naming the record's author and rkey verifies it: its knot is followed, the owner may push."""
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(knot=knot.hostname, repo_did=REPO_DID)))
    assert await verifier.verify_due() == 1
    assert state(conn, OWNER, "hello") == ("verified", "")
    assert registry.knots() == {knot.hostname}
    assert registry.by_repo_did(REPO_DID) is not None and registry.may_push(REPO_DID, OWNER)
    assert knot.xrpc_calls == [("describeRepo", REPO_DID)]


async def test_a_member_copying_another_owners_repo_did_is_refused(
    conn: sqlite3.Connection, registry: Registry, knot: SimulatedKnot, verifier: Verifier
) -> None:
    """A member's record naming the owner's repo DID on its knot is refused: the knot says the owner is someone else."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(
        registry, commit(MEMBER_DID, REPO, "hello", record=repo_record(knot=knot.hostname, repo_did=REPO_DID))
    )
    await verifier.verify_due()
    refused = state(conn, MEMBER_DID, "hello")
    assert refused is not None and refused[0] == "refused"
    assert "owner" in refused[1] and OWNER in refused[1]
    assert registry.knots() == set() and registry.by_repo_did(REPO_DID) is None


async def test_a_wrong_rkey_or_an_unknown_repo_did_is_refused(
    conn: sqlite3.Connection, registry: Registry, knot: SimulatedKnot, verifier: Verifier
) -> None:
    """The record key must be the one the knot tracks; a repo DID the knot does not host is refused."""
    apply(registry, commit(OWNER, REPO, "renamed", record=repo_record(knot=knot.hostname, repo_did=REPO_DID)))
    apply(
        registry,
        commit(OWNER, REPO, "ghost", record=repo_record(knot=knot.hostname, repo_did=OTHER_REPO_DID)),
    )
    await verifier.verify_due()
    renamed, ghost = state(conn, OWNER, "renamed"), state(conn, OWNER, "ghost")
    assert renamed is not None and renamed[0] == "refused" and "record key" in renamed[1]
    assert ghost is not None and ghost[0] == "refused" and "does not know" in ghost[1]


async def test_a_knot_that_is_down_is_asked_again_later(
    conn: sqlite3.Connection, registry: Registry, verifier: Verifier
) -> None:
    """A knot that cannot be reached leaves the registration pending with a later check, not refused."""
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(knot="127.0.0.1:9", repo_did=REPO_DID)))
    await verifier.verify_due()
    row = conn.execute("SELECT state, checks, next_check_ns > 0, reason FROM repos").fetchone()
    assert row[:3] == ("pending", 1, 1) and "unreachable" in row[3]
    assert await verifier.verify_due() == 0


async def test_collaborators_by_record_and_by_knot_grant_push_and_deletes_revoke(
    conn: sqlite3.Connection, registry: Registry, knot: SimulatedKnot, verifier: Verifier
) -> None:
    """Only the owner's collaborator records count; the repo's own knot can add and remove collaborators too."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(knot=knot.hostname, repo_did=REPO_DID)))
    await verifier.verify_due()
    assert not registry.may_push(REPO_DID, OTHER_DID)
    # A member naming a collaborator on the owner's repo grants nothing.
    apply(registry, commit(MEMBER_DID, COLLABORATOR, "c9", record={"subject": OTHER_DID, "repo": REPO_DID}))
    assert not registry.may_push(REPO_DID, OTHER_DID)
    apply(registry, commit(OWNER, COLLABORATOR, "c1", record={"subject": OTHER_DID, "repo": REPO_DID}))
    assert registry.may_push(REPO_DID, OTHER_DID)
    apply(registry, commit(OWNER, COLLABORATOR, "c1", "delete"))
    assert not registry.may_push(REPO_DID, OTHER_DID)
    with StatusBook(conn, EventLog(conn)).transaction() as tx:
        assert (
            registry.apply_knot_acl(tx, "evil.example", AclUpdate("add", OTHER_DID, REPO_DID)) == "wrong_knot"
        )
        assert (
            registry.apply_knot_acl(tx, knot.hostname, AclUpdate("add", OTHER_DID, REPO_DID))
            == "collaborator_update"
        )
    assert registry.may_push(REPO_DID, OTHER_DID)
    with StatusBook(conn, EventLog(conn)).transaction() as tx:
        registry.apply_knot_acl(tx, knot.hostname, AclUpdate("remove", OTHER_DID, REPO_DID))
    assert not registry.may_push(REPO_DID, OTHER_DID)


async def test_the_repo_dids_own_document_must_name_the_records_knot(
    conn: sqlite3.Connection, registry: Registry, knot: SimulatedKnot
) -> None:
    """Verification asks the knot the repo DID's document names; a record naming another knot is refused."""
    plc = FakePlc()
    await plc.start()
    fetcher = Fetcher(dev=True, timeout_s=3)
    try:
        resolver = DidResolver(fetcher, plc.url, dev=True)
        verifier = Verifier(
            registry,
            StatusBook(conn, EventLog(conn)),
            KnotApi(fetcher.get_json, dev=True),
            lambda: None,
            knot_from_document(resolver),
        )
        plc.publish(Account(did=REPO_DID, pds=f"http://{knot.hostname}"))
        apply(
            registry, commit(OWNER, REPO, "hello", record=repo_record(knot=knot.hostname, repo_did=REPO_DID))
        )
        # An impostor knot that would vouch for anything: the DID document does not name it.
        impostor = SimulatedKnot(protocol="current")
        impostor.host_repo(HostedRepo(OTHER_REPO_DID, OWNER, "copy"))
        async with impostor:
            plc.publish(Account(did=OTHER_REPO_DID, pds=f"http://{knot.hostname}"))
            apply(
                registry,
                commit(
                    OWNER,
                    REPO,
                    "copy",
                    record=repo_record("copy", knot=impostor.hostname, repo_did=OTHER_REPO_DID),
                ),
            )
            await verifier.verify_due()
        assert state(conn, OWNER, "hello") == ("verified", "")
        copy = state(conn, OWNER, "copy")
        assert copy is not None and copy[0] == "refused" and knot.hostname in copy[1]
        assert impostor.xrpc_calls == []
    finally:
        await fetcher.close()
        await plc.stop()


def test_knot_host_normalises_endpoints_as_records_name_knots() -> None:
    """A service endpoint URL becomes host[:port] with default ports dropped; anything else is no knot."""
    assert knot_host("https://Knot.Example.com/") == "knot.example.com"
    assert knot_host("https://knot.example.com:443") == "knot.example.com"
    assert knot_host("http://127.0.0.1:6444") == "127.0.0.1:6444"
    assert knot_host("https://knot.example.com:8443/x") == "knot.example.com:8443"
    assert knot_host("ftp://knot.example.com") is None
    assert knot_host("not a url") is None


def refusals(reason: str) -> float:
    """The current value of tack_registrations_refused_total{reason}."""
    return REGISTRY.get_sample_value("tack_registrations_refused_total", {"reason": reason}) or 0.0


async def test_every_refusal_is_counted_under_its_reason_and_logged(
    registry: Registry, knot: SimulatedKnot, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    """A claimed repo DID, an owner or rkey the knot denies and a repo DID it does not know: one count and one
    warning each, naming the record and the reason."""
    reasons = ("repo_did_claimed", "owner_mismatch", "rkey_mismatch", "unknown_to_knot")
    before = {reason: refusals(reason) for reason in reasons}
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(registry, commit(OWNER, REPO, "hello", record=repo_record(knot=knot.hostname, repo_did=REPO_DID)))
    await verifier.verify_due()
    with caplog.at_level(logging.WARNING, logger="tack_control.ingest.registry"):
        apply(registry, commit(MEMBER_DID, REPO, "copy", record=repo_record(repo_did=REPO_DID)))
        apply(registry, commit(OWNER, REPO, "hello", "delete"))
        apply(
            registry,
            commit(MEMBER_DID, REPO, "hello", record=repo_record(knot=knot.hostname, repo_did=REPO_DID)),
        )
        await verifier.verify_due()
        apply(
            registry,
            commit(OWNER, REPO, "renamed", record=repo_record(knot=knot.hostname, repo_did=REPO_DID)),
        )
        apply(
            registry,
            commit(OWNER, REPO, "ghost", record=repo_record(knot=knot.hostname, repo_did=OTHER_REPO_DID)),
        )
        await verifier.verify_due()
    assert {reason: refusals(reason) - before[reason] for reason in reasons} == dict.fromkeys(reasons, 1.0)
    logged = [(r.getMessage(), getattr(r, "rkey", ""), getattr(r, "reason", "")) for r in caplog.records]
    assert sorted(rkey for message, rkey, _ in logged if message == "repository registration refused") == [
        "copy",
        "ghost",
        "hello",
        "renamed",
    ]
    assert all(reason for *_, reason in logged)
