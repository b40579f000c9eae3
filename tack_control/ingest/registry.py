"""The spindle's view of Tangled: members, repositories and collaborators, and who may do what.

Records mirrored from Jetstream are keyed by (author DID, rkey) so creates,
updates and deletes all apply idempotently. Only the owner's member records
count, and only for this spindle's hostname.

A repository registers while its record names this spindle and its author is
the owner or a member. A record with a ``repoDid`` (current Tangled) is only
trusted once its knot has confirmed it (``describeRepo`` answering the same
owner and rkey; see :mod:`tack_control.ingest.verify`): until then it is
``pending``; a repo DID that another owner already registered is ``refused``.
A record without one is a 2025-protocol (``legacy``) repository, known by
knot, owner and name. The knots of legacy and verified repositories are the
knots tack follows.

Push rights on a repository (who may trigger, cancel, or have their pull
requests run) belong to its owner, to collaborators named by the owner's
``sh.tangled.repo.collaborator`` records, and to collaborators the repository's
own knot announced (``sh.tangled.repo.collaboratorUpdate``): :meth:`Registry.may_push`.

Records also arrive from reconciliation (:mod:`tack_control.ingest.backfill`),
through the same :meth:`Registry.apply`; live changes are marked
(:mod:`tack_control.ingest.livemarks`) so that a snapshot read meanwhile does
not undo them.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from tack_control import metrics
from tack_control.ingest.livemarks import LiveMarks
from tack_control.ingest.wire import (
    AclUpdate,
    BadRecord,
    JetstreamEvent,
    Trigger,
    is_did,
    parse_collaborator,
    parse_member,
    parse_repo,
)


log = logging.getLogger(__name__)

MEMBER = "sh.tangled.spindle.member"
REPO = "sh.tangled.repo"
COLLABORATOR = "sh.tangled.repo.collaborator"
COLLECTIONS = (MEMBER, REPO, COLLABORATOR)
FOLLOWED_STATES = ("legacy", "verified")


@dataclass(frozen=True)
class Applied:
    """What became of an applied event (a metric label), and whether the set of knots to follow changed."""

    outcome: str
    knots_changed: bool = False


@dataclass(frozen=True)
class Repo:
    """A registered repository."""

    owner: str
    rkey: str
    name: str
    knot: str
    repo_did: str
    state: str


class Registry:
    """Reads and writes the mirror tables; decides who may run what."""

    def __init__(self, conn: sqlite3.Connection, hostname: str, owner: str) -> None:
        self.conn = conn
        self.hostname = hostname
        self.owner = owner
        self.members: set[str] = set()
        self.live = LiveMarks()
        self.reload()

    def reload(self) -> None:
        """Re-read the member set from the database (after a rolled-back change)."""
        rows = self.conn.execute("SELECT subject FROM members WHERE did=?", (self.owner,)).fetchall()
        self.members = {r[0] for r in rows}

    def wanted(self, did: str) -> bool:
        """Whether records by ``did`` concern this spindle: the owner's and current members'."""
        return did == self.owner or did in self.members

    def knots(self) -> set[str]:
        """Knots hosting a repository this spindle follows (legacy or verified)."""
        return self._knots_in(self.conn)

    def _knots_in(self, conn: sqlite3.Connection) -> set[str]:
        rows = conn.execute(
            "SELECT DISTINCT knot FROM repos WHERE spindle=? AND state IN ('legacy', 'verified')",
            (self.hostname,),
        ).fetchall()
        return {r[0] for r in rows}

    def apply(self, conn: sqlite3.Connection, event: JetstreamEvent, *, live: bool = True) -> Applied:
        """Apply one commit inside the caller's transaction. BadRecord for malformed records.

        ``live``: the change comes from Jetstream (not from a snapshot) and is marked as such.
        """
        if event.kind != "commit" or event.collection not in COLLECTIONS:
            return Applied("ignored")
        if not self.wanted(event.did):
            return Applied("filtered")
        if live:
            self.live.mark(event.did, event.collection, event.rkey)
        key = (event.did, event.rkey)
        if event.collection == MEMBER:
            return self._apply_member(conn, event, key)
        if event.collection == REPO:
            before = self._knots_in(conn)
            outcome = self._apply_repo(conn, event, key)
            return Applied(outcome, knots_changed=self._knots_in(conn) != before)
        if event.operation == "delete":
            conn.execute("DELETE FROM collaborators WHERE did=? AND rkey=?", key)
            return Applied("collaborator_removed")
        assert event.record is not None
        collab = parse_collaborator(event.record)
        conn.execute(
            "INSERT INTO collaborators (did, rkey, subject, repo) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (did, rkey) DO UPDATE SET subject=excluded.subject, repo=excluded.repo",
            (*key, collab.subject, collab.repo),
        )
        return Applied("collaborator_saved")

    def _apply_member(self, conn: sqlite3.Connection, event: JetstreamEvent, key: tuple[str, str]) -> Applied:
        if event.operation == "delete":
            conn.execute("DELETE FROM members WHERE did=? AND rkey=?", key)
            outcome = "member_removed"
        else:
            assert event.record is not None
            member = parse_member(event.record)
            if event.did != self.owner:
                return Applied("member_not_by_owner")
            if member.instance != self.hostname:
                conn.execute("DELETE FROM members WHERE did=? AND rkey=?", key)
                outcome = "member_other_spindle"
            else:
                conn.execute(
                    "INSERT INTO members (did, rkey, subject, instance) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (did, rkey) DO UPDATE SET subject=excluded.subject, instance=excluded.instance",
                    (*key, member.subject, member.instance),
                )
                outcome = "member_saved"
        rows = conn.execute("SELECT subject FROM members WHERE did=?", (self.owner,)).fetchall()
        self.members = {r[0] for r in rows}
        return Applied(outcome)

    def _apply_repo(self, conn: sqlite3.Connection, event: JetstreamEvent, key: tuple[str, str]) -> str:
        previous = conn.execute(
            "SELECT knot, repo_did, state, spindle FROM repos WHERE did=? AND rkey=?", key
        ).fetchone()
        if event.operation == "delete":
            conn.execute("DELETE FROM repos WHERE did=? AND rkey=?", key)
            return "repo_removed"
        assert event.record is not None
        repo = parse_repo(event.record)
        if repo.spindle != self.hostname:
            conn.execute("DELETE FROM repos WHERE did=? AND rkey=?", key)
            return "repo_elsewhere"
        state, reason = "legacy", ""
        if repo.repo_did:
            state, reason = self._claim(conn, event.did, repo.repo_did)
            if (
                state == "pending"
                and previous is not None
                and previous[2] == "verified"
                and (previous[0], previous[1], previous[3]) == (repo.knot, repo.repo_did, self.hostname)
            ):
                state = "verified"
        conn.execute(
            "INSERT INTO repos (did, rkey, name, knot, spindle, repo_did, state, reason, next_check_ns, checks)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0) ON CONFLICT (did, rkey) DO UPDATE SET name=excluded.name,"
            " knot=excluded.knot, spindle=excluded.spindle, repo_did=excluded.repo_did, state=excluded.state,"
            " reason=excluded.reason, next_check_ns=0, checks=0",
            (*key, repo.name, repo.knot, repo.spindle, repo.repo_did, state, reason),
        )
        if state == "refused":
            refuse(event.did, event.rkey, repo.repo_did, reason)
            return "repo_refused"
        return {"legacy": "repo_registered", "pending": "repo_pending", "verified": "repo_registered"}[state]

    def _claim(self, conn: sqlite3.Connection, owner: str, repo_did: str) -> tuple[str, str]:
        """The state a record by ``owner`` claiming ``repo_did`` starts in."""
        other = conn.execute(
            "SELECT did FROM repos WHERE repo_did=? AND did<>? AND state IN ('pending', 'verified') LIMIT 1",
            (repo_did, owner),
        ).fetchone()
        if other is not None:
            return "refused", f"repo DID already registered here by {other[0]}"
        return "pending", ""

    def mirrored(self, conn: sqlite3.Connection, did: str, collection: str) -> dict[str, tuple[str, ...]]:
        """What the mirror holds of ``did``'s records of ``collection``, by rkey, as
        :func:`tack_control.ingest.snapshot.project` projects a record."""
        query = {
            MEMBER: "SELECT rkey, subject, instance FROM members WHERE did=?",
            REPO: "SELECT rkey, name, knot, spindle, repo_did FROM repos WHERE did=?",
            COLLABORATOR: "SELECT rkey, subject, repo FROM collaborators WHERE did=?",
        }[collection]
        return {row[0]: tuple(row[1:]) for row in conn.execute(query, (did,))}

    # Verification (see verify.py for the knot round trip)

    def pending(self, now_ns: int, limit: int = 16) -> list[Repo]:
        """Repositories waiting for their knot's confirmation whose next check is due."""
        rows = self.conn.execute(
            "SELECT did, rkey, name, knot, repo_did, state FROM repos WHERE state='pending' AND spindle=?"
            " AND next_check_ns<=? ORDER BY next_check_ns LIMIT ?",
            (self.hostname, now_ns, limit),
        ).fetchall()
        return [Repo(*r) for r in rows]

    def next_pending_ns(self) -> int | None:
        """When the next pending check is due (None: nothing is pending)."""
        row = self.conn.execute(
            "SELECT MIN(next_check_ns) FROM repos WHERE state='pending' AND spindle=?", (self.hostname,)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def settle(self, conn: sqlite3.Connection, repo: Repo, verified: bool, reason: str = "") -> bool:
        """Record the knot's answer for a pending repository; True when the set of knots to follow changed.

        A record that changed while the knot was asked (the row no longer says
        the same repo DID and knot) is left pending for a fresh check.
        """
        before = self._knots_in(conn)
        if verified:
            claimed, why = self._claim(conn, repo.owner, repo.repo_did)
            verified, reason = claimed == "pending", why
        changed = conn.execute(
            "UPDATE repos SET state=?, reason=? WHERE did=? AND rkey=? AND state='pending' AND repo_did=? AND knot=?",
            ("verified" if verified else "refused", reason, repo.owner, repo.rkey, repo.repo_did, repo.knot),
        ).rowcount
        if changed and not verified:
            refuse(repo.owner, repo.rkey, repo.repo_did, reason)
        return self._knots_in(conn) != before

    def retry_later(self, conn: sqlite3.Connection, repo: Repo, at_ns: int, reason: str) -> None:
        """The knot could not answer: ask again at ``at_ns``."""
        conn.execute(
            "UPDATE repos SET next_check_ns=?, checks=checks+1, reason=? WHERE did=? AND rkey=? AND state='pending'",
            (at_ns, reason, repo.owner, repo.rkey),
        )

    # Lookups

    def by_repo_did(self, repo_did: str) -> Repo | None:
        """The verified repository with this DID, if registered here."""
        row = self.conn.execute(
            "SELECT did, rkey, name, knot, repo_did, state FROM repos"
            " WHERE repo_did=? AND state='verified' AND spindle=? LIMIT 1",
            (repo_did, self.hostname),
        ).fetchone()
        if row is None or not self.wanted(row[0]):
            return None
        return Repo(*row)

    def legacy_repo_did(self, knot: str, owner: str, name: str) -> str:
        """The repo DID of a repository a 2025-protocol trigger names by owner and name ("" when none is known)."""
        row = self.conn.execute(
            "SELECT repo_did FROM repos WHERE knot=? AND did=? AND name=? AND spindle=? AND state='verified' LIMIT 1",
            (knot, owner, name, self.hostname),
        ).fetchone()
        return "" if row is None else str(row[0])

    def authorize(self, source_knot: str, trigger: Trigger) -> str:
        """For a knot's ``sh.tangled.pipeline`` trigger: ``"ok"``, or why it may not run (a metric label)."""
        if trigger.repo.knot != source_knot:
            return "wrong_knot"
        row = self.conn.execute(
            "SELECT 1 FROM repos WHERE knot=? AND did=? AND name=? AND spindle=?"
            " AND state IN ('legacy', 'verified') LIMIT 1",
            (source_knot, trigger.repo.did, trigger.repo.name, self.hostname),
        ).fetchone()
        if row is None:
            return "unregistered"
        if not self.wanted(trigger.repo.did):
            return "not_member"
        return "ok"

    def may_push(self, repo_did: str, subject: str) -> bool:
        """Whether ``subject`` has push rights on the registered repository ``repo_did``.

        The owner has them; so has whoever the owner named in a collaborator
        record for this repo DID, and whoever the repository's knot announced as
        a collaborator. Knot membership alone grants nothing.
        """
        repo = self.by_repo_did(repo_did)
        if repo is None or not is_did(subject):
            return False
        if subject == repo.owner:
            return True
        row = self.conn.execute(
            "SELECT 1 FROM collaborators WHERE did=? AND repo=? AND subject=?"
            " UNION ALL SELECT 1 FROM knot_collaborators WHERE repo_did=? AND subject=? AND knot=? LIMIT 1",
            (repo.owner, repo_did, subject, repo_did, subject, repo.knot),
        ).fetchone()
        return row is not None

    def may_push_somewhere(self, subject: str) -> bool:
        """Whether ``subject`` has push rights on any repository registered here (see :meth:`may_push`)."""
        rows = self.conn.execute(
            "SELECT repo_did FROM repos WHERE did=? AND state='verified' AND spindle=?"
            " UNION SELECT repo FROM collaborators WHERE subject=?"
            " UNION SELECT repo_did FROM knot_collaborators WHERE subject=?",
            (subject, self.hostname, subject, subject),
        ).fetchall()
        return any(self.may_push(row[0], subject) for row in rows)

    # The knot's own announcements

    def apply_knot_acl(self, conn: sqlite3.Connection, knot: str, update: AclUpdate) -> str:
        """Apply a knot's collaboratorUpdate (``repo_did`` set) or memberUpdate; returns the outcome label."""
        if not update.repo_did:
            if update.op == "add":
                conn.execute(
                    "INSERT OR IGNORE INTO knot_members (knot, subject) VALUES (?, ?)", (knot, update.subject)
                )
            else:
                conn.execute("DELETE FROM knot_members WHERE knot=? AND subject=?", (knot, update.subject))
            return "member_update"
        repo = self.by_repo_did(update.repo_did)
        if repo is None:
            return "unregistered"
        if repo.knot != knot:
            return "wrong_knot"
        if update.op == "add":
            conn.execute(
                "INSERT INTO knot_collaborators (repo_did, subject, knot) VALUES (?, ?, ?)"
                " ON CONFLICT (repo_did, subject) DO UPDATE SET knot=excluded.knot",
                (update.repo_did, update.subject, knot),
            )
        else:
            conn.execute(
                "DELETE FROM knot_collaborators WHERE repo_did=? AND subject=?",
                (update.repo_did, update.subject),
            )
        return "collaborator_update"


def refuse(owner: str, rkey: str, repo_did: str, reason: str) -> None:
    """Log and count a refused registration."""
    metrics.REGISTRATIONS_REFUSED.labels(_reason_label(reason)).inc()
    log.warning(
        "repository registration refused",
        extra={"did": owner, "rkey": rkey, "repo_did": repo_did, "reason": reason},
    )


def _reason_label(reason: str) -> str:
    """A bounded metric label for a refusal reason."""
    for prefix, label in (
        ("repo DID already registered", "repo_did_claimed"),
        ("knot says the owner", "owner_mismatch"),
        ("knot says the record key", "rkey_mismatch"),
        ("knot does not know", "unknown_to_knot"),
        ("knot answered", "knot_mismatch"),
    ):
        if reason.startswith(prefix):
            return label
    return "other"


__all__ = ["COLLECTIONS", "Applied", "BadRecord", "Registry", "Repo"]
