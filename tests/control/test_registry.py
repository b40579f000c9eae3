"""The mirror of members, repos and collaborators, and who may run what (tack_control.ingest.registry)."""

from __future__ import annotations

import sqlite3

import pytest

from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Applied, Registry
from tack_control.ingest.wire import (
    BadRecord,
    JetstreamEvent,
)
from tests.support.samples import (
    HOST,
    KNOT,
    MEMBER_DID,
    OTHER_DID,
    OWNER,
    apply,
    commit,
    member_record,
    repo_record,
    trigger,
)


# registry


def test_owner_adds_updates_and_removes_members(registry: Registry) -> None:
    """Member records by the owner for this hostname add, update and remove members live."""
    assert not registry.wanted(MEMBER_DID)
    applied = apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    assert applied == Applied("member_saved")
    assert registry.wanted(MEMBER_DID) and registry.wanted(OWNER)
    applied = apply(registry, commit(OWNER, MEMBER, "m1", "update", member_record(OTHER_DID)))
    assert applied == Applied("member_saved") and registry.members == {OTHER_DID}
    assert not registry.wanted(MEMBER_DID)
    assert apply(registry, commit(OWNER, MEMBER, "m1", "delete")) == Applied("member_removed")
    assert registry.members == set() and not registry.wanted(OTHER_DID)


def test_members_survive_a_reload(conn: sqlite3.Connection, registry: Registry) -> None:
    """The member set is read back from the database by a new registry."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    assert Registry(conn, HOST, OWNER).members == {MEMBER_DID}
    assert Registry(conn, HOST, OTHER_DID).members == set()


def test_member_records_not_by_the_owner_are_refused(registry: Registry) -> None:
    """A member record written by a member is refused; one by a stranger is filtered out."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    applied = apply(registry, commit(MEMBER_DID, MEMBER, "m2", record=member_record(OTHER_DID)))
    assert applied == Applied("member_not_by_owner")
    assert apply(registry, commit(OTHER_DID, MEMBER, "m3", record=member_record(OTHER_DID))).outcome == (
        "filtered"
    )
    assert registry.members == {MEMBER_DID}
    # A member deleting "their" record with the owner's rkey touches nothing of the owner's.
    apply(registry, commit(MEMBER_DID, MEMBER, "m1", "delete"))
    assert registry.members == {MEMBER_DID}


def test_member_records_for_another_spindle_are_ignored_or_revoke(registry: Registry) -> None:
    """A member record naming another instance adds nobody, and moving one away revokes the member."""
    applied = apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID, "other.example")))
    assert applied == Applied("member_other_spindle")
    assert not registry.wanted(MEMBER_DID)
    apply(registry, commit(OWNER, MEMBER, "m2", record=member_record(MEMBER_DID)))
    assert registry.wanted(MEMBER_DID)
    applied = apply(registry, commit(OWNER, MEMBER, "m2", "update", member_record(MEMBER_DID, HOST + ":1")))
    assert applied == Applied("member_other_spindle")
    assert not registry.wanted(MEMBER_DID)


def test_malformed_member_record_is_a_bad_record(registry: Registry) -> None:
    """A member record without a DID subject raises BadRecord and changes nothing."""
    with pytest.raises(BadRecord, match=r"^member\.subject:"):
        apply(registry, commit(OWNER, MEMBER, "m1", record={"subject": "bob", "instance": HOST}))
    assert registry.members == set()


def test_repos_register_and_unregister_with_their_spindle(registry: Registry) -> None:
    """A repo registers while its record names this spindle and unregisters on change, removal or delete."""
    assert registry.knots() == set()
    applied = apply(registry, commit(OWNER, REPO, "r1", record=repo_record()))
    assert applied == Applied("repo_registered", knots_changed=True)
    assert registry.knots() == {KNOT}
    applied = apply(registry, commit(OWNER, REPO, "r1", "update", repo_record(spindle="other.example")))
    assert applied == Applied("repo_elsewhere", knots_changed=True)
    assert registry.knots() == set()
    apply(registry, commit(OWNER, REPO, "r1", "update", repo_record()))
    assert registry.knots() == {KNOT}
    applied = apply(registry, commit(OWNER, REPO, "r1", "update", repo_record(spindle=None)))
    assert applied == Applied("repo_elsewhere", knots_changed=True)
    apply(registry, commit(OWNER, REPO, "r1", "update", repo_record()))
    assert apply(registry, commit(OWNER, REPO, "r1", "delete")) == Applied("repo_removed", knots_changed=True)
    assert registry.knots() == set()


def test_knots_lists_each_knot_of_registered_repos_once(registry: Registry) -> None:
    """knots() holds every knot hosting a registered repo once, ports verbatim; a knot change moves it."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(registry, commit(OWNER, REPO, "r1", record=repo_record("a")))
    apply(registry, commit(OWNER, REPO, "r2", record=repo_record("b")))
    apply(registry, commit(MEMBER_DID, REPO, "r1", record=repo_record("c", knot="localhost:6444")))
    apply(registry, commit(MEMBER_DID, REPO, "r2", record=repo_record("d", knot="k3", spindle="x")))
    assert registry.knots() == {KNOT, "localhost:6444"}
    applied = apply(registry, commit(OWNER, REPO, "r2", "update", repo_record("b")))
    assert applied == Applied("repo_registered", knots_changed=False)
    apply(registry, commit(MEMBER_DID, REPO, "r1", "update", repo_record("c", knot="k4.example")))
    assert registry.knots() == {KNOT, "k4.example"}


def test_repo_records_by_strangers_are_filtered(registry: Registry) -> None:
    """A repo record by someone neither owner nor member registers nothing."""
    assert apply(registry, commit(OTHER_DID, REPO, "r1", record=repo_record())).outcome == "filtered"
    assert registry.knots() == set()


def test_collaborators_are_saved_and_removed(conn: sqlite3.Connection, registry: Registry) -> None:
    """Collaborator records are mirrored by (did, rkey) and removed on delete."""
    record = {"subject": OTHER_DID, "repo": f"at://{OWNER}/{REPO}/r1"}
    assert apply(registry, commit(OWNER, COLLABORATOR, "c1", record=record)).outcome == "collaborator_saved"
    assert conn.execute("SELECT subject, repo FROM collaborators").fetchall() == [(OTHER_DID, record["repo"])]
    assert apply(registry, commit(OWNER, COLLABORATOR, "c1", "delete")).outcome == "collaborator_removed"
    assert conn.execute("SELECT COUNT(*) FROM collaborators").fetchone() == (0,)


def test_other_collections_and_kinds_are_ignored(registry: Registry) -> None:
    """Events of other collections or kinds are ignored."""
    assert apply(registry, commit(OWNER, "sh.tangled.spindle", HOST, record={})).outcome == "ignored"
    event = JetstreamEvent(did=OWNER, time_us=1, kind="identity")
    assert apply(registry, event).outcome == "ignored"


def test_authorize_decisions(registry: Registry) -> None:
    """authorize() says wrong_knot, unregistered, not_member or ok, including after a member is removed."""
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(registry, commit(OWNER, REPO, "r1", record=repo_record()))
    apply(registry, commit(MEMBER_DID, REPO, "r1", record=repo_record("tool", knot="localhost:6444")))
    apply(registry, commit(MEMBER_DID, REPO, "r2", record=repo_record("elsewhere", spindle="x")))
    assert registry.authorize(KNOT, trigger()) == "ok"
    assert registry.authorize("localhost:6444", trigger(MEMBER_DID, "localhost:6444", "tool")) == "ok"
    assert registry.authorize("evil.example", trigger()) == "wrong_knot"
    assert registry.authorize(KNOT, trigger(knot="evil.example")) == "wrong_knot"
    assert registry.authorize(KNOT, trigger(name="other")) == "unregistered"
    assert registry.authorize(KNOT, trigger(did=OTHER_DID)) == "unregistered"
    assert registry.authorize(KNOT, trigger(MEMBER_DID, name="elsewhere")) == "unregistered"
    assert registry.authorize("localhost:6444", trigger(MEMBER_DID, "localhost", "tool")) == "wrong_knot"
    apply(registry, commit(OWNER, MEMBER, "m1", "delete"))
    assert registry.authorize("localhost:6444", trigger(MEMBER_DID, "localhost:6444", "tool")) == "not_member"
    assert registry.authorize(KNOT, trigger()) == "ok"
    apply(registry, commit(OWNER, REPO, "r1", "delete"))
    assert registry.authorize(KNOT, trigger()) == "unregistered"
