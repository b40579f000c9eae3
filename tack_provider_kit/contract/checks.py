"""The provider contract suite: checks any provider must pass, given its address.

Each check is an async function of a :class:`ProviderTarget` that raises
(AssertionError, a gRPC error, a timeout) when the provider breaks the
contract. ``python -m tack_provider_kit.contract`` runs them against a running
provider; tack's own tests parametrize over :data:`CHECKS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, Protocol

import grpc
from grpc_reflection.v1alpha import reflection_pb2

from tack_common import health, status as st
from tack_common.client import provider_stub
from tack_common.pb import provider_pb2 as pb, provider_pb2_grpc as pb_grpc


Flavour = Literal["quick", "long", "queued"]


class ProviderTarget(Protocol):
    """A provider under test."""

    address: str

    def workflow(self, name: str, flavour: Flavour) -> pb.Workflow:
        """A workflow for this provider: quick (ends in seconds), long (runs until cancelled),
        queued (stays pending for a long time)."""
        ...

    async def kill9_and_restart(self) -> None:
        """SIGKILL the provider process, start it again and wait until it serves.

        Raises :class:`CannotRestart` when this target has no way to do so.
        """
        ...


class CannotRestart(Exception):
    """The target cannot kill and restart the provider; checks that need it are skipped."""


@contextlib.asynccontextmanager
async def ready_channel(address: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to ``address`` once it is connected.

    gRPC shares subchannels between channels to the same target, so a channel
    opened now may inherit another's reconnect backoff from before the provider
    listened; waiting for READY makes the first call of a check meaningful.
    """
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        yield channel


def spawn_request(workflows: list[pb.Workflow], rkey: str | None = None) -> pb.SpawnRequest:
    """A push-triggered Spawn for ``workflows`` on a fresh pipeline rkey, as current Tangled's pipelines carry it."""
    pipeline_rkey = rkey or uuid.uuid4().hex[:13]
    return pb.SpawnRequest(
        knot="knot.test",
        pipeline_rkey=pipeline_rkey,
        actor_did="did:plc:owner",
        trigger=pb.Trigger(
            kind=pb.TRIGGER_KIND_PUSH,
            repo=pb.Repo(
                knot="knot.test",
                did="did:plc:owner",
                name="hello",
                repo_did="did:plc:repohello",
                rkey="hello",
            ),
            push=pb.PushTrigger(ref="refs/heads/main", old_sha="0" * 40, new_sha="a" * 40),
        ),
        workflows=workflows,
        pipeline_uri=f"at://did:web:knot.test/sh.tangled.pipeline/{pipeline_rkey}",
    )


def legacy_spawn_request(workflows: list[pb.Workflow]) -> pb.SpawnRequest:
    """A Spawn as a control plane of the 2025 protocol sends it: no repo DID, no pipeline URI."""
    request = spawn_request(workflows)
    request.trigger.repo.ClearField("repo_did")
    request.trigger.repo.ClearField("rkey")
    request.ClearField("pipeline_uri")
    return request


def key(request: pb.SpawnRequest, workflow: str) -> pb.WorkflowKey:
    """The key of one workflow of a Spawn."""
    return pb.WorkflowKey(knot=request.knot, pipeline_rkey=request.pipeline_rkey, workflow=workflow)


async def collect(
    stub: pb_grpc.ProviderAsyncStub,
    after_seq: int,
    until: Callable[[list[pb.StatusUpdate]], bool],
    timeout: float = 30.0,
) -> list[pb.StatusUpdate]:
    """Updates from WatchStatus(after_seq) until ``until(updates)`` holds."""
    updates: list[pb.StatusUpdate] = []
    call = stub.WatchStatus(pb.WatchStatusRequest(after_seq=after_seq), wait_for_ready=True)
    try:
        async with asyncio.timeout(timeout):
            async for message in call:
                updates.extend(message.updates)
                if until(updates):
                    return updates
    finally:
        call.cancel()
    raise AssertionError(f"WatchStatus ended early after {len(updates)} updates")


def terminal_for(keys: list[pb.WorkflowKey]) -> Callable[[list[pb.StatusUpdate]], bool]:
    """A predicate: every key has reached a terminal status."""
    wanted = {(k.knot, k.pipeline_rkey, k.workflow) for k in keys}

    def done(updates: list[pb.StatusUpdate]) -> bool:
        finished = {
            (u.key.knot, u.key.pipeline_rkey, u.key.workflow) for u in updates if st.is_terminal(u.status)
        }
        return wanted <= finished

    return done


def reached(k: pb.WorkflowKey, status: st.Status) -> Callable[[list[pb.StatusUpdate]], bool]:
    """A predicate: ``k`` has an update with ``status``."""
    return lambda updates: any(u.key == k and u.status == status for u in updates)


async def spawn_is_prompt_and_idempotent(target: ProviderTarget) -> None:
    """Spawn returns within a second and a repeat starts nothing twice."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        request = spawn_request([target.workflow("a.yml", "quick"), target.workflow("b.yml", "quick")])
        start = time.monotonic()
        first = await stub.Spawn(request, timeout=10)
        assert time.monotonic() - start < 1.0
        assert [(a.workflow, a.created) for a in first.acceptances] == [("a.yml", True), ("b.yml", True)]
        again = await stub.Spawn(request, timeout=10)
        assert [(a.workflow, a.created) for a in again.acceptances] == [("a.yml", False), ("b.yml", False)]
        keys = [key(request, "a.yml"), key(request, "b.yml")]
        updates = await collect(stub, 0, terminal_for(keys))
        for k in keys:
            mine = [u.status for u in updates if u.key == k]
            assert mine.count(st.PENDING) == 1, mine
            assert sum(st.is_terminal(s) for s in mine) == 1, mine


async def spawn_takes_both_protocols_requests(target: ProviderTarget) -> None:
    """A Spawn without the current-Tangled fields (an older control plane) is accepted like one with them."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        request = legacy_spawn_request([target.workflow("old.yml", "quick")])
        reply = await stub.Spawn(request, timeout=10)
        assert [(a.workflow, a.created) for a in reply.acceptances] == [("old.yml", True)]
        await collect(stub, 0, terminal_for([key(request, "old.yml")]))


def pull_request_spawn_request(workflows: list[pb.Workflow], fork: bool = False) -> pb.SpawnRequest:
    """A Spawn for a pull request (action and pull URI set); ``fork``: a fork's, run through "Run CI", untrusted."""
    request = spawn_request(workflows)
    request.trigger.kind = pb.TRIGGER_KIND_PULL_REQUEST
    request.trigger.pull_request.CopyFrom(
        pb.PullRequestTrigger(
            source_branch="feature/x",
            target_branch="main",
            source_sha="b" * 64,
            action="synchronize",
            pull="at://did:plc:author/sh.tangled.repo.pull/3mr7m2f6ger25",
        )
    )
    if fork:
        request.trigger.source_repo_did = "did:plc:forkofhello"
        request.trigger.source_knot = "fork.knot.test"
        request.untrusted = True
    return request


def manual_spawn_request(workflows: list[pb.Workflow]) -> pb.SpawnRequest:
    """A Spawn for a manual run (sh.tangled.ci.trigger) with inputs, one without a value."""
    request = spawn_request(workflows)
    request.trigger.kind = pb.TRIGGER_KIND_MANUAL
    request.trigger.manual.CopyFrom(
        pb.ManualTrigger(
            inputs=[pb.ManualInput(key="configuration", value="release"), pb.ManualInput(key="empty")],
            sha="c" * 40,
            ref="refs/heads/main",
        )
    )
    return request


async def spawn_takes_every_trigger_of_current_tangled(target: ProviderTarget) -> None:
    """A pull request (action, pull URI), a manual run with inputs and a recovered push are accepted and each
    reaches one terminal status; a fork's untrusted pull request is too, or is refused at Spawn with
    INVALID_ARGUMENT naming the workflow and then never reported on."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        recovered = spawn_request([target.workflow("recovered.yml", "quick")])
        recovered.recovered = True
        requests = [
            pull_request_spawn_request([target.workflow("pr.yml", "quick")]),
            manual_spawn_request([target.workflow("manual.yml", "quick")]),
            recovered,
        ]
        keys = []
        for request in requests:
            reply = await stub.Spawn(request, timeout=10)
            [acceptance] = reply.acceptances
            assert acceptance.created, acceptance
            keys.append(key(request, acceptance.workflow))
        fork = pull_request_spawn_request([target.workflow("fork.yml", "quick")], fork=True)
        refused = False
        try:
            [acceptance] = (await stub.Spawn(fork, timeout=10)).acceptances
            assert acceptance.created, acceptance
            keys.append(key(fork, "fork.yml"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
            assert "fork.yml" in (exc.details() or ""), exc.details()
            refused = True
        updates = await collect(stub, 0, terminal_for(keys))
        for k in keys:
            assert sum(st.is_terminal(u.status) for u in updates if u.key == k) == 1, k
        if refused:
            assert not [u for u in updates if u.key == key(fork, "fork.yml")]


async def watch_replays_exactly_after_seq_across_kill9(target: ProviderTarget) -> None:
    """WatchStatus(after_seq) replays exactly the later updates, gap-free, after a kill -9 of the provider."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        request = spawn_request([target.workflow(f"w{i}.yml", "quick") for i in range(3)])
        await stub.Spawn(request, timeout=10)
        keys = [key(request, w.name) for w in request.workflows]
        seen = await collect(stub, 0, terminal_for(keys))
    seqs = [u.seq for u in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gaps or disorder: {seqs}"
    middle = seen[len(seen) // 2].seq
    await target.kill9_and_restart()
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        replay = await collect(stub, middle, lambda got: len(got) >= len([u for u in seen if u.seq > middle]))
        expected = [u for u in seen if u.seq > middle]
        assert [(u.seq, u.key, u.status) for u in replay[: len(expected)]] == [
            (u.seq, u.key, u.status) for u in expected
        ]
        later = spawn_request([target.workflow("after.yml", "quick")])
        await stub.Spawn(later, timeout=10)
        tail = await collect(stub, seen[-1].seq, reached(key(later, "after.yml"), st.PENDING))
        assert all(u.seq > seen[-1].seq for u in tail)


async def logs_of_unknown_run_fail_not_found_before_any_message(target: ProviderTarget) -> None:
    """Logs of an unknown run fails with NOT_FOUND and sends no message."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        call = stub.Logs(
            pb.LogsRequest(key=pb.WorkflowKey(knot="knot.test", pipeline_rkey="nope", workflow="x"))
        )
        messages = []
        try:
            async for message in call:
                messages.append(message)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("Logs of an unknown run did not fail")
        assert messages == []


async def logs_of_known_unstarted_run_send_metadata_at_once(target: ProviderTarget) -> None:
    """Logs of a known run that has not started delivers initial metadata within 200 ms."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        await channel.channel_ready()
        request = spawn_request([target.workflow("q.yml", "queued")])
        await stub.Spawn(request, timeout=10)
        call = stub.Logs(pb.LogsRequest(key=key(request, "q.yml")))
        start = time.monotonic()
        await asyncio.wait_for(call.initial_metadata(), 2)
        elapsed = time.monotonic() - start
        assert not call.done() or await call.code() == grpc.StatusCode.OK
        call.cancel()
        assert elapsed < 0.2, f"initial metadata after {elapsed:.3f}s"
        await stub.Cancel(pb.CancelRequest(key=key(request, "q.yml")), timeout=10)


async def cancel_ends_running_run_cancelled(target: ProviderTarget) -> None:
    """Cancel of a running run ends it as cancelled, reported through WatchStatus; a repeat is a no-op."""
    async with ready_channel(target.address) as channel:
        stub = provider_stub(channel)
        request = spawn_request([target.workflow("long.yml", "long")])
        k = key(request, "long.yml")
        start_seq = 0
        await stub.Spawn(request, timeout=10)
        await collect(stub, start_seq, reached(k, st.RUNNING))
        await stub.Cancel(pb.CancelRequest(key=k), timeout=30)
        updates = await collect(stub, start_seq, reached(k, st.CANCELLED))
        assert [u.status for u in updates if u.key == k][-1] == st.CANCELLED
        again = await stub.Cancel(pb.CancelRequest(key=k), timeout=30)
        assert again.status == st.CANCELLED


async def health_serves_and_reflection_lists_the_service(target: ProviderTarget) -> None:
    """Health answers SERVING and reflection lists tack.provider.v1.Provider."""
    async with ready_channel(target.address) as channel:
        for service in ("", "tack.provider.v1.Provider"):
            assert await health.check(channel, service, timeout=5) == health.SERVING
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        names: list[str] = []
        response: reflection_pb2.ServerReflectionResponse
        async for response in reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
            names.extend(s.name for s in response.list_services_response.service)
        assert "tack.provider.v1.Provider" in names
        describe = await provider_stub(channel).Describe(pb.DescribeRequest(), timeout=5)
        assert describe.name and describe.version


CHECKS: list[Callable[[ProviderTarget], Awaitable[None]]] = [
    spawn_is_prompt_and_idempotent,
    spawn_takes_both_protocols_requests,
    spawn_takes_every_trigger_of_current_tangled,
    watch_replays_exactly_after_seq_across_kill9,
    logs_of_unknown_run_fail_not_found_before_any_message,
    logs_of_known_unstarted_run_send_metadata_at_once,
    cancel_ends_running_run_cancelled,
    health_serves_and_reflection_lists_the_service,
]
