"""Spawn validation and Logs batching in the provider runtime (tack_provider_kit.servicer)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import (
    NS_PER_SECOND,
)
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.servicer import (
    MAX_BYTES_PER_MESSAGE,
    MAX_LINES_PER_MESSAGE,
    split_batches,
    validate_spawn,
)


# 2023-11-14T22:13:20Z
BASE_NS = 1_700_000_000 * NS_PER_SECOND


# servicer: validate_spawn and split_batches


def spawn_request() -> pb.SpawnRequest:
    """A valid push-triggered Spawn with one workflow."""
    return pb.SpawnRequest(
        knot="knot.test",
        pipeline_rkey="3kabc",
        actor_did="did:plc:owner",
        trigger=pb.Trigger(
            kind=pb.TRIGGER_KIND_PUSH,
            repo=pb.Repo(knot="knot.test", did="did:plc:owner", name="hello"),
            push=pb.PushTrigger(ref="refs/heads/main", old_sha="0" * 40, new_sha="a" * 40),
        ),
        workflows=[pb.Workflow(name="build.yml", config_json="{}")],
    )


def _clear(field: str) -> Callable[[pb.SpawnRequest], None]:
    return lambda r: r.ClearField(field)  # type: ignore[arg-type]


def _set_kind(kind: pb.TriggerKind.ValueType) -> Callable[[pb.SpawnRequest], None]:
    def mutate(r: pb.SpawnRequest) -> None:
        r.trigger.kind = kind

    return mutate


def _add_workflow(name: str) -> Callable[[pb.SpawnRequest], None]:
    return lambda r: r.workflows.append(pb.Workflow(name=name))


def _rename(name: str) -> Callable[[pb.SpawnRequest], None]:
    def mutate(r: pb.SpawnRequest) -> None:
        r.workflows[0].name = name

    return mutate


def _actor(did: str) -> Callable[[pb.SpawnRequest], None]:
    def mutate(r: pb.SpawnRequest) -> None:
        r.actor_did = did

    return mutate


def _clear_repo(field: str) -> Callable[[pb.SpawnRequest], None]:
    return lambda r: r.trigger.repo.ClearField(field)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_clear("knot"), "knot: required"),
        (_clear("pipeline_rkey"), "pipeline_rkey: required"),
        (_actor("plc:owner"), "actor_did: must be a DID"),
        (_actor(""), "actor_did: must be a DID"),
        (_clear("trigger"), "trigger: required"),
        (_set_kind(pb.TRIGGER_KIND_UNSPECIFIED), "trigger.kind:"),
        (_set_kind(pb.TRIGGER_KIND_PULL_REQUEST), "trigger.pull_request: required"),
        (_set_kind(pb.TRIGGER_KIND_MANUAL), "trigger.manual: required"),
        (lambda r: r.trigger.ClearField("push"), "trigger.push: required"),
        (_clear_repo("did"), "trigger.repo:"),
        (_clear_repo("name"), "trigger.repo:"),
        (_clear("workflows"), "workflows: at least one"),
        (_rename(""), "workflows[0].name:"),
        (_rename("sub/build.yml"), "workflows[0].name:"),
        (_rename(".."), "workflows[0].name:"),
        (_add_workflow("build.yml"), "workflows[1].name: duplicate workflow 'build.yml'"),
        (_add_workflow("a/b"), "workflows[1].name:"),
    ],
)
def test_validate_spawn_names_the_bad_field(mutate: Callable[[pb.SpawnRequest], None], message: str) -> None:
    """validate_spawn raises InvalidArgument whose message starts with the offending field."""
    request = spawn_request()
    validate_spawn(request)
    mutate(request)
    with pytest.raises(InvalidArgument) as info:
        validate_spawn(request)
    assert str(info.value).startswith(message), str(info.value)


def test_validate_spawn_accepts_every_trigger_kind_with_its_detail() -> None:
    """Pull-request and manual triggers with their details are valid."""
    request = spawn_request()
    request.trigger.kind = pb.TRIGGER_KIND_PULL_REQUEST
    request.trigger.pull_request.source_branch = "feature"
    validate_spawn(request)
    request.trigger.kind = pb.TRIGGER_KIND_MANUAL
    request.trigger.manual.SetInParent()
    validate_spawn(request)


def _lines(count: int, size: int = 1) -> list[pb.LogLine]:
    return [loglines.data_line(0, f"{i:08d}" + "x" * size, ns=BASE_NS) for i in range(count)]


def test_split_batches_respects_line_limit_and_order() -> None:
    """Small lines are cut into batches of at most MAX_LINES_PER_MESSAGE, in order."""
    lines = _lines(2 * MAX_LINES_PER_MESSAGE + 7)
    batches = split_batches(lines)
    assert [len(b) for b in batches] == [MAX_LINES_PER_MESSAGE, MAX_LINES_PER_MESSAGE, 7]
    assert [x for b in batches for x in b] == lines


def test_split_batches_respects_byte_limit_and_order() -> None:
    """Large lines are cut so every batch encodes within MAX_BYTES_PER_MESSAGE, in order."""
    lines = _lines(20, size=150_000)
    batches = split_batches(lines)
    assert len(batches) > 1
    for batch in batches:
        assert pb.LogsResponse(lines=batch).ByteSize() <= MAX_BYTES_PER_MESSAGE
    assert [x for b in batches for x in b] == lines


def test_split_batches_sends_an_oversized_line_alone() -> None:
    """A line bigger than the byte limit travels in a batch of its own; nothing is dropped."""
    lines = [*_lines(1), *_lines(1, size=MAX_BYTES_PER_MESSAGE + 10), *_lines(1)]
    assert [len(b) for b in split_batches(lines)] == [1, 1, 1]
    assert split_batches([]) == []
