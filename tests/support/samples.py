"""Sample frames and records from the protocol documents, and builders shared by the control plane's unit tests."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import time
from typing import Any

from tack_common.sqlite import Transaction
from tack_control.engine.eventlog import EventLog
from tack_control.engine.pipelines import PIPELINE_NSID, Pipelines
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.intake import Intake
from tack_control.ingest.registry import MEMBER, REPO, Applied, Registry
from tack_control.ingest.routing import Route, route
from tack_control.ingest.wire import (
    JetstreamEvent,
    Trigger,
    TriggerRepo,
)


HOST = "spindle.example.com"
OWNER = "did:plc:wshs7t2ige3rnslshcvnkjbp"
MEMBER_DID = "did:plc:member2ige3rnslshcvnkjbp"
OTHER_DID = "did:plc:stranger3rnslshcvnkjbp"
KNOT = "knot1.tangled.sh"
PIPELINE_RKEY = "3m7abcxyz2k22"

# The protocol doc's example frames, verbatim (docs/tangled-protocol.md §2, §4, §5, §6).
PUSH_FRAME = r"""{"event":{"$type":"","triggerMetadata":{"kind":"push","push":{"newSha":"9f2c1e0d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392","oldSha":"1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d","ref":"refs/heads/main"},"repo":{"defaultBranch":"","did":"did:plc:wshs7t2ige3rnslshcvnkjbp","knot":"knot1.tangled.sh","repo":"hello"}},"workflows":[{"clone":{"depth":0,"skip":false,"submodules":false},"engine":"nixery","name":"build.yml","raw":"when:\n  - event: [\"push\"]\n    branch: [\"main\"]\nengine: \"nixery\"\nsteps:\n  - name: build\n    command: go build ./...\n"}]},"nsid":"sh.tangled.pipeline","rkey":"3m7abcxyz2k22"}"""
PR_TRIGGER = r"""{"kind":"pull_request","pullRequest":{"action":"create","sourceBranch":"feature-x","sourceSha":"<40 hex>","targetBranch":"main"},"repo":{"defaultBranch":"","did":"did:plc:...","knot":"knot1.tangled.sh","repo":"hello"}}"""
JETSTREAM_COMMIT = """{
  "did": "did:plc:abc123...",
  "time_us": 1764753711123456,
  "kind": "commit",
  "commit": {
    "rev": "3m7...",
    "operation": "create",
    "collection": "sh.tangled.repo",
    "rkey": "3m7abcxyz2k22",
    "record": { "$type": "sh.tangled.repo", "name": "hello", "knot": "knot1.tangled.sh",
                "spindle": "spindle.example.com", "createdAt": "2025-12-01T10:00:00Z" },
    "cid": "bafyrei..."
  }
}"""
STATUS_EXAMPLE = r"""{"$type":"","createdAt":"2025-12-03T09:21:51Z","error":"workflow failed","exitCode":-1,
 "pipeline":"at://did:web:knot1.tangled.sh/sh.tangled.pipeline/3m7abcxyz2k22",
 "status":"failed","workflow":"build.yml"}"""
EVENTS_FRAME = r"""{"event":{"$type":"","createdAt":"2025-12-03T09:21:51Z","pipeline":"at://did:web:knot1.tangled.sh/sh.tangled.pipeline/3m7abcxyz2k22","status":"running","workflow":"build.yml"},"nsid":"sh.tangled.pipeline.status","rkey":"3m7abd4q3sk22"}"""

RFC3339_SECONDS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def push_event() -> dict[str, Any]:
    """A fresh copy of the doc's push pipeline record."""
    event = json.loads(PUSH_FRAME)["event"]
    assert isinstance(event, dict)
    return event


def envelope(event: dict[str, Any], rkey: str = PIPELINE_RKEY, nsid: str = PIPELINE_NSID) -> str:
    """A knot /events frame around ``event``."""
    return json.dumps({"event": event, "nsid": nsid, "rkey": rkey})


def epoch_s(created_at: str) -> int:
    """Unix seconds of a whole-second RFC 3339 ``Z`` timestamp."""
    assert RFC3339_SECONDS_Z.fullmatch(created_at), created_at
    return int(dt.datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


def apply(registry: Registry, event: JetstreamEvent) -> Applied:
    """Apply one Jetstream event in its own transaction."""
    with Transaction(registry.conn) as conn:
        return registry.apply(conn, event)


def commit(
    did: str, collection: str, rkey: str, operation: str = "create", record: dict[str, Any] | None = None
) -> JetstreamEvent:
    """A Jetstream commit event."""
    return JetstreamEvent(
        did=did,
        time_us=1_764_753_711_123_456,
        kind="commit",
        operation=operation,
        collection=collection,
        rkey=rkey,
        record=record if operation != "delete" else None,
    )


def member_record(subject: str, instance: str = HOST) -> dict[str, Any]:
    """A ``sh.tangled.spindle.member`` record."""
    return {"$type": MEMBER, "subject": subject, "instance": instance, "createdAt": "2025-12-01T10:00:00Z"}


def repo_record(
    name: str = "hello", knot: str = KNOT, spindle: str | None = HOST, repo_did: str | None = None
) -> dict[str, Any]:
    """A ``sh.tangled.repo`` record (with ``repoDid``: a current-Tangled repository)."""
    record: dict[str, Any] = {"$type": REPO, "name": name, "knot": knot, "createdAt": "2025-12-01T10:00:00Z"}
    if spindle is not None:
        record["spindle"] = spindle
    if repo_did is not None:
        record["repoDid"] = repo_did
    return record


def trigger(did: str = OWNER, knot: str = KNOT, name: str = "hello") -> Trigger:
    """A push trigger for the repo (knot, did, name)."""
    return Trigger(
        kind="push",
        repo=TriggerRepo(knot=knot, did=did, name=name, default_branch=""),
        ref="refs/heads/main",
        new_sha="9f2c1e0d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392",
    )


def add_workflow(conn: sqlite3.Connection, name: str, knot: str = KNOT, rkey: str = PIPELINE_RKEY) -> int:
    """Insert a workflow row (as intake does) and return its id."""
    now = time.time_ns()
    cur = conn.execute(
        "INSERT INTO workflows (knot, rkey, name, provider, status, dispatch, created_ns, updated_ns)"
        " VALUES (?, ?, ?, 'stub', '', 'queued', ?, ?)",
        (knot, rkey, name, now, now),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def published(events: EventLog) -> list[dict[str, Any]]:
    """The records of every committed event, oldest first."""
    return [json.loads(frame)["event"] for _, frame in events.after(0, 1_000_000)]


def timed_route(raw: str, providers: list[str], default: str | None) -> Route:
    """route(), asserting that it answers well within a second."""
    start = time.perf_counter()
    result = route(raw, providers, default)
    assert time.perf_counter() - start < 0.5
    return result


PROVIDERS = ["stub", "buildkite"]


class World:
    """A registry with a registered repo, a status book and an intake routing to stub and buildkite."""

    def __init__(self, conn: sqlite3.Connection, default: str | None = None) -> None:
        self.conn = conn
        self.events = EventLog(conn)
        self.book = StatusBook(conn, self.events)
        self.registry = Registry(conn, HOST, OWNER)
        apply(self.registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
        apply(self.registry, commit(OWNER, REPO, "r1", record=repo_record()))
        apply(self.registry, commit(MEMBER_DID, REPO, "r2", record=repo_record("tool", "localhost:6444")))
        self.queued = 0
        self.intake = Intake(
            self.registry, self.book, Pipelines(self.book, self.events), PROVIDERS, default, self._on_queued
        )

    def _on_queued(self) -> None:
        self.queued += 1

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def counts(self) -> tuple[int, int, int, int]:
        """Rows in pipelines, workflows, events and status_queue."""
        return (
            self.count("pipelines"),
            self.count("workflows"),
            self.count("events"),
            self.count("status_queue"),
        )


def workflow_entry(name: str, raw: str) -> dict[str, Any]:
    return {
        "clone": {"depth": 1, "skip": False, "submodules": False},
        "engine": "nixery",
        "name": name,
        "raw": raw,
    }
