"""The I/O-free halves of reconciliation: the plan that makes the mirror agree with a snapshot, and the live marks."""

from __future__ import annotations

from tack_control.ingest.livemarks import LiveMarks
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO
from tack_control.ingest.snapshot import Change, plan
from tests.support.samples import HOST, KNOT, MEMBER_DID, OTHER_DID, member_record, repo_record


REPO_DID = "did:plc:repo7abcdefghijklmnopqrs"


def test_the_plan_adds_updates_and_removes_only_what_differs() -> None:
    """Missing rows are created, changed ones updated, gone ones deleted (first); equal ones are left alone."""
    mirror = {
        "same": ("same", KNOT, HOST, ""),
        "changed": ("changed", KNOT, HOST, ""),
        "gone": ("gone", KNOT, HOST, ""),
    }
    snapshot = {
        "same": repo_record("same"),
        "changed": repo_record("changed", repo_did=REPO_DID),
        "new": repo_record("new"),
    }
    changes = plan(REPO, HOST, mirror, snapshot).changes
    assert [(c.rkey, c.operation, c.kind) for c in changes] == [
        ("gone", "delete", "removed"),
        ("changed", "update", "updated"),
        ("new", "create", "added"),
    ]
    assert changes[2].record == repo_record("new") and changes[0].record is None


def test_a_record_that_no_longer_names_this_spindle_is_applied_so_that_its_row_goes() -> None:
    """A repo record naming another spindle (or a member record another instance) becomes an update that removes
    the row, and nothing at all when the mirror has no row for it."""
    moved = plan(REPO, HOST, {"r": ("r", KNOT, HOST, "")}, {"r": repo_record("r", spindle="elsewhere")})
    assert moved.changes == [Change(REPO, "r", "update", "removed", repo_record("r", spindle="elsewhere"))]
    assert plan(REPO, HOST, {}, {"r": repo_record("r", spindle=None)}).changes == []
    other = plan(MEMBER, HOST, {}, {"m": member_record(MEMBER_DID, instance="other.example")})
    assert other.changes == []


def test_unreadable_and_malformed_records_change_nothing_and_are_reported() -> None:
    """None (unreadable) and records the parser refuses keep their rows as they are; their keys are listed."""
    mirror = {"a": (OTHER_DID, REPO_DID)}
    snapshot = {"a": {"subject": "not a did", "repo": REPO_DID}, "b": None}
    result = plan(COLLABORATOR, HOST, mirror, snapshot)
    assert result.changes == [] and result.unreadable == ["a", "b"]


def test_live_marks_say_what_changed_after_a_token_and_void_old_tokens_when_full() -> None:
    """A mark after the token wins; before it, not; past the size limit every older token is void."""
    marks = LiveMarks(max_entries=2)
    marks.mark(OTHER_DID, REPO, "early")
    token = marks.token()
    assert not marks.since(OTHER_DID, REPO, "early", token)
    marks.mark(OTHER_DID, REPO, "late")
    assert marks.since(OTHER_DID, REPO, "late", token)
    assert not marks.since(OTHER_DID, REPO, "untouched", token)
    marks.forget(token)
    assert len(marks) == 1
    fresh = marks.token()
    marks.mark(OTHER_DID, REPO, "x")
    marks.mark(OTHER_DID, REPO, "y")
    assert len(marks) == 0, "over the limit, the marks are dropped"
    assert marks.since(OTHER_DID, REPO, "untouched", fresh), "and a token from before is void"
    assert not marks.since(OTHER_DID, REPO, "untouched", marks.token())
