"""Comparing what a PDS holds with what the mirror holds, free of I/O: the changes that make them agree.

A snapshot is one collection of one repository as listed from its PDS (record
key → value, ``None`` for a record that is there but unreadable). Each record
is projected onto what the mirror keeps of it; the plan is one synthetic
commit per record that differs: a ``create`` for a record the mirror lacks,
an ``update`` for one it holds differently (or that no longer concerns this
spindle: applying it removes the row, as a live update would), a ``delete``
for a row whose record is gone. An unreadable or malformed record changes
nothing, as a malformed live record changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO
from tack_control.ingest.wire import BadRecord, parse_collaborator, parse_member, parse_repo


Snapshot = Mapping[str, "dict[str, Any] | None"]
Projection = tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One synthetic commit: ``kind`` (a metric label) is ``added``, ``updated`` or ``removed``."""

    collection: str
    rkey: str
    operation: str
    kind: str
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class Plan:
    """The changes, deletes first, and the record keys that could not be read."""

    changes: list[Change] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def project(collection: str, record: dict[str, Any]) -> Projection:
    """What the mirror keeps of a record; BadRecord when it is malformed."""
    if collection == MEMBER:
        member = parse_member(record)
        return (member.subject, member.instance)
    if collection == REPO:
        repo = parse_repo(record)
        return (repo.name, repo.knot, repo.spindle, repo.repo_did)
    if collection == COLLABORATOR:
        collab = parse_collaborator(record)
        return (collab.subject, collab.repo)
    raise ValueError(f"not a mirrored collection: {collection}")


def concerns(collection: str, projection: Projection, hostname: str) -> bool:
    """Whether the mirror keeps a row for this record: a member record or a repo record names this spindle."""
    if collection == MEMBER:
        return projection[1] == hostname
    if collection == REPO:
        return projection[2] == hostname
    return True


def plan(collection: str, hostname: str, mirror: Mapping[str, Projection], snapshot: Snapshot) -> Plan:
    """The changes that make ``mirror`` (one author's rows of ``collection``) agree with ``snapshot``."""
    result = Plan()
    for rkey in sorted(mirror.keys() - snapshot.keys()):
        result.changes.append(Change(collection, rkey, "delete", "removed"))
    for rkey, value in sorted(snapshot.items()):
        if value is None:
            result.unreadable.append(rkey)
            continue
        try:
            projection = project(collection, value)
        except BadRecord:
            result.unreadable.append(rkey)
            continue
        held = mirror.get(rkey)
        if not concerns(collection, projection, hostname):
            if held is not None:
                result.changes.append(Change(collection, rkey, "update", "removed", value))
        elif held is None:
            result.changes.append(Change(collection, rkey, "create", "added", value))
        elif held != projection:
            result.changes.append(Change(collection, rkey, "update", "updated", value))
    return result
