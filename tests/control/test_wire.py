"""Parsing what Tangled sends (tack_control.ingest.wire): the protocol documents' frames and every malformation."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tack_control.engine.pipelines import PIPELINE_NSID
from tack_control.ingest.registry import REPO
from tack_control.ingest.wire import (
    MAX_FIELD,
    MAX_RAW_BYTES,
    MAX_WORKFLOWS,
    BadRecord,
    TriggerRepo,
    load_json,
    parse_collaborator,
    parse_jetstream,
    parse_knot_frame,
    parse_member,
    parse_pipeline,
    parse_repo,
)
from tests.support.samples import (
    HOST,
    JETSTREAM_COMMIT,
    KNOT,
    OWNER,
    PIPELINE_RKEY,
    PR_TRIGGER,
    PUSH_FRAME,
    push_event,
    repo_record,
)


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
