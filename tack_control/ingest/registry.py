"""The spindle's view of Tangled: members, repos and collaborators mirrored from Jetstream.

Records are keyed by (author DID, rkey) so creates, updates and deletes all
apply idempotently. Only the owner's member records count, and only for this
spindle's hostname. A repo is registered while its latest record names this
spindle; the knots of registered repos are the knots tack listens to.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from tack_control.ingest.wire import (
    BadRecord,
    JetstreamEvent,
    Trigger,
    parse_collaborator,
    parse_member,
    parse_repo,
)


MEMBER = "sh.tangled.spindle.member"
REPO = "sh.tangled.repo"
COLLABORATOR = "sh.tangled.repo.collaborator"
COLLECTIONS = (MEMBER, REPO, COLLABORATOR)


@dataclass(frozen=True)
class Applied:
    """What became of an applied event (a metric label), and whether the set of knots to follow changed."""

    outcome: str
    knots_changed: bool = False


class Registry:
    """Reads and writes the mirror tables; authorizes pipeline triggers."""

    def __init__(self, conn: sqlite3.Connection, hostname: str, owner: str) -> None:
        self.conn = conn
        self.hostname = hostname
        self.owner = owner
        self.members: set[str] = set()
        self.reload()

    def reload(self) -> None:
        """Re-read the member set from the database (after a rolled-back change)."""
        rows = self.conn.execute("SELECT subject FROM members WHERE did=?", (self.owner,)).fetchall()
        self.members = {r[0] for r in rows}

    def wanted(self, did: str) -> bool:
        """Whether records by ``did`` concern this spindle: the owner's and current members'."""
        return did == self.owner or did in self.members

    def knots(self) -> set[str]:
        """Knots hosting a repo registered on this spindle."""
        rows = self.conn.execute(
            "SELECT DISTINCT knot FROM repos WHERE spindle=?", (self.hostname,)
        ).fetchall()
        return {r[0] for r in rows}

    def apply(self, conn: sqlite3.Connection, event: JetstreamEvent) -> Applied:
        """Apply one commit inside the caller's transaction. BadRecord for malformed records."""
        if event.kind != "commit" or event.collection not in COLLECTIONS:
            return Applied("ignored")
        if not self.wanted(event.did):
            return Applied("filtered")
        key = (event.did, event.rkey)
        if event.collection == MEMBER:
            return self._apply_member(conn, event, key)
        if event.collection == REPO:
            return self._apply_repo(conn, event, key)
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

    def _apply_repo(self, conn: sqlite3.Connection, event: JetstreamEvent, key: tuple[str, str]) -> Applied:
        before = self._knots_in(conn)
        if event.operation == "delete":
            conn.execute("DELETE FROM repos WHERE did=? AND rkey=?", key)
            outcome = "repo_removed"
        else:
            assert event.record is not None
            repo = parse_repo(event.record)
            conn.execute(
                "INSERT INTO repos (did, rkey, name, knot, spindle) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (did, rkey) DO UPDATE SET"
                " name=excluded.name, knot=excluded.knot, spindle=excluded.spindle",
                (*key, repo.name, repo.knot, repo.spindle),
            )
            outcome = "repo_registered" if repo.spindle == self.hostname else "repo_elsewhere"
        return Applied(outcome, knots_changed=self._knots_in(conn) != before)

    def _knots_in(self, conn: sqlite3.Connection) -> set[str]:
        rows = conn.execute("SELECT DISTINCT knot FROM repos WHERE spindle=?", (self.hostname,)).fetchall()
        return {r[0] for r in rows}

    def authorize(self, source_knot: str, trigger: Trigger) -> str:
        """``"ok"`` if the trigger may run here, else the reason it may not (a metric label)."""
        if trigger.repo.knot != source_knot:
            return "wrong_knot"
        row = self.conn.execute(
            "SELECT 1 FROM repos WHERE knot=? AND did=? AND name=? AND spindle=? LIMIT 1",
            (source_knot, trigger.repo.did, trigger.repo.name, self.hostname),
        ).fetchone()
        if row is None:
            return "unregistered"
        if not self.wanted(trigger.repo.did):
            return "not_member"
        return "ok"


__all__ = ["COLLECTIONS", "Applied", "BadRecord", "Registry"]
