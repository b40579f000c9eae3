"""The Spawn request the dispatcher builds, and how it fails what cannot be spawned (tack_control.engine.dispatch)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from tack_common.pb import provider_pb2 as pb
from tack_control.engine.dispatch import Dispatcher, Queued, spawn_request
from tack_control.engine.providers import ProviderClient
from tack_control.ingest.wire import (
    parse_pipeline,
)
from tests.fakes.provider import RawLogsProvider
from tests.support.ci import PipelineMaker, sha
from tests.support.current import until
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


async def test_a_pipeline_whose_stored_record_cannot_be_read_fails_at_once(conn: sqlite3.Connection) -> None:
    """A stored record the Spawn request cannot be built from fails its workflows with the reason at the first
    attempt, instead of being retried until the give-up; the provider is never called."""
    provider = RawLogsProvider([])
    await provider.start()
    client = ProviderClient("stub", provider.address)
    maker = PipelineMaker.on(conn)
    rkey = maker.make("pull_request", "did:plc:repo0000000000000000000", sha(7))
    record = json.loads(conn.execute("SELECT record FROM pipelines").fetchone()[0])
    del record["triggerMetadata"]["pullRequest"]["targetBranch"]
    conn.execute("UPDATE pipelines SET record=?", (json.dumps(record),))
    dispatcher = Dispatcher(maker.book, {"stub": client})
    task = asyncio.create_task(dispatcher.run())
    try:
        await until(
            lambda: conn.execute("SELECT dispatch FROM workflows").fetchone() == ("failed",), "it fails"
        )
        status, error = conn.execute("SELECT status, error FROM workflows WHERE rkey=?", (rkey,)).fetchone()
        assert status == "failed"
        assert error == (
            "tack cannot read this pipeline's record: triggerMetadata.pullRequest.targetBranch: must be a non-empty string"
        )
        assert provider.spawns == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await provider.stop()
