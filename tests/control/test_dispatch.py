"""The Spawn request the dispatcher builds (tack_control.engine.dispatch)."""

from __future__ import annotations

import json

from tack_common.pb import provider_pb2 as pb
from tack_control.engine.dispatch import Queued, spawn_request
from tack_control.ingest.wire import (
    parse_pipeline,
)
from tests.support.samples import (
    KNOT,
    OWNER,
    PIPELINE_RKEY,
    World,
    envelope,
    push_event,
)


# dispatch.spawn_request


def test_spawn_request_carries_trigger_workflow_config_and_environment(world: World) -> None:
    """The Spawn request built for a pipeline has the trigger, actor, workflow text, config and environment."""
    event = push_event()
    event["workflows"][0]["raw"] = "tack:\n  stub: {outcome: success}\nenvironment: {A: 1}\n"
    world.intake.handle_frame(KNOT, envelope(event))
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
