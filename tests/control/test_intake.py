"""Pipeline intake: from a knot frame to durable, routed workflows (tack_control.ingest.intake)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest

from tack_control.engine.statuses import pipeline_uri
from tack_control.ingest.registry import MEMBER, REPO
from tack_sandbox.knot import ref_update
from tests.support.samples import (
    KNOT,
    MEMBER_DID,
    OTHER_DID,
    OWNER,
    PIPELINE_RKEY,
    PUSH_FRAME,
    World,
    apply,
    commit,
    envelope,
    published,
    push_event,
    repo_record,
    workflow_entry,
)


# intake


def test_pipeline_frame_creates_routed_workflows(world: World) -> None:
    """An authorized pipeline creates one workflow per entry, routed, pending or failed with the routing error."""
    event = push_event()
    event["workflows"] = [
        workflow_entry("a.yml", "tack:\n  stub:\n    outcome: success\nenvironment: {X: 1}\n"),
        workflow_entry("b.yml", "tack:\n  buildkite: {pipeline: p}\n"),
        workflow_entry("c.yml", "engine: nixery\n"),
        workflow_entry("d.yml", "tack: {jenkins: {}}\n"),
        workflow_entry("e.yml", "tack: [unclosed\n"),
    ]
    assert world.intake.handle_frame(KNOT, envelope(event))[0] == "pipeline"
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
    assert world.intake.handle_frame("localhost:6444", envelope(event, rkey="3m7zzz"))[0] == "pipeline"
    [record] = published(world.events)
    assert record["pipeline"] == "at://did:web:localhost:6444/sh.tangled.pipeline/3m7zzz"


def test_default_provider_routes_workflows_without_tack(conn: sqlite3.Connection) -> None:
    """With a default provider, a workflow without `tack:` is queued for it."""
    world = World(conn, default="buildkite")
    assert world.intake.handle_frame(KNOT, PUSH_FRAME)[0] == "pipeline"
    assert conn.execute("SELECT provider, status FROM workflows").fetchall() == [("buildkite", "pending")]


def test_only_failed_workflows_do_not_wake_the_dispatcher(world: World) -> None:
    """A pipeline whose workflows all fail routing is stored but does not wake the dispatcher."""
    assert world.intake.handle_frame(KNOT, PUSH_FRAME)[0] == "pipeline"
    assert world.queued == 0
    assert world.counts() == (1, 1, 1, 0)


def test_replayed_frame_changes_nothing(world: World) -> None:
    """The same frame again (same knot and rkey) is a duplicate and writes nothing."""
    event = push_event()
    event["workflows"] = [workflow_entry("a.yml", "tack: {stub: {}}\n")]
    assert world.intake.handle_frame(KNOT, envelope(event))[0] == "pipeline"
    before = world.counts()
    frames = list(world.events.after(0))
    event["workflows"].append(workflow_entry("b.yml", "tack: {stub: {}}\n"))
    assert world.intake.handle_frame(KNOT, envelope(event))[0] == "duplicate"
    assert world.intake.handle_frame(KNOT, envelope(push_event()))[0] == "duplicate"
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
    assert world.intake.handle_frame(source, envelope(event))[0] == "unauthorized"
    assert world.counts() == (0, 0, 0, 0) and world.queued == 0


def test_trigger_of_a_removed_member_writes_nothing(world: World) -> None:
    """Once its owner stops being a member, a registered repo's trigger is refused."""
    apply(world.registry, commit(OWNER, MEMBER, "m1", "delete"))
    event = push_event()
    event["triggerMetadata"]["repo"] |= {"knot": "localhost:6444", "did": MEMBER_DID, "repo": "tool"}
    assert world.intake.handle_frame("localhost:6444", envelope(event))[0] == "unauthorized"
    assert world.counts() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("frame", "label"),
    [
        (envelope({"ref": "refs/heads/main"}, nsid="sh.tangled.git.refUpdate"), "malformed"),
        (envelope(push_event(), nsid="sh.tangled.pipeline.status"), "ignored"),
        (PUSH_FRAME.encode(), "binary"),
        ("{", "malformed"),
        (envelope({"triggerMetadata": {}}), "malformed"),
    ],
)
def test_frames_that_are_not_pipelines_write_nothing(world: World, frame: str | bytes, label: str) -> None:
    """Unknown nsids are ignored; binary and malformed frames are labelled and write nothing."""
    assert world.intake.handle_frame(KNOT, frame)[0] == label
    assert world.counts() == (0, 0, 0, 0)


# current Tangled: refUpdate

REPO_DID = "did:plc:repohello2ige3rnslshcvnk"
SHA_A, SHA_B = "a" * 40, "b" * 40


def verified_world(world: World) -> list[str]:
    """Register the owner's ``hello`` as a current repository (repo DID, verified at KNOT); the list that
    collects each wake-up of the push worker."""
    apply(world.registry, commit(OWNER, REPO, "r1", record=repo_record(repo_did=REPO_DID)))
    [pending] = world.registry.pending(time.time_ns())
    with world.book.transaction() as conn:
        world.registry.settle(conn, pending, verified=True)
    woken: list[str] = []
    world.intake.on_push = lambda: woken.append("push")
    return woken


def ref_update_frame(**changes: Any) -> str:
    """A current knot's refUpdate frame for REPO_DID (main moved from SHA_A to SHA_B), with ``changes``."""
    event = ref_update(repo_did=REPO_DID, owner=OWNER, old_sha=SHA_A, new_sha=SHA_B) | changes
    return envelope(event, rkey="3mrab2cd3ef22", nsid="sh.tangled.git.refUpdate")


def queued_pushes(world: World) -> list[tuple[str, str, str, str, str]]:
    """(repo, ref, new_sha, knot, state) of every recorded push."""
    return world.conn.execute("SELECT repo, ref, new_sha, knot, state FROM pushes").fetchall()


def test_a_ref_update_from_the_repositorys_knot_is_queued_once(world: World) -> None:
    """The push is recorded durably, the worker woken, the ref's commit remembered; a replay is a duplicate."""
    woken = verified_world(world)
    assert world.intake.handle_frame(KNOT, ref_update_frame())[0] == "push"
    assert queued_pushes(world) == [(REPO_DID, "refs/heads/main", SHA_B, KNOT, "queued")]
    assert woken == ["push"]
    assert world.intake.handle_frame(KNOT, ref_update_frame())[0] == "duplicate"
    assert len(queued_pushes(world)) == 1 and woken == ["push"]
    assert world.conn.execute("SELECT ref, sha FROM repo_refs").fetchall() == [("refs/heads/main", SHA_B)]
    # Nothing runs at intake: the pipeline is minted by the push worker once the workflows are loaded.
    assert world.counts() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("source", "changes", "outcome"),
    [
        ("evil.example", {}, "wrong_knot"),
        ("localhost:6444", {}, "wrong_knot"),
        (KNOT, {"repo": "did:plc:someoneelsesrepo0000000"}, "unregistered"),
        (KNOT, {"newSha": "0" * 40, "meta": None}, "deleted"),
        (KNOT, {"pushOptions": ["verbose-ci", "skip-ci"]}, "skipped"),
        (KNOT, {"pushOptions": ["ci-skip"]}, "skipped"),
        (KNOT, {"ref": "", "oldSha": "", "newSha": ""}, "ignored"),
        (KNOT, {"newSha": "c" * 64}, "malformed"),
    ],
)
def test_ref_updates_that_must_not_run_queue_nothing(
    world: World, source: str, changes: dict[str, Any], outcome: str
) -> None:
    """Another knot's word, an unregistered repo DID, a deleted ref, skip-ci/ci-skip, a ref-less update and a
    malformed one are each refused or skipped with their label, and nothing is queued. A deleted or skipped
    push still moves the remembered ref, so missed-push recovery does not run it later."""
    woken = verified_world(world)
    assert world.intake.handle_frame(source, ref_update_frame(**changes))[0] == outcome
    assert queued_pushes(world) == [] and woken == []
    remembered = world.conn.execute("SELECT sha FROM repo_refs").fetchall()
    assert remembered == ([(changes.get("newSha", SHA_B),)] if outcome in ("deleted", "skipped") else [])


def test_a_sha256_ref_update_and_knot2s_type_are_queued(world: World) -> None:
    """Knot2's refUpdate (``$type`` set, 64-hex commits of a SHA-256 repository) queues like any other."""
    verified_world(world)
    frame = ref_update_frame(**{"$type": "sh.tangled.git.refUpdate", "oldSha": "1" * 64, "newSha": "2" * 64})
    assert world.intake.handle_frame(KNOT, frame)[0] == "push"
    assert queued_pushes(world) == [(REPO_DID, "refs/heads/main", "2" * 64, KNOT, "queued")]


def test_the_older_ref_update_shape_is_left_to_the_knots_pipeline(world: World) -> None:
    """A 2025 knot's refUpdate (``repoDid`` = owner, ``repoName``) is not acted on: its pipeline trigger is."""
    verified_world(world)
    event = {
        "repoDid": OWNER,
        "repoName": "hello",
        "ref": "refs/heads/main",
        "oldSha": SHA_A,
        "newSha": SHA_B,
    }
    frame = envelope(event, nsid="sh.tangled.git.refUpdate")
    assert world.intake.handle_frame(KNOT, frame)[0] == "legacy_ref_update"
    assert queued_pushes(world) == []
