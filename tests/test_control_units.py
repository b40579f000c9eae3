"""Unit tests of the control plane's parsers, routing, registry, status book, event log, intake and config.

No sockets and no processes: every test works on a real SQLite file under ``tmp_path``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from tack_common import loglines
from tack_common.env import ConfigError
from tack_common.pb import provider_pb2 as pb
from tack_common.sqlite import Transaction
from tack_common.tid import is_tid, parse_tid, tid_from_time_us
from tack_control.config import Settings, parse_providers
from tack_control.engine.db import open_db
from tack_control.engine.dispatch import Queued, spawn_request
from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tack_control.engine.statuses import StatusBook, pipeline_uri, status_record
from tack_control.ingest.intake import PIPELINE_NSID, Intake
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Applied, Registry
from tack_control.ingest.routing import MAX_ALIASES, MAX_DEPTH, MAX_NODES, MAX_YAML_BYTES, Route, route
from tack_control.ingest.wire import (
    MAX_FIELD,
    MAX_RAW_BYTES,
    MAX_WORKFLOWS,
    BadRecord,
    JetstreamEvent,
    Trigger,
    TriggerRepo,
    load_json,
    parse_collaborator,
    parse_jetstream,
    parse_knot_frame,
    parse_member,
    parse_pipeline,
    parse_repo,
)
from tack_control.web import tangled_json
from tack_control.web.events import start_cursor
from tack_control.web.logframes import LogFrames
from tack_control.web.sender import Framed


HOST = "spindle.example.com"
OWNER = "did:plc:wshs7t2ige3rnslshcvnkjbp"
MEMBER_DID = "did:plc:member2ige3rnslshcvnkjbp"
OTHER_DID = "did:plc:stranger3rnslshcvnkjbp"
KNOT = "knot1.tangled.sh"
PIPELINE_RKEY = "3m7abcxyz2k22"

# The protocol doc's example frames, verbatim (tangled-protocol.md §2, §4, §5, §6).
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


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The control plane database in a fresh file."""
    connection = open_db(str(tmp_path / "tack.db"))
    yield connection
    connection.close()


@pytest.fixture
def events(conn: sqlite3.Connection) -> EventLog:
    """The event log on the test database."""
    return EventLog(conn)


@pytest.fixture
def book(conn: sqlite3.Connection, events: EventLog) -> StatusBook:
    """The status book on the test database."""
    return StatusBook(conn, events)


@pytest.fixture
def registry(conn: sqlite3.Connection) -> Registry:
    """A registry for HOST owned by OWNER."""
    return Registry(conn, HOST, OWNER)


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


def repo_record(name: str = "hello", knot: str = KNOT, spindle: str | None = HOST) -> dict[str, Any]:
    """A ``sh.tangled.repo`` record."""
    record: dict[str, Any] = {"$type": REPO, "name": name, "knot": knot, "createdAt": "2025-12-01T10:00:00Z"}
    if spindle is not None:
        record["spindle"] = spindle
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


# records: the protocol doc's frames


def test_knot_push_frame_from_the_doc_parses() -> None:
    """The doc's example knot push frame parses into its envelope, trigger and workflow."""
    message = parse_knot_frame(PUSH_FRAME)
    assert (message.rkey, message.nsid) == (PIPELINE_RKEY, PIPELINE_NSID)
    pipeline = parse_pipeline(message.event)
    t = pipeline.trigger
    assert (t.kind, t.ref, t.new_sha, t.old_sha) == (
        "push",
        "refs/heads/main",
        "9f2c1e0d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392",
        "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
    )
    assert t.repo == TriggerRepo(knot=KNOT, did=OWNER, name="hello", default_branch="")
    [wf] = pipeline.workflows
    assert (wf.name, wf.engine, wf.clone.skip, wf.clone.depth, wf.clone.submodules) == (
        "build.yml",
        "nixery",
        False,
        0,
        False,
    )
    assert wf.raw.startswith('when:\n  - event: ["push"]\n') and wf.raw.endswith("go build ./...\n")


def test_knot_frame_is_accepted_as_utf8_bytes() -> None:
    """A knot frame given as UTF-8 bytes parses like the text frame."""
    assert parse_knot_frame(PUSH_FRAME.encode()) == parse_knot_frame(PUSH_FRAME)


def test_pull_request_trigger_from_the_doc_parses() -> None:
    """The doc's example pull-request triggerMetadata parses, placeholders and all."""
    event = push_event()
    event["triggerMetadata"] = json.loads(PR_TRIGGER)
    t = parse_pipeline(event).trigger
    assert (t.kind, t.action, t.source_branch, t.source_sha, t.target_branch) == (
        "pull_request",
        "create",
        "feature-x",
        "<40 hex>",
        "main",
    )
    assert (t.repo.did, t.repo.knot, t.repo.name) == ("did:plc:...", KNOT, "hello")
    assert t.ref == t.new_sha == ""


def test_manual_trigger_inputs_parse() -> None:
    """A manual trigger carries its inputs as (key, value) pairs; value may be absent."""
    event = push_event()
    event["triggerMetadata"] = {
        "kind": "manual",
        "manual": {"inputs": [{"key": "A", "value": "1"}, {"key": "B"}]},
        "repo": {"knot": KNOT, "did": OWNER, "repo": "hello"},
    }
    assert parse_pipeline(event).trigger.inputs == (("A", "1"), ("B", ""))


def test_jetstream_commit_from_the_doc_parses() -> None:
    """The doc's example Jetstream commit parses with its record."""
    event = parse_jetstream(JETSTREAM_COMMIT)
    assert (event.did, event.time_us, event.kind, event.operation, event.collection, event.rkey) == (
        "did:plc:abc123...",
        1764753711123456,
        "commit",
        "create",
        "sh.tangled.repo",
        "3m7abcxyz2k22",
    )
    assert event.record is not None
    assert parse_repo(event.record).spindle == HOST


def test_jetstream_delete_without_record_parses() -> None:
    """A delete commit has no record and no cid, and parses to record None."""
    doc = json.loads(JETSTREAM_COMMIT)
    doc["commit"]["operation"] = "delete"
    del doc["commit"]["record"], doc["commit"]["cid"]
    event = parse_jetstream(json.dumps(doc))
    assert (event.operation, event.record, event.rkey) == ("delete", None, "3m7abcxyz2k22")


@pytest.mark.parametrize("kind", ["account", "identity"])
def test_jetstream_non_commit_kinds_parse_without_commit(kind: str) -> None:
    """Account and identity events parse with only did, time and kind."""
    event = parse_jetstream(json.dumps({"did": OWNER, "time_us": 5, "kind": kind, kind: {"x": 1}}))
    assert (event.kind, event.collection, event.record) == (kind, "", None)


def test_type_empty_string_and_unknown_fields_are_tolerated() -> None:
    """`$type: ""` and unknown fields at every level are ignored."""
    frame = json.loads(PUSH_FRAME)
    frame["extra"] = {"x": [1, 2]}
    frame["event"]["$type"] = ""
    frame["event"]["future"] = True
    frame["event"]["triggerMetadata"]["new"] = None
    frame["event"]["triggerMetadata"]["repo"]["labels"] = ["a"]
    frame["event"]["workflows"][0]["when"] = "x"
    frame["event"]["workflows"][0]["clone"]["filter"] = "blob:none"
    assert parse_pipeline(parse_knot_frame(json.dumps(frame)).event) == parse_pipeline(push_event())
    jet = json.loads(JETSTREAM_COMMIT)
    jet["commit"]["record"]["$type"] = ""
    jet["commit"]["unknown"] = 1
    jet["unknown"] = {}
    assert parse_jetstream(json.dumps(jet)).rkey == "3m7abcxyz2k22"


def test_workflow_clone_defaults_when_absent() -> None:
    """A workflow without clone options gets skip false, depth 0, submodules false."""
    event = push_event()
    del event["workflows"][0]["clone"]
    assert parse_pipeline(event).workflows[0].clone.depth == 0


def test_pipeline_without_workflows_parses_empty() -> None:
    """A null or missing workflows list is an empty pipeline."""
    event = push_event()
    event["workflows"] = None
    assert parse_pipeline(event).workflows == ()


def _set(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``doc`` with the dotted ``path`` set to ``value`` (or deleted when value is ...)."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("triggerMetadata", ..., "triggerMetadata"),
        ("triggerMetadata", [], "triggerMetadata"),
        ("triggerMetadata.repo", ..., "triggerMetadata.repo"),
        ("triggerMetadata.repo.knot", "", "triggerMetadata.repo.knot"),
        ("triggerMetadata.repo.did", 7, "triggerMetadata.repo.did"),
        ("triggerMetadata.repo.repo", ..., "triggerMetadata.repo.repo"),
        ("triggerMetadata.repo.defaultBranch", 1, "triggerMetadata.repo.defaultBranch"),
        ("triggerMetadata.kind", "deploy", "triggerMetadata.kind"),
        ("triggerMetadata.kind", None, "triggerMetadata.kind"),
        ("triggerMetadata.push", ..., "triggerMetadata.push"),
        ("triggerMetadata.push.ref", "", "triggerMetadata.push.ref"),
        ("triggerMetadata.push.newSha", ..., "triggerMetadata.push.newSha"),
        ("triggerMetadata.push.newSha", "x" * (MAX_FIELD + 1), "triggerMetadata.push.newSha"),
        ("workflows", {"a": 1}, "workflows"),
        ("workflows", [None], "workflows[0]"),
        ("workflows.0.name", "a/b.yml", "workflows[0].name"),
        ("workflows.0.name", "..", "workflows[0].name"),
        ("workflows.0.name", "", "workflows[0].name"),
        ("workflows.0.engine", ["nixery"], "workflows[0].engine"),
        ("workflows.0.raw", 5, "workflows[0].raw"),
        ("workflows.0.raw", "x" * (MAX_RAW_BYTES + 1), "workflows[0].raw"),
        ("workflows.0.clone", "deep", "workflows[0].clone"),
        ("workflows.0.clone.depth", -1, "workflows[0].clone.depth"),
        ("workflows.0.clone.depth", 1.5, "workflows[0].clone.depth"),
        ("workflows.0.clone.depth", True, "workflows[0].clone.depth"),
    ],
)
def test_malformed_pipeline_names_the_field(path: str, value: object, field: str) -> None:
    """A malformed pipeline record raises BadRecord naming the field at fault."""
    with pytest.raises(BadRecord) as info:
        parse_pipeline(_set(push_event(), path, value))
    assert str(info.value).startswith(field + ":") or str(info.value).startswith(field + ".")


def test_pipeline_with_duplicate_or_too_many_workflows_is_rejected() -> None:
    """Two workflows with one name, or more than MAX_WORKFLOWS, are rejected under `workflows`."""
    event = push_event()
    event["workflows"].append(copy.deepcopy(event["workflows"][0]))
    with pytest.raises(BadRecord, match=r"^workflows: duplicate"):
        parse_pipeline(event)
    event["workflows"] = [dict(event["workflows"][0], name=f"w{i}.yml") for i in range(MAX_WORKFLOWS + 1)]
    with pytest.raises(BadRecord, match=r"^workflows: more than"):
        parse_pipeline(event)


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("", "frame"),
        ("not json", "frame"),
        ("[1, 2]", "frame"),
        ("null", "frame"),
        (b"\xff\xfe{}", "frame"),
        ("[" * 100_000, "frame"),
        ('{"nsid": "sh.tangled.pipeline", "event": {}}', "envelope.rkey"),
        ('{"rkey": "a/b", "nsid": "sh.tangled.pipeline", "event": {}}', "envelope.rkey"),
        ('{"rkey": "..", "nsid": "sh.tangled.pipeline", "event": {}}', "envelope.rkey"),
        ('{"rkey": "3m7abcxyz2k22", "event": {}}', "envelope.nsid"),
        ('{"rkey": "3m7abcxyz2k22", "nsid": "sh.tangled.pipeline"}', "envelope.event"),
        ('{"rkey": "3m7abcxyz2k22", "nsid": "sh.tangled.pipeline", "event": "x"}', "envelope.event"),
    ],
)
def test_malformed_knot_frame_names_the_field(frame: str | bytes, field: str) -> None:
    """A malformed knot frame raises BadRecord naming the part at fault."""
    with pytest.raises(BadRecord, match=rf"^{re.escape(field)}:"):
        parse_knot_frame(frame)


def test_oversized_frame_is_rejected_before_parsing() -> None:
    """A frame over MAX_FRAME_BYTES is rejected without being decoded."""
    with pytest.raises(BadRecord, match=r"^frame: larger than"):
        load_json('{"a":"' + "x" * (4 << 20) + '"}')


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"time_us": 0}, "time_us"),
        ({"time_us": -5}, "time_us"),
        ({"time_us": "1"}, "time_us"),
        ({"time_us": True}, "time_us"),
        ({"time_us": 1.5}, "time_us"),
        ({"did": ""}, "event.did"),
        ({"did": None}, "event.did"),
        ({"kind": 3}, "event.kind"),
        ({"commit": None}, "commit"),
        ({"commit": {"operation": "create", "collection": REPO, "rkey": "r"}}, "commit.record"),
        ({"commit": {"operation": "upsert", "collection": REPO, "rkey": "r"}}, "commit.operation"),
        ({"commit": {"operation": "delete", "rkey": "r"}}, "commit.collection"),
        ({"commit": {"operation": "delete", "collection": REPO}}, "commit.rkey"),
        (
            {"commit": {"operation": "create", "collection": REPO, "rkey": "r", "record": [1]}},
            "commit.record",
        ),
    ],
)
def test_malformed_jetstream_event_names_the_field(change: dict[str, Any], field: str) -> None:
    """A malformed Jetstream event raises BadRecord naming the field at fault."""
    doc = json.loads(JETSTREAM_COMMIT) | change
    with pytest.raises(BadRecord, match=rf"^{re.escape(field)}:"):
        parse_jetstream(json.dumps(doc))


@pytest.mark.parametrize(
    ("parse", "record", "field"),
    [
        (parse_member, {"instance": HOST}, "member.subject"),
        (parse_member, {"subject": "alice.bsky.social", "instance": HOST}, "member.subject"),
        (parse_member, {"subject": OWNER}, "member.instance"),
        (parse_repo, {"name": "hello"}, "repo.knot"),
        (parse_repo, {"name": "hello", "knot": "https://knot/"}, "repo.knot"),
        (parse_repo, {"knot": KNOT}, "repo.name"),
        (parse_repo, {"name": "hello", "knot": KNOT, "spindle": 5}, "repo.spindle"),
        (parse_collaborator, {"repo": "at://x"}, "collaborator.subject"),
        (parse_collaborator, {"subject": OWNER}, "collaborator.repo"),
    ],
)
def test_malformed_jetstream_record_names_the_field(
    parse: Callable[[dict[str, Any]], object], record: dict[str, Any], field: str
) -> None:
    """A malformed member, repo or collaborator record raises BadRecord naming the field."""
    with pytest.raises(BadRecord, match=rf"^{re.escape(field)}:"):
        parse(record)


def test_repo_record_without_spindle_parses_empty_spindle() -> None:
    """A repo record with no `spindle` field parses with spindle ''; a knot may carry a port."""
    repo = parse_repo(repo_record(knot="localhost:6444", spindle=None))
    assert (repo.knot, repo.spindle) == ("localhost:6444", "")


def test_lone_surrogates_in_record_strings_are_bad_records() -> None:
    """A string holding a lone surrogate (not encodable as UTF-8) is a BadRecord naming the field."""
    with pytest.raises(BadRecord, match=r"^workflows\[0\]\.name:"):
        parse_pipeline(_set(push_event(), "workflows.0.name", "a\ud800.yml"))
    with pytest.raises(BadRecord, match=r"^triggerMetadata\.repo\.did:"):
        parse_pipeline(_set(push_event(), "triggerMetadata.repo.did", "did:plc:\udfff"))
    with pytest.raises(BadRecord, match=r"^commit\.rkey:"):
        parse_jetstream(JETSTREAM_COMMIT.replace('"rkey": "3m7abcxyz2k22"', '"rkey": "3m7\\ud800"'))


# routing

PROVIDERS = ["stub", "buildkite"]


def test_first_key_under_tack_picks_the_provider() -> None:
    """The first key under `tack:` names the provider; later keys do not matter."""
    raw = "engine: nixery\ntack:\n  buildkite:\n    pipeline: deploy\n  stub: {}\n"
    assert timed_route(raw, PROVIDERS, "stub") == Route("buildkite", {"pipeline": "deploy"}, {})


def test_provider_config_mapping_is_passed_through_as_json() -> None:
    """The provider's mapping is passed through, keys stringified and dates made text."""
    raw = (
        "tack:\n  stub:\n    steps:\n      - name: a\n        lines: [x, y]\n        seconds: 0.5\n"
        "    outcome: failed\n    exit_code: 3\n    1: one\n    when: 2025-12-01\n    empty: null\n"
    )
    result = timed_route(raw, PROVIDERS, None)
    assert result.provider == "stub" and result.error == ""
    assert result.config == {
        "steps": [{"name": "a", "lines": ["x", "y"], "seconds": 0.5}],
        "outcome": "failed",
        "exit_code": 3,
        "1": "one",
        "when": "2025-12-01",
        "empty": None,
    }
    json.dumps(result.config)


def test_null_provider_config_is_an_empty_mapping() -> None:
    """`tack: {stub: }` routes to stub with an empty config."""
    assert timed_route("tack:\n  stub:\n", PROVIDERS, None) == Route("stub", {}, {})


def test_environment_values_are_stringified() -> None:
    """Workflow `environment:` values become strings: scalars as text, null empty, collections as JSON."""
    raw = (
        "environment:\n  A: 1\n  B: true\n  C: null\n  D: 1.5\n  E: [1, x]\n  F: {k: v}\n"
        "  G: 2024-01-02\n  H: text\n  7: seven\n  I: off\ntack: {stub: {}}\n"
    )
    assert timed_route(raw, PROVIDERS, None).environment == {
        "A": "1",
        "B": "true",
        "C": "",
        "D": "1.5",
        "E": '[1, "x"]',
        "F": '{"k": "v"}',
        "G": "2024-01-02",
        "H": "text",
        "7": "seven",
        "I": "false",
    }


def test_environment_must_be_a_mapping() -> None:
    """A non-mapping `environment:` fails the workflow with a clear error."""
    result = timed_route("environment: [A=1]\ntack: {stub: {}}\n", PROVIDERS, None)
    assert result.provider is None and result.error.startswith("environment: must be a mapping")


def test_no_tack_block_uses_the_default_provider() -> None:
    """A workflow without `tack:` goes to TACK_DEFAULT_PROVIDER with an empty config; engine plays no part."""
    raw = "engine: buildkite\nenvironment: {X: y}\nsteps: []\n"
    assert timed_route(raw, PROVIDERS, "stub") == Route("stub", {}, {"X": "y"})


def test_empty_workflow_uses_the_default_provider() -> None:
    """An empty workflow file is an empty mapping and goes to the default provider."""
    assert timed_route("", PROVIDERS, "stub").provider == "stub"
    assert timed_route("# only a comment\n", PROVIDERS, "stub").provider == "stub"


def test_no_tack_block_and_no_default_lists_configured_providers() -> None:
    """Without `tack:` and without a default the error says so and lists the configured providers."""
    result = timed_route("engine: nixery\n", PROVIDERS, None)
    assert result.provider is None
    assert "no `tack:` block" in result.error and "TACK_DEFAULT_PROVIDER" in result.error
    assert "configured providers: stub, buildkite" in result.error
    assert "configured providers: none" in timed_route("engine: nixery\n", [], None).error


def test_unknown_provider_is_an_error_listing_providers() -> None:
    """A provider name that is not configured fails the workflow, naming it and the configured ones."""
    result = timed_route("tack:\n  jenkins: {job: x}\n", PROVIDERS, "stub")
    assert result.provider is None
    assert "unknown provider 'jenkins'" in result.error and "stub, buildkite" in result.error


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("tack: stub\n", "`tack:` must be a mapping"),
        ("tack: [stub]\n", "`tack:` must be a mapping"),
        ("tack: {}\n", "`tack:` must be a mapping"),
        ("tack: 3\n", "`tack:` must be a mapping"),
        ("tack:\n  stub: [a, b]\n", "`tack.stub` must be a mapping"),
        ("tack:\n  stub: fast\n", "`tack.stub` must be a mapping"),
    ],
)
def test_malformed_tack_block_is_an_error(raw: str, message: str) -> None:
    """A `tack:` that is not a non-empty mapping, or a provider config that is not a mapping, is an error."""
    result = timed_route(raw, PROVIDERS, "stub")
    assert result.provider is None and message in result.error


def _alias_levels(levels: int, width: int) -> str:
    """A YAML alias bomb: each level lists the previous one ``width`` times."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\ntack: {stub: {}}\n"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("tack: [unclosed\n", "invalid YAML"),
        ("tack:\n  stub: {a: 1\n", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("\tstub: 1\n", "invalid YAML"),
        ("a: !!python/object:os.system {}\n", "invalid YAML"),
        ("- a\n- b\n", "the workflow must be a mapping, not list"),
        ("just text\n", "the workflow must be a mapping, not str"),
        ("42\n", "the workflow must be a mapping, not int"),
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3"),
        ("tack:\n  stub: {x: 1, x: 2}\n", "duplicate key 'x' at line 2"),
        ("? [a]\n: 1\n", "unhashable mapping key"),
        (_alias_levels(9, 9), f"more than {MAX_ALIASES} YAML aliases"),
        (_alias_levels(6, 10), f"more than {MAX_NODES} values"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("".join("  " * i + f"k{i}:\n" for i in range(100)), f"nested deeper than {MAX_DEPTH} levels"),
        ("a: &a [*a]\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("a: &a {b: *a}\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("a: x\n" + "#" * MAX_YAML_BYTES + "\n", f"larger than {MAX_YAML_BYTES} bytes"),
        ("a: é\n#" + "é" * (MAX_YAML_BYTES // 2), f"larger than {MAX_YAML_BYTES} bytes"),
        ("a: 2001-13-01\n", "invalid YAML"),
        ("a: !!bool maybe\n", "invalid YAML"),
        ("a: !!int ''\n", "invalid YAML"),
        ("a: !!float x\n", "invalid YAML"),
        ("a: !!timestamp ''\n", "invalid YAML"),
        ("a: " + "9" * 5000 + "\n", "invalid YAML"),
        ("tack:\n  stub:\n    n: 0x" + "f" * 5000 + "\n", "integer"),
        ("environment:\n  N: 0x" + "f" * 5000 + "\ntack: {stub: {}}\n", "integer"),
        ("a: b\ud800\n", "invalid YAML"),
        ("a: b\x00\n", "invalid YAML"),
    ],
)
def test_unusable_workflow_yaml_is_a_clear_bounded_error(raw: str, message: str) -> None:
    """Unparsable, non-mapping, duplicate-key, alias-bomb, deep, oversized or odd YAML fails fast, saying why."""
    result = timed_route(raw, PROVIDERS, "stub")
    assert result.provider is None
    assert result.error.startswith("cannot read the workflow: ")
    assert message in result.error
    assert len(result.error) < 600


def test_aliases_within_budget_are_accepted() -> None:
    """A few ordinary YAML anchors and aliases are fine."""
    raw = "common: &env {A: 1}\nenvironment: *env\ntack:\n  stub:\n    env: *env\n"
    assert timed_route(raw, PROVIDERS, None) == Route("stub", {"env": {"A": 1}}, {"A": "1"})


# registry


def test_owner_adds_updates_and_removes_members(registry: Registry) -> None:
    """Member records by the owner for this hostname add, update and remove members live."""
    assert not registry.wanted(MEMBER_DID)
    applied = apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    assert applied == Applied("member_saved", members_changed=True)
    assert registry.wanted(MEMBER_DID) and registry.wanted(OWNER)
    applied = apply(registry, commit(OWNER, MEMBER, "m1", "update", member_record(OTHER_DID)))
    assert applied.members_changed and registry.members == {OTHER_DID}
    assert not registry.wanted(MEMBER_DID)
    assert apply(registry, commit(OWNER, MEMBER, "m1", "delete")) == Applied(
        "member_removed", members_changed=True
    )
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
    assert applied == Applied("member_other_spindle", members_changed=True)
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


# statuses and the event log


def test_status_record_matches_the_doc_example() -> None:
    """A failed status record has the doc's fields; `$type` names the collection."""
    second = epoch_s("2025-12-03T09:21:51Z")
    record = status_record(KNOT, PIPELINE_RKEY, "build.yml", "failed", second, "workflow failed", None)
    expected = json.loads(STATUS_EXAMPLE)
    expected["$type"] = STATUS_NSID
    assert record == expected


@pytest.mark.parametrize("status", ["pending", "running", "success", "timeout", "cancelled"])
def test_error_and_exit_code_only_on_failed(status: str) -> None:
    """Statuses other than failed carry neither `error` nor `exitCode`, even when given them."""
    record = status_record(KNOT, PIPELINE_RKEY, "build.yml", status, 0, "boom", 3)
    assert "error" not in record and "exitCode" not in record
    failed = status_record(KNOT, PIPELINE_RKEY, "build.yml", "failed", 0, "", 3)
    assert (failed["error"], failed["exitCode"]) == ("workflow failed", 3)


def test_pipeline_uri_keeps_the_knot_verbatim() -> None:
    """The pipeline AT-URI is at://did:web:<knot>/… with the knot, port included, not encoded."""
    assert pipeline_uri("localhost:6444", PIPELINE_RKEY) == (
        "at://did:web:localhost:6444/sh.tangled.pipeline/3m7abcxyz2k22"
    )
    assert pipeline_uri(KNOT, PIPELINE_RKEY) == json.loads(STATUS_EXAMPLE)["pipeline"]


def test_statuses_only_move_forward(conn: sqlite3.Connection, book: StatusBook, events: EventLog) -> None:
    """Duplicates and regressions are dropped, and a terminal status is final."""
    wf = add_workflow(conn, "build.yml")
    steps = [
        ("pending", True),
        ("pending", False),
        ("running", True),
        ("running", False),
        ("pending", False),
        ("failed", True),
        ("success", False),
        ("running", False),
        ("failed", False),
    ]
    for status, accepted in steps:
        with book.transaction() as c:
            assert book.record(c, wf, status, "boom") is accepted, status
    assert conn.execute("SELECT status, error FROM workflows WHERE id=?", (wf,)).fetchone() == (
        "failed",
        "boom",
    )
    held = conn.execute("SELECT status FROM status_queue ORDER BY id").fetchall()
    assert [r["status"] for r in published(events)] + [h[0] for h in held] == ["pending", "running", "failed"]


def test_status_for_an_unknown_workflow_is_dropped(book: StatusBook, events: EventLog) -> None:
    """A status for a workflow id that does not exist is dropped."""
    with book.transaction() as c:
        assert book.record(c, 12345, "running") is False
    assert published(events) == []


def test_first_status_is_published_at_once(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """A workflow's first status is published immediately with createdAt in whole seconds, `Z`, not in the future."""
    wf = add_workflow(conn, "build.yml", knot="localhost:6444")
    before = time.time_ns() // 1_000_000_000
    with book.transaction() as c:
        book.record(c, wf, "pending")
    [record] = published(events)
    assert before <= epoch_s(record["createdAt"]) <= time.time()
    assert record == {
        "$type": STATUS_NSID,
        "createdAt": record["createdAt"],
        "pipeline": "at://did:web:localhost:6444/sh.tangled.pipeline/3m7abcxyz2k22",
        "status": "pending",
        "workflow": "build.yml",
    }
    assert book.held() == 0


def _early_in_a_second() -> int:
    """Sleep, if need be, until early in a wall-clock second; returns that second."""
    fraction = time.time() % 1
    if fraction > 0.25:
        time.sleep(1.005 - fraction)
    return int(time.time())


def test_second_status_within_a_second_is_held_until_its_second(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """A second status of one workflow in the same second waits in status_queue; other workflows do not."""
    a = add_workflow(conn, "a.yml")
    b = add_workflow(conn, "b.yml")
    second = _early_in_a_second()
    with book.transaction() as c:
        book.record(c, a, "pending")
    with book.transaction() as c:
        assert book.record(c, a, "running")
        assert book.record(c, b, "pending")
    assert int(time.time()) == second, "the machine stalled across a second boundary; timing is void"
    assert book.held() == 1
    assert [(r["workflow"], r["status"]) for r in published(events)] == [
        ("a.yml", "pending"),
        ("b.yml", "pending"),
    ]
    assert conn.execute("SELECT status FROM workflows WHERE id=?", (a,)).fetchone() == ("running",)
    due = book.release_due()
    assert due == float(second + 1)
    assert book.held() == 1
    with book.transaction() as c:
        assert book.record(c, a, "success")
    assert book.held() == 2

    time.sleep(max(0.0, due - time.time()) + 0.02)
    assert book.release_due() == float(second + 2)
    assert book.held() == 1
    records = [r for r in published(events) if r["workflow"] == "a.yml"]
    assert [r["status"] for r in records] == ["pending", "running"]
    assert [epoch_s(r["createdAt"]) for r in records] == [second, second + 1]
    assert all(RFC3339_SECONDS_Z.fullmatch(r["createdAt"]) for r in published(events))
    assert all("error" not in r and "exitCode" not in r for r in published(events))


def test_failed_status_carries_error_and_exit_code(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """A failed status publishes its error and exit code; -1 when the exit code is unknown."""
    a = add_workflow(conn, "a.yml")
    b = add_workflow(conn, "b.yml")
    with book.transaction() as c:
        book.record(c, a, "failed", "unknown provider", None)
        book.record(c, b, "failed", "exit 2", 2)
    assert [(r["error"], r["exitCode"]) for r in published(events)] == [
        ("unknown provider", -1),
        ("exit 2", 2),
    ]


def test_rolled_back_statuses_are_not_published(
    conn: sqlite3.Connection, book: StatusBook, events: EventLog
) -> None:
    """Statuses recorded in a transaction that fails are neither stored nor served."""
    wf = add_workflow(conn, "a.yml")

    def fail_after_recording() -> None:
        with book.transaction() as c:
            book.record(c, wf, "pending")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_after_recording()
    assert published(events) == []
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    assert conn.execute("SELECT status FROM workflows WHERE id=?", (wf,)).fetchone() == ("",)


def _insert(conn: sqlite3.Connection, log: EventLog, count: int) -> list[tuple[int, str]]:
    with Transaction(conn) as c:
        keys = [log.insert(c, STATUS_NSID, {"n": i}) for i in range(count)]
    log.flush()
    return keys


def test_created_strictly_increases_and_rkeys_are_increasing_tids(
    conn: sqlite3.Connection, events: EventLog
) -> None:
    """Each event gets a created later than the last and a fresh TID rkey, in order, never repeated."""
    keys = _insert(conn, events, 300) + _insert(conn, events, 5)
    created = [k[0] for k in keys]
    rkeys = [k[1] for k in keys]
    assert all(b > a for a, b in itertools.pairwise(created))
    assert all(is_tid(r) for r in rkeys)
    assert rkeys == sorted(rkeys) and len(set(rkeys)) == len(rkeys)
    assert conn.execute("SELECT created, rkey FROM events ORDER BY created").fetchall() == keys
    assert created[-1] - time.time_ns() < 1_000_000_000


def test_envelope_key_order_and_nsid(conn: sqlite3.Connection, events: EventLog) -> None:
    """Each stored frame is {"event","nsid","rkey"} in that order, shaped like the doc's example."""
    [(_, rkey)] = _insert(conn, events, 1)
    [(_, frame)] = events.after(0)
    assert list(json.loads(frame)) == list(json.loads(EVENTS_FRAME)) == ["event", "nsid", "rkey"]
    assert json.loads(frame)["nsid"] == STATUS_NSID and json.loads(frame)["rkey"] == rkey


def test_rkeys_and_created_keep_increasing_across_reopen_with_clock_behind(tmp_path: Path) -> None:
    """After reopening, new rkeys and created values exceed stored ones even if those are ahead of the clock."""
    path = str(tmp_path / "tack.db")
    conn = open_db(path)
    _insert(conn, EventLog(conn), 3)
    ahead_us = time.time_ns() // 1000 + 3_600_000_000
    ahead_tid = tid_from_time_us(ahead_us, 0)
    ahead_created = time.time_ns() + 3_600_000_000_000
    conn.execute(
        "INSERT INTO events (created, rkey, nsid, frame) VALUES (?, ?, ?, '{}')",
        (ahead_created, ahead_tid, STATUS_NSID),
    )
    conn.close()
    for _ in range(2):
        conn = open_db(path)
        log = EventLog(conn)
        assert log.head() == ahead_created
        keys = _insert(conn, log, 3)
        conn.close()
        assert all(is_tid(r) for _, r in keys)
        assert keys[0][1] > ahead_tid and keys[0][0] > ahead_created
        assert parse_tid(keys[0][1])[0] > ahead_us
        ahead_tid, ahead_created = keys[-1][1], keys[-1][0]


def _all_pages(log: EventLog, cursor: int, limit: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    while page := log.after(cursor, limit):
        assert len(page) <= limit
        out.extend(page)
        cursor = page[-1][0]
    return out


def test_after_serves_ring_and_sqlite_identically_in_pages(tmp_path: Path) -> None:
    """after() pages give the same events whether served from the in-memory ring or from SQLite."""
    path = str(tmp_path / "tack.db")
    conn = open_db(path)
    log = EventLog(conn, ring_size=8)
    for _ in range(10):
        _insert(conn, log, 5)
    stored = [(int(c), str(f)) for c, f in conn.execute("SELECT created, frame FROM events ORDER BY created")]
    assert len(stored) == 50
    assert 0 < log.ring_floor < stored[-1][0], "the ring should have been trimmed"
    other = open_db(path)
    cold = EventLog(other)
    assert cold.head() == log.head() == stored[-1][0]
    for limit in (1, 7, 1000):
        assert _all_pages(log, 0, limit) == _all_pages(cold, 0, limit) == stored
    ring_cursors = 0
    for i, (created, _) in enumerate(stored):
        ring_cursors += created >= log.ring_floor
        for cursor in (created, created - 1):
            expected = [e for e in stored if e[0] > cursor][:5]
            assert log.after(cursor, 5) == cold.after(cursor, 5) == expected, i
    assert ring_cursors >= 8
    assert log.after(log.head()) == cold.after(cold.head()) == []
    other.close()
    conn.close()


# intake


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
        self.intake = Intake(self.registry, self.book, PROVIDERS, default, self._on_queued)

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


@pytest.fixture
def world(conn: sqlite3.Connection) -> World:
    """The intake world on the test database."""
    return World(conn)


def _workflow(name: str, raw: str) -> dict[str, Any]:
    return {
        "clone": {"depth": 1, "skip": False, "submodules": False},
        "engine": "nixery",
        "name": name,
        "raw": raw,
    }


def test_pipeline_frame_creates_routed_workflows(world: World) -> None:
    """An authorized pipeline creates one workflow per entry, routed, pending or failed with the routing error."""
    event = push_event()
    event["workflows"] = [
        _workflow("a.yml", "tack:\n  stub:\n    outcome: success\nenvironment: {X: 1}\n"),
        _workflow("b.yml", "tack:\n  buildkite: {pipeline: p}\n"),
        _workflow("c.yml", "engine: nixery\n"),
        _workflow("d.yml", "tack: {jenkins: {}}\n"),
        _workflow("e.yml", "tack: [unclosed\n"),
    ]
    assert world.intake.handle(KNOT, envelope(event)) == "pipeline"
    assert world.queued == 1
    rows = world.conn.execute(
        "SELECT name, provider, config, status, error, dispatch, knot, rkey FROM workflows ORDER BY name"
    ).fetchall()
    by_name = {r[0]: r for r in rows}
    assert by_name["a.yml"][1:6] == (
        "stub",
        json.dumps({"config": {"outcome": "success"}, "environment": {"X": "1"}}),
        "pending",
        "",
        "queued",
    )
    assert by_name["b.yml"][1] == "buildkite" and by_name["b.yml"][3:6] == ("pending", "", "queued")
    for name, message in (
        ("c.yml", "no `tack:` block"),
        ("d.yml", "unknown provider"),
        ("e.yml", "invalid YAML"),
    ):
        provider, _, status, error, dispatch = by_name[name][1:6]
        assert (provider, status, dispatch) == (None, "failed", "failed") and message in error
    assert {r[6:] for r in rows} == {(KNOT, PIPELINE_RKEY)}
    statuses = {r["workflow"]: r for r in published(world.events)}
    assert {n: r["status"] for n, r in statuses.items()} == {
        "a.yml": "pending",
        "b.yml": "pending",
        "c.yml": "failed",
        "d.yml": "failed",
        "e.yml": "failed",
    }
    assert statuses["d.yml"]["exitCode"] == -1 and "jenkins" in statuses["d.yml"]["error"]
    assert "error" not in statuses["a.yml"]
    assert {r["pipeline"] for r in statuses.values()} == {pipeline_uri(KNOT, PIPELINE_RKEY)}
    [(stored,)] = world.conn.execute("SELECT record FROM pipelines").fetchall()
    assert json.loads(stored) == event


def test_pipeline_from_a_knot_with_port_uses_it_verbatim(world: World) -> None:
    """A pipeline from a dev knot with a port keeps host:port in its statuses' AT-URI."""
    event = push_event()
    event["triggerMetadata"]["repo"] |= {"knot": "localhost:6444", "did": MEMBER_DID, "repo": "tool"}
    assert world.intake.handle("localhost:6444", envelope(event, rkey="3m7zzz")) == "pipeline"
    [record] = published(world.events)
    assert record["pipeline"] == "at://did:web:localhost:6444/sh.tangled.pipeline/3m7zzz"


def test_default_provider_routes_workflows_without_tack(conn: sqlite3.Connection) -> None:
    """With a default provider, a workflow without `tack:` is queued for it."""
    world = World(conn, default="buildkite")
    assert world.intake.handle(KNOT, PUSH_FRAME) == "pipeline"
    assert conn.execute("SELECT provider, status FROM workflows").fetchall() == [("buildkite", "pending")]


def test_only_failed_workflows_do_not_wake_the_dispatcher(world: World) -> None:
    """A pipeline whose workflows all fail routing is stored but does not wake the dispatcher."""
    assert world.intake.handle(KNOT, PUSH_FRAME) == "pipeline"
    assert world.queued == 0
    assert world.counts() == (1, 1, 1, 0)


def test_replayed_frame_changes_nothing(world: World) -> None:
    """The same frame again (same knot and rkey) is a duplicate and writes nothing."""
    event = push_event()
    event["workflows"] = [_workflow("a.yml", "tack: {stub: {}}\n")]
    assert world.intake.handle(KNOT, envelope(event)) == "pipeline"
    before = world.counts()
    frames = list(world.events.after(0))
    event["workflows"].append(_workflow("b.yml", "tack: {stub: {}}\n"))
    assert world.intake.handle(KNOT, envelope(event)) == "duplicate"
    assert world.intake.handle(KNOT, envelope(push_event())) == "duplicate"
    assert world.counts() == before and world.events.after(0) == frames
    assert world.queued == 1


@pytest.mark.parametrize(
    ("source", "repo"),
    [
        ("evil.example", {}),
        (KNOT, {"knot": "localhost:6444", "did": MEMBER_DID, "repo": "tool"}),
        (KNOT, {"repo": "unknown"}),
        (KNOT, {"did": OTHER_DID}),
    ],
)
def test_unauthorized_triggers_write_nothing(world: World, source: str, repo: dict[str, str]) -> None:
    """A trigger from the wrong knot or for an unregistered repo writes nothing."""
    event = push_event()
    event["triggerMetadata"]["repo"] |= repo
    assert world.intake.handle(source, envelope(event)) == "unauthorized"
    assert world.counts() == (0, 0, 0, 0) and world.queued == 0


def test_trigger_of_a_removed_member_writes_nothing(world: World) -> None:
    """Once its owner stops being a member, a registered repo's trigger is refused."""
    apply(world.registry, commit(OWNER, MEMBER, "m1", "delete"))
    event = push_event()
    event["triggerMetadata"]["repo"] |= {"knot": "localhost:6444", "did": MEMBER_DID, "repo": "tool"}
    assert world.intake.handle("localhost:6444", envelope(event)) == "unauthorized"
    assert world.counts() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("frame", "label"),
    [
        (envelope({"ref": "refs/heads/main"}, nsid="sh.tangled.git.refUpdate"), "ignored"),
        (envelope(push_event(), nsid="sh.tangled.pipeline.status"), "ignored"),
        (PUSH_FRAME.encode(), "binary"),
        ("{", "malformed"),
        (envelope({"triggerMetadata": {}}), "malformed"),
    ],
)
def test_frames_that_are_not_pipelines_write_nothing(world: World, frame: str | bytes, label: str) -> None:
    """Unknown nsids are ignored; binary and malformed frames are labelled and write nothing."""
    assert world.intake.handle(KNOT, frame) == label
    assert world.counts() == (0, 0, 0, 0)


# dispatch.spawn_request


def test_spawn_request_carries_trigger_workflow_config_and_environment(world: World) -> None:
    """The Spawn request built for a pipeline has the trigger, actor, workflow text, config and environment."""
    event = push_event()
    event["workflows"][0]["raw"] = "tack:\n  stub: {outcome: success}\nenvironment: {A: 1}\n"
    world.intake.handle(KNOT, envelope(event))
    [(wf_id, config)] = world.conn.execute("SELECT id, config FROM workflows").fetchall()
    queued = Queued(wf_id, KNOT, PIPELINE_RKEY, "build.yml", "stub", config, 0, 0, solo=False)
    request = spawn_request(KNOT, PIPELINE_RKEY, parse_pipeline(event), [queued])
    assert (request.knot, request.pipeline_rkey, request.actor_did) == (KNOT, PIPELINE_RKEY, OWNER)
    assert request.trigger.kind == pb.TRIGGER_KIND_PUSH
    assert request.trigger.push.new_sha == "9f2c1e0d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392"
    [wf] = request.workflows
    assert (wf.name, wf.engine, wf.raw, wf.clone.depth) == (
        "build.yml",
        "nixery",
        event["workflows"][0]["raw"],
        0,
    )
    assert json.loads(wf.config_json) == {"outcome": "success"} and dict(wf.environment) == {"A": "1"}


# config


BASE_ENV = {"TACK_HOSTNAME": HOST, "TACK_OWNER_DID": OWNER}


def test_config_defaults() -> None:
    """Only hostname and owner are required; listen defaults to :8080 and the database to tack.db."""
    settings = Settings.from_env(BASE_ENV)
    assert (settings.hostname, settings.owner_did) == (HOST, OWNER)
    assert settings.listen == ("0.0.0.0", 8080)
    assert settings.db_path == "tack.db"
    assert (settings.providers, settings.default_provider, settings.dev) == ({}, None, False)
    assert settings.jetstream_url == "wss://jetstream1.us-west.bsky.network/subscribe"


def test_config_reads_providers_default_and_dev_hostname() -> None:
    """Providers, a default provider, a dev hostname with port and a listen address are read."""
    settings = Settings.from_env(
        BASE_ENV
        | {
            "TACK_HOSTNAME": "localhost:6555",
            "TACK_PROVIDERS": " buildkite=buildkite:7101, stub=[::1]:7102,",
            "TACK_DEFAULT_PROVIDER": "stub",
            "TACK_LISTEN_ADDR": "127.0.0.1:9000",
            "TACK_DB_PATH": "/data/t.db",
            "TACK_DEV": "1",
        }
    )
    assert settings.hostname == "localhost:6555"
    assert settings.providers == {"buildkite": "buildkite:7101", "stub": "[::1]:7102"}
    assert (settings.default_provider, settings.listen, settings.db_path, settings.dev) == (
        "stub",
        ("127.0.0.1", 9000),
        "/data/t.db",
        True,
    )


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"TACK_HOSTNAME": None}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "  "}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "https://spindle.example.com"}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "spindle.example.com/x"}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "spindle example"}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "host:port"}, "TACK_HOSTNAME"),
        ({"TACK_OWNER_DID": None}, "TACK_OWNER_DID"),
        ({"TACK_OWNER_DID": "alice.bsky.social"}, "TACK_OWNER_DID"),
        ({"TACK_OWNER_DID": "did:plc:"}, "TACK_OWNER_DID"),
        ({"TACK_JETSTREAM_URL": "https://jetstream"}, "TACK_JETSTREAM_URL"),
        ({"TACK_PROVIDERS": "stub"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub="}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=stub"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=:7102"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=stub:port"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "Stub=stub:1"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "=stub:1"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=a:1,stub=b:2"}, "TACK_PROVIDERS"),
        ({"TACK_DEFAULT_PROVIDER": "stub"}, "TACK_DEFAULT_PROVIDER"),
        ({"TACK_PROVIDERS": "bk=bk:1", "TACK_DEFAULT_PROVIDER": "stub"}, "TACK_DEFAULT_PROVIDER"),
        ({"TACK_LISTEN_ADDR": "8080"}, "TACK_LISTEN_ADDR"),
        ({"TACK_SPAWN_TIMEOUT": "soon"}, "TACK_SPAWN_TIMEOUT"),
        ({"TACK_PING_INTERVAL": "60"}, "TACK_PING_INTERVAL"),
        ({"TACK_LOG_LEVEL": "loud"}, "TACK_LOG_LEVEL"),
    ],
)
def test_config_errors_name_the_variable(change: dict[str, str | None], variable: str) -> None:
    """A missing or malformed variable stops startup with a message naming it."""
    environ = dict(BASE_ENV)
    for key, value in change.items():
        if value is None:
            environ.pop(key)
        else:
            environ[key] = value
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    assert variable in str(info.value)


def test_parse_providers_empty_is_no_providers() -> None:
    """An empty or comma-only TACK_PROVIDERS configures no provider."""
    assert parse_providers("") == parse_providers(" , ,") == {}


# events_ws.start_cursor

HEAD = 1_764_753_711_000_000_000
REWIND = 2_000_000_000


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "0",
        "-1",
        "-99999999999",
        "abc",
        "1e9",
        "12.5",
        "9" * 5000,
        "0x10",
        " 5000000000 ",
        "\u0661\u0662",
    ],
)
def test_start_cursor_without_a_usable_cursor_is_live(raw: str | None) -> None:
    """A missing, zero, negative or unparsable cursor (as Go's ParseInt sees it: no spaces, ASCII digits,
    int64) starts at the head: live only."""
    assert start_cursor(raw, HEAD, REWIND) == HEAD


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (str(HEAD - 10_000_000_000), HEAD - 10_000_000_000 - REWIND),
        (str(HEAD), HEAD - REWIND),
        ("1", 0),
    ],
)
def test_start_cursor_in_the_past_is_rewound_by_the_margin(raw: str, expected: int) -> None:
    """A past cursor is rewound by the margin (never below zero)."""
    assert start_cursor(raw, HEAD, REWIND) == expected


# /logs frames


def _logs_message(i: int, lines: int = 10) -> bytes:
    return pb.LogsResponse(
        lines=[
            loglines.data_line(0, f"message {i} line {n}", ns=1_700_000_000_000_000_000) for n in range(lines)
        ]
    ).SerializeToString()


def _unframe(framed: Framed) -> list[str]:
    """The text frames in ``framed``, read back by RFC 6455's header rules."""
    data = b"".join(chunk for chunk, _ in framed.chunks)
    texts, pos = [], 0
    while pos < len(data):
        assert data[pos] == 0x81
        length, pos = data[pos + 1], pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2]), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8]), pos + 8
        texts.append(data[pos : pos + length].decode())
        pos += length
    assert sum(count for _, count in framed.chunks) == len(texts)
    return texts


def test_log_frames_are_the_tangled_frames_of_each_line() -> None:
    """A message becomes one text frame per line, the line's Tangled JSON, whatever the frame length."""
    lines = [loglines.data_line(0, "x" * n, ns=1_700_000_000_000_000_000) for n in (0, 100, 200, 70_000)]
    message = pb.LogsResponse(lines=lines).SerializeToString()
    assert _unframe(LogFrames(1 << 20).get(message)) == tangled_json.tangled_frames(lines)


def test_log_frames_share_a_recent_message_and_forget_the_oldest_past_the_budget() -> None:
    """A message seen again is served from memory; the bytes held stay within the budget, oldest out first."""
    frames = LogFrames(budget=20_000)
    first = frames.get(_logs_message(0))
    assert frames.get(_logs_message(0)) is first
    for i in range(1, 50):
        frames.get(_logs_message(i))
        assert frames.held <= frames.budget
    assert frames.get(_logs_message(49)) is frames.get(_logs_message(49))
    assert frames.get(_logs_message(0)) is not first
    assert 1 < len(frames) < 50


def test_log_frames_do_not_keep_a_message_bigger_than_a_quarter_of_the_budget() -> None:
    """One huge message cannot flush everything else: it is encoded for its viewer and not kept."""
    frames = LogFrames(budget=20_000)
    frames.get(_logs_message(0))
    frames.get(_logs_message(1, lines=200))
    assert len(frames) == 1


def test_log_frames_raise_decode_error_on_a_malformed_message_and_keep_nothing() -> None:
    """Bytes that are not a LogsResponse raise DecodeError and are not remembered."""
    frames = LogFrames(budget=20_000)
    with pytest.raises(DecodeError):
        frames.get(b"\x0a\x7f\x08\x01")
    assert (len(frames), frames.held) == (0, 0)
