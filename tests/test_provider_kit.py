"""Unit tests of the shared provider runtime and the stub's script parsing: no sockets, no processes."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, strategies as st_

from tack_common import env, loglines, sqlite as kit_sqlite, status as st
from tack_common.notify import Notifier
from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import (
    NS_PER_SECOND,
    ns_from_timestamp,
    rfc3339_seconds,
    timestamp_from_ns,
)
from tack_control.web import tangled_json
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.servicer import (
    MAX_BYTES_PER_MESSAGE,
    MAX_LINES_PER_MESSAGE,
    split_batches,
    validate_spawn,
)
from tack_provider_kit.store import ProviderStore, RunKey
from tack_provider_stub import script as scripts


# 2023-11-14T22:13:20Z
BASE_NS = 1_700_000_000 * NS_PER_SECOND


# timefmt


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (BASE_NS, "2023-11-14T22:13:20Z"),
        (BASE_NS + 500_000_000, "2023-11-14T22:13:20.5Z"),
        (BASE_NS + 120_000_000, "2023-11-14T22:13:20.12Z"),
        (BASE_NS + 123_456_000, "2023-11-14T22:13:20.123456Z"),
        (BASE_NS + 1, "2023-11-14T22:13:20.000000001Z"),
        (BASE_NS + 999_999_999, "2023-11-14T22:13:20.999999999Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (999_999_990, "1970-01-01T00:00:00.99999999Z"),
        (0, "0001-01-01T00:00:00Z"),
    ],
)
def test_log_line_time_is_rfc3339_nano_trimmed_like_go(ns: int, text: str) -> None:
    """A frame's time is UTC with Z, the fraction's trailing zeros trimmed, a zero fraction dropped; 0 (unset) is Go's zero time."""
    assert tangled_json.tangled_dict(loglines.data_line(0, "x", ns=ns))["time"] == text


def test_rfc3339_seconds_drops_the_fraction() -> None:
    """rfc3339_seconds gives whole-second UTC time with Z whatever the nanoseconds."""
    assert rfc3339_seconds(BASE_NS + 999_999_999) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize("ns", [0, 1, BASE_NS, BASE_NS + 123_456_789, -1, -NS_PER_SECOND - 5])
def test_timestamp_round_trips_nanoseconds(ns: int) -> None:
    """timestamp_from_ns and ns_from_timestamp are inverse, with nanos kept in [0, 1e9)."""
    ts = timestamp_from_ns(ns)
    assert isinstance(ts, Timestamp)
    assert 0 <= ts.nanos < NS_PER_SECOND
    assert ns_from_timestamp(ts) == ns


# loglines


def test_steplog_opens_each_step_before_its_data_and_closes_it_once() -> None:
    """StepLog numbers steps from 0, closes the open step when the next starts, and ends it once."""
    log = loglines.StepLog()
    first = log.start("one", "echo one")
    assert [(x.kind, x.step_id, x.step_status) for x in first] == [
        (pb.LOG_KIND_CONTROL, 0, pb.STEP_STATUS_START)
    ]
    assert first[0].content == "one" and first[0].step_command == "echo one"
    data = log.data("hello")
    assert (data.kind, data.step_id, data.content, data.stream) == (
        pb.LOG_KIND_DATA,
        0,
        "hello",
        loglines.STDOUT,
    )
    second = log.start("two")
    assert [(x.step_id, x.step_status, x.content) for x in second] == [
        (0, pb.STEP_STATUS_END, "one"),
        (1, pb.STEP_STATUS_START, "two"),
    ]
    assert log.data("err", loglines.STDERR).step_id == 1
    ending = log.end()
    assert [(x.step_id, x.step_status) for x in ending] == [(1, pb.STEP_STATUS_END)]
    assert log.end() == []


def test_steplog_refuses_data_outside_a_step() -> None:
    """A data line before any start, or after the step ended, raises RuntimeError."""
    log = loglines.StepLog()
    with pytest.raises(RuntimeError, match="outside a step"):
        log.data("orphan")
    log.start("s")
    log.end()
    with pytest.raises(RuntimeError, match="outside a step"):
        log.data("late")


def test_steplog_continues_from_a_given_step_id() -> None:
    """A StepLog created with next_step_id allocates from there."""
    log = loglines.StepLog(next_step_id=3)
    assert log.start("resumed")[0].step_id == 3


def test_explicit_ns_sets_the_line_time() -> None:
    """Lines built with ns carry exactly that time."""
    line = loglines.data_line(0, "x", ns=BASE_NS + 7)
    assert line.time_unix_nano == BASE_NS + 7


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", []),
        ("one", ["one"]),
        ("one\n", ["one"]),
        ("one\r\ntwo\r\n", ["one", "two"]),
        ("one\rtwo\nthree", ["one", "two", "three"]),
        ("a\n\nb", ["a", "", "b"]),
        ("a\n\n", ["a", ""]),
        ("\n", [""]),
        ("\r\n\r", ["", ""]),
    ],
)
def test_output_lines_splits_crlf_cr_and_lf(text: str, lines: list[str]) -> None:
    """output_lines ends a line at CRLF, lone CR or LF and drops only one trailing newline."""
    assert list(loglines.output_lines(text)) == lines


def test_tangled_dict_of_data_line_omits_control_fields() -> None:
    """A data line's Tangled object has kind, content, time, step_id and stream, nothing empty."""
    line = loglines.data_line(2, "out", loglines.STDERR, ns=BASE_NS + 5_000_000)
    assert tangled_json.tangled_dict(line) == {
        "kind": "data",
        "content": "out",
        "time": "2023-11-14T22:13:20.005Z",
        "step_id": 2,
        "stream": "stderr",
    }


def test_tangled_dict_keeps_empty_content_and_step_zero() -> None:
    """content and step_id are always present, even when empty or zero."""
    out = tangled_json.tangled_dict(loglines.data_line(0, "", ns=BASE_NS))
    assert out["content"] == "" and out["step_id"] == 0


def test_tangled_dict_user_step_kind_is_integer_one() -> None:
    """A user step's control start carries step_status, step_kind 1 and step_command."""
    line = loglines.control_start(0, "build", "make", loglines.USER, ns=BASE_NS)
    assert tangled_json.tangled_dict(line) == {
        "kind": "control",
        "content": "build",
        "time": "2023-11-14T22:13:20Z",
        "step_id": 0,
        "step_status": "start",
        "step_kind": 1,
        "step_command": "make",
    }


def test_tangled_dict_system_step_omits_step_kind() -> None:
    """A system step's control lines omit step_kind, and an empty command is omitted."""
    start = tangled_json.tangled_dict(loglines.control_start(0, "clone", "", loglines.SYSTEM, ns=BASE_NS))
    end = tangled_json.tangled_dict(loglines.control_end(0, "clone", loglines.SYSTEM, ns=BASE_NS))
    assert "step_kind" not in start and "step_command" not in start and "stream" not in start
    assert end == {
        "kind": "control",
        "content": "clone",
        "time": "2023-11-14T22:13:20Z",
        "step_id": 0,
        "step_status": "end",
    }


def test_tangled_frames_are_compact_utf8() -> None:
    """A frame is compact JSON that keeps non-ASCII text as is."""
    [text] = tangled_json.tangled_frames([loglines.data_line(0, "héllo ✓", ns=BASE_NS)])
    assert (
        text
        == '{"kind":"data","content":"héllo ✓","time":"2023-11-14T22:13:20Z","step_id":0,"stream":"stdout"}'
    )
    assert json.loads(text)["content"] == "héllo ✓"


def _go_rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano in UTC, written independently of the code under test; 0 is Go's zero time."""
    if ns == 0:
        return "0001-01-01T00:00:00Z"
    seconds, nanos = divmod(ns, NS_PER_SECOND)
    whole = (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)).isoformat()
    fraction = str(nanos).rjust(9, "0").rstrip("0")
    return whole + ("." + fraction if fraction else "") + "Z"


def _reference_frame(line: pb.LogLine) -> dict[str, object]:
    """The Tangled LogLine object for ``line`` by tangled-protocol.md's table, built as a dict."""
    control = line.kind == pb.LOG_KIND_CONTROL
    out: dict[str, object] = {
        "kind": "control" if control else "data",
        "content": line.content,
        "time": _go_rfc3339_nano(line.time_unix_nano),
        "step_id": line.step_id,
    }
    if not control and line.stream:
        out["stream"] = {pb.LOG_STREAM_STDOUT: "stdout", pb.LOG_STREAM_STDERR: "stderr"}[line.stream]
    if control and line.step_status:
        out["step_status"] = {pb.STEP_STATUS_START: "start", pb.STEP_STATUS_END: "end"}[line.step_status]
    if control and line.step_kind == pb.STEP_KIND_USER:
        out["step_kind"] = 1
    if control and line.step_command:
        out["step_command"] = line.step_command
    return out


_log_lines = st_.builds(
    pb.LogLine,
    kind=st_.sampled_from(list(pb.LogKind.values())),
    content=st_.text(),
    time_unix_nano=st_.one_of(
        st_.integers(0, 2 * NS_PER_SECOND), st_.integers(0, 4_102_444_800 * NS_PER_SECOND)
    ),
    step_id=st_.integers(0, 2**32 - 1),
    stream=st_.sampled_from(list(pb.LogStream.values())),
    step_status=st_.sampled_from(list(pb.StepStatus.values())),
    step_kind=st_.sampled_from(list(pb.StepKind.values())),
    step_command=st_.text(),
)


@given(st_.lists(_log_lines, max_size=20))
def test_tangled_frames_match_the_protocol_table(lines: list[pb.LogLine]) -> None:
    """Any batch of lines encodes, in order, to compact JSON objects equal to the protocol's table."""
    frames = tangled_json.tangled_frames(lines)
    assert [json.loads(frame) for frame in frames] == [_reference_frame(line) for line in lines]
    assert all(
        frame == json.dumps(json.loads(frame), ensure_ascii=False, separators=(",", ":")) for frame in frames
    )


def test_tangled_frames_time_follows_each_line_across_seconds() -> None:
    """Lines whose seconds go forward, back and repeat each get their own time, not a neighbour's."""
    times = [BASE_NS + 5, BASE_NS + NS_PER_SECOND, BASE_NS + 7, BASE_NS + 7, 0, BASE_NS]
    frames = tangled_json.tangled_frames([loglines.data_line(0, "x", ns=ns) for ns in times])
    assert [json.loads(f)["time"] for f in frames] == [
        "2023-11-14T22:13:20.000000005Z",
        "2023-11-14T22:13:21Z",
        "2023-11-14T22:13:20.000000007Z",
        "2023-11-14T22:13:20.000000007Z",
        "0001-01-01T00:00:00Z",
        "2023-11-14T22:13:20Z",
    ]


def test_tangled_frames_send_only_the_fields_of_the_line_kind() -> None:
    """A data line carrying step fields sends none of them; a control line carrying a stream omits it."""
    data = pb.LogLine(
        kind=pb.LOG_KIND_DATA,
        content="out",
        time_unix_nano=BASE_NS,
        step_id=1,
        stream=pb.LOG_STREAM_STDOUT,
        step_status=pb.STEP_STATUS_START,
        step_kind=pb.STEP_KIND_USER,
        step_command="make",
    )
    control = pb.LogLine(
        kind=pb.LOG_KIND_CONTROL,
        content='say "hi"\n',
        time_unix_nano=BASE_NS,
        step_id=1,
        stream=pb.LOG_STREAM_STDERR,
        step_status=pb.STEP_STATUS_END,
    )
    unspecified = pb.LogLine(content="plain", time_unix_nano=BASE_NS)
    assert tangled_json.tangled_frames([data, control, unspecified]) == [
        '{"kind":"data","content":"out","time":"2023-11-14T22:13:20Z","step_id":1,"stream":"stdout"}',
        '{"kind":"control","content":"say \\"hi\\"\\n","time":"2023-11-14T22:13:20Z","step_id":1,"step_status":"end"}',
        '{"kind":"data","content":"plain","time":"2023-11-14T22:13:20Z","step_id":0}',
    ]


def test_synthetic_log_is_start_data_end() -> None:
    """synthetic_log is one user step: control start, a stderr data line with the message, control end."""
    lines = loglines.synthetic_log("setup", "could not start", ns=BASE_NS)
    assert [tangled_json.tangled_dict(x) for x in lines] == [
        {
            "kind": "control",
            "content": "setup",
            "time": "2023-11-14T22:13:20Z",
            "step_id": 0,
            "step_status": "start",
            "step_kind": 1,
        },
        {
            "kind": "data",
            "content": "could not start",
            "time": "2023-11-14T22:13:20Z",
            "step_id": 0,
            "stream": "stderr",
        },
        {
            "kind": "control",
            "content": "setup",
            "time": "2023-11-14T22:13:20Z",
            "step_id": 0,
            "step_status": "end",
            "step_kind": 1,
        },
    ]


def test_synthetic_log_splits_a_multiline_message_and_keeps_an_empty_one() -> None:
    """A multi-line message becomes one data line each; an empty message still gets one data line."""
    many = loglines.synthetic_log("s", "a\nb\n")
    assert [x.content for x in many if x.kind == pb.LOG_KIND_DATA] == ["a", "b"]
    empty = loglines.synthetic_log("s", "")
    assert [x.kind for x in empty] == [pb.LOG_KIND_CONTROL, pb.LOG_KIND_DATA, pb.LOG_KIND_CONTROL]


# status


def test_status_ranks_pending_running_terminal() -> None:
    """pending ranks below running, which ranks below every terminal status; UNSPECIFIED has no rank."""
    assert st.rank(st.PENDING) == 0
    assert st.rank(st.RUNNING) == 1
    assert {st.rank(s) for s in st.TERMINAL} == {2}
    with pytest.raises(ValueError, match="not a Tangled status"):
        st.rank(pb.STATUS_UNSPECIFIED)


@pytest.mark.parametrize(
    ("current", "new", "forward"),
    [
        (None, st.PENDING, True),
        (None, st.SUCCESS, True),
        (st.PENDING, st.RUNNING, True),
        (st.PENDING, st.CANCELLED, True),
        (st.RUNNING, st.FAILED, True),
        (st.PENDING, st.PENDING, False),
        (st.RUNNING, st.PENDING, False),
        (st.RUNNING, st.RUNNING, False),
        (st.SUCCESS, st.RUNNING, False),
        (st.SUCCESS, st.FAILED, False),
        (st.CANCELLED, st.SUCCESS, False),
    ],
)
def test_status_advances_only_forward(current: st.Status | None, new: st.Status, forward: bool) -> None:
    """advances allows only pending → running → terminal moves, never between terminal statuses."""
    assert st.advances(current, new) is forward


def test_status_names_round_trip() -> None:
    """Every status has its Tangled name and back; unknown names and values raise ValueError."""
    assert st.ALL_NAMES == ("pending", "running", "success", "failed", "timeout", "cancelled")
    for text in st.ALL_NAMES:
        assert st.name(st.from_name(text)) == text
    assert st.is_terminal(st.TIMEOUT) and not st.is_terminal(st.RUNNING)
    with pytest.raises(ValueError, match="not a Tangled status"):
        st.name(pb.STATUS_UNSPECIFIED)
    with pytest.raises(ValueError, match="'done'"):
        st.from_name("done")


# env


def test_env_text_names_the_missing_variable() -> None:
    """A required variable that is unset or blank raises ConfigError starting with its name."""
    with pytest.raises(env.ConfigError, match=r"^TACK_X is required"):
        env.text({}, "TACK_X")
    with pytest.raises(env.ConfigError, match=r"^TACK_X "):
        env.text({"TACK_X": "  "}, "TACK_X")
    assert env.text({"TACK_X": " v "}, "TACK_X") == "v"
    assert env.text({}, "TACK_X", "d") == "d"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:7102", ("127.0.0.1", 7102)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_env_address_parses_host_and_port(value: str, parsed: tuple[str, int]) -> None:
    """host:port addresses parse; a bare :port listens on every interface."""
    assert env.address({"TACK_ADDR": value}, "TACK_ADDR", "127.0.0.1:1") == parsed


@pytest.mark.parametrize("value", ["8080", "host:", "host:http", "host:70000", ":-1"])
def test_env_address_rejects_malformed_values(value: str) -> None:
    """A malformed address raises ConfigError naming the variable."""
    with pytest.raises(env.ConfigError, match=r"^TACK_ADDR must look like host:port"):
        env.address({"TACK_ADDR": value}, "TACK_ADDR", ":1")


def test_env_numbers_check_type_and_range() -> None:
    """number and integer use defaults when unset and name the variable when malformed or out of range."""
    assert env.number({}, "N", 2.5) == 2.5
    assert env.number({"N": "0.25"}, "N", 1.0, 0.0, 1.0) == 0.25
    with pytest.raises(env.ConfigError, match=r"^N must be a number"):
        env.number({"N": "lots"}, "N", 1.0)
    with pytest.raises(env.ConfigError, match=r"^N must be between"):
        env.number({"N": "5"}, "N", 1.0, 0.0, 1.0)
    assert env.integer({"I": "7"}, "I", 1) == 7
    with pytest.raises(env.ConfigError, match=r"^I must be a whole number"):
        env.integer({"I": "1.5"}, "I", 1)
    with pytest.raises(env.ConfigError, match=r"^I must be between"):
        env.integer({"I": "-1"}, "I", 1)


def test_env_flag_and_choice() -> None:
    """flag is false only for empty, 0, false and no; choice names the variable and the allowed values."""
    for off in ("", "0", "false", "No", " FALSE "):
        assert not env.flag({"F": off}, "F")
    for on in ("1", "yes", "true", "on"):
        assert env.flag({"F": on}, "F")
    assert not env.flag({}, "F")
    assert env.choice({"C": "b"}, "C", "a", ("a", "b")) == "b"
    with pytest.raises(env.ConfigError, match=r"^C must be one of a, b, got 'z'"):
        env.choice({"C": "z"}, "C", "a", ("a", "b"))


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


# notify


async def test_notifier_wakes_every_waiter_and_times_out() -> None:
    """notify wakes all current waiters at once; wait returns False when the timeout passes first."""
    notifier = Notifier()
    waiters = [asyncio.create_task(notifier.wait(5)) for _ in range(3)]
    await asyncio.sleep(0)
    notifier.notify()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await notifier.wait(0.01) is False


# store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProviderStore]:
    s = ProviderStore(str(tmp_path / "state" / "provider.db"), provider="unit")
    try:
        yield s
    finally:
        s.close()


def key(workflow: str = "build.yml", rkey: str = "3kabc") -> RunKey:
    """A run key on the test knot."""
    return RunKey("knot.test", rkey, workflow)


def test_run_key_round_trips_protobuf() -> None:
    """RunKey converts to and from WorkflowKey and prints as knot/rkey/workflow."""
    k = key()
    assert RunKey.from_pb(k.to_pb()) == k
    assert str(k) == "knot.test/3kabc/build.yml"


def test_store_create_is_idempotent_and_publishes_one_pending(store: ProviderStore) -> None:
    """create makes pending runs once; a repeat returns the run unchanged and publishes nothing."""
    first = store.create([(key("a.yml"), {"n": 1}), (key("b.yml"), {"n": 2})])
    assert [(run.key.workflow, run.status, run.data, created) for run, created in first] == [
        ("a.yml", st.PENDING, {"n": 1}, True),
        ("b.yml", st.PENDING, {"n": 2}, True),
    ]
    again = store.create([(key("a.yml"), {"n": 99}), (key("c.yml"), {})])
    assert [(run.key.workflow, run.data, created) for run, created in again] == [
        ("a.yml", {"n": 1}, False),
        ("c.yml", {}, True),
    ]
    updates = store.updates_after(0)
    assert [(u.key.workflow, u.status) for u in updates] == [
        ("a.yml", st.PENDING),
        ("b.yml", st.PENDING),
        ("c.yml", st.PENDING),
    ]
    assert store.get(key("missing.yml")) is None


def test_store_set_status_moves_only_forward(store: ProviderStore) -> None:
    """set_status publishes forward moves only, unless allow_regression; failed keeps error and exit code."""
    [(run, _)] = store.create([(key(), {})])
    assert store.set_status(run.id, st.RUNNING)
    assert not store.set_status(run.id, st.RUNNING)
    assert not store.set_status(run.id, st.PENDING)
    assert store.set_status(run.id, st.FAILED, "step 'x' failed", 3)
    assert not store.set_status(run.id, st.SUCCESS)
    assert not store.set_status(run.id, st.CANCELLED)
    current = store.get_by_id(run.id)
    assert current is not None
    assert (current.status, current.error, current.exit_code, current.terminal) == (
        st.FAILED,
        "step 'x' failed",
        3,
        True,
    )
    assert store.set_status(run.id, st.RUNNING, allow_regression=True)
    updates = store.updates_after(0)
    assert [u.status for u in updates] == [st.PENDING, st.RUNNING, st.FAILED, st.RUNNING]
    failed = updates[2]
    assert failed.error == "step 'x' failed" and failed.HasField("exit_code") and failed.exit_code == 3
    assert not updates[1].HasField("exit_code")
    with pytest.raises(KeyError):
        store.set_status(run.id + 100, st.RUNNING)


def test_store_set_status_replaces_data_even_without_a_move(store: ProviderStore) -> None:
    """data given to set_status is stored whether or not the status moves."""
    [(run, _)] = store.create([(key(), {"v": 0})])
    assert not store.set_status(run.id, st.PENDING, data={"v": 1})
    got = store.get_by_id(run.id)
    assert got is not None and got.data == {"v": 1}
    store.update_data(run.id, {"v": 2})
    got = store.get_by_id(run.id)
    assert got is not None and got.data == {"v": 2}


def test_store_active_lists_unfinished_runs_oldest_first(store: ProviderStore) -> None:
    """active returns pending and running runs, oldest first, and no terminal ones."""
    runs = [run for run, _ in store.create([(key(f"{i}.yml"), {}) for i in range(4)])]
    store.set_status(runs[1].id, st.RUNNING)
    store.set_status(runs[2].id, st.SUCCESS)
    assert [run.key.workflow for run in store.active()] == ["0.yml", "1.yml", "3.yml"]


def test_store_seq_strictly_increases_and_survives_reopening(tmp_path: Path) -> None:
    """seq strictly increases, last_seq reports it, and reopening the file neither resets nor reuses it."""
    path = str(tmp_path / "p.db")
    store = ProviderStore(path)
    assert store.last_seq() == 0
    [(run, _)] = store.create([(key(), {})])
    store.set_status(run.id, st.RUNNING)
    store.set_status(run.id, st.SUCCESS)
    seqs = [u.seq for u in store.updates_after(0)]
    assert seqs == sorted(set(seqs)) and len(seqs) == 3
    assert store.last_seq() == seqs[-1]
    store.prune(older_than_ns=2**62)
    assert store.updates_after(0) == []
    store.close()

    reopened = ProviderStore(path)
    try:
        assert reopened.last_seq() == seqs[-1]
        reopened.create([(key("next.yml"), {})])
        [update] = reopened.updates_after(0)
        assert update.seq == seqs[-1] + 1
        assert reopened.updates_after(seqs[-1]) == [update]
    finally:
        reopened.close()


def test_store_updates_after_pages_with_limit(store: ProviderStore) -> None:
    """updates_after returns at most ``limit`` updates strictly after the given seq."""
    store.create([(key(f"{i}.yml"), {}) for i in range(5)])
    first = store.updates_after(0, limit=2)
    rest = store.updates_after(first[-1].seq, limit=10)
    assert [u.key.workflow for u in first + rest] == [f"{i}.yml" for i in range(5)]


def test_store_prune_keeps_unfinished_runs(store: ProviderStore) -> None:
    """prune forgets old terminal runs and old updates but keeps pending and running runs."""
    runs = [run for run, _ in store.create([(key(f"{i}.yml"), {}) for i in range(3)])]
    store.set_status(runs[0].id, st.RUNNING)
    store.set_status(runs[1].id, st.SUCCESS)
    removed_runs, removed_updates = store.prune(older_than_ns=2**62)
    assert removed_runs == 1
    assert removed_updates == 5
    assert store.get(runs[1].key) is None
    assert [run.key.workflow for run in store.active()] == ["0.yml", "2.yml"]


def test_store_prune_keeps_recent_terminal_runs(store: ProviderStore) -> None:
    """prune with a cutoff before the run's last change keeps it and its updates."""
    [(run, _)] = store.create([(key(), {})])
    store.set_status(run.id, st.SUCCESS)
    assert store.prune(older_than_ns=run.created_ns - 1) == (0, 0)
    assert store.get(run.key) is not None


def test_store_schema_is_extensible(tmp_path: Path) -> None:
    """extra_schema is created alongside the store's own tables."""
    store = ProviderStore(
        str(tmp_path / "x.db"), extra_schema="CREATE TABLE IF NOT EXISTS extra (v INTEGER);"
    )
    try:
        store.conn.execute("INSERT INTO extra (v) VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(
                "INSERT INTO runs (knot, pipeline_rkey, workflow, status, created_ns, updated_ns)"
                " VALUES ('k', 'r', 'w', 1, 0, 0), ('k', 'r', 'w', 1, 0, 0)"
            )
    finally:
        store.close()


async def test_store_watch_replays_then_follows(store: ProviderStore) -> None:
    """watch yields stored updates after after_seq, then new ones as they are published, and idles empty."""
    runs = [run for run, _ in store.create([(key("a.yml"), {}), (key("b.yml"), {})])]
    first_seq = store.updates_after(0)[0].seq
    watch = cast(AsyncGenerator[list[pb.StatusUpdate], None], store.watch(first_seq, idle=0.05))
    try:
        replayed = await asyncio.wait_for(anext(watch), 2)
        assert [(u.key.workflow, u.status) for u in replayed] == [("b.yml", st.PENDING)]

        async def publish() -> None:
            await asyncio.sleep(0.01)
            store.set_status(runs[0].id, st.RUNNING)

        publisher = asyncio.create_task(publish())
        live = await asyncio.wait_for(anext(watch), 2)
        await publisher
        assert [(u.key.workflow, u.status) for u in live] == [("a.yml", st.RUNNING)]
        assert live[0].seq > replayed[-1].seq
        assert await asyncio.wait_for(anext(watch), 2) == []
    finally:
        await watch.aclose()


# sqlite: background checkpoints


def _fill(conn: sqlite3.Connection, pages: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS filler (blob BLOB)")
    for _ in range(pages // 10):
        conn.execute("INSERT INTO filler VALUES (?)", (b"x" * 40_000,))


def test_background_checkpoints_take_checkpoints_off_the_writing_connection(tmp_path: Path) -> None:
    """The writer never checkpoints (its writes stay in the WAL past 1,000 pages) until checkpoint() runs."""
    path = str(tmp_path / "db.sqlite")
    conn = kit_sqlite.connect(path)
    checkpoints = kit_sqlite.BackgroundCheckpoints(conn, path, interval=3600)
    try:
        _fill(conn, 2_000)
        assert os.path.getsize(path) < 100_000 < os.path.getsize(path + "-wal")
        checkpoints.checkpoint()
        assert os.path.getsize(path) > 2_000 * 4096
        assert conn.execute("SELECT COUNT(*) FROM filler").fetchone()[0] == 200
    finally:
        checkpoints.close()
        conn.close()


def test_background_checkpoints_thread_checkpoints_and_close_hands_back(tmp_path: Path) -> None:
    """The thread checkpoints on its own within its interval; close() stops it and restores autocheckpoint."""
    path = str(tmp_path / "db.sqlite")
    conn = kit_sqlite.connect(path)
    checkpoints = kit_sqlite.BackgroundCheckpoints(conn, path, interval=0.05)
    _fill(conn, 2_000)
    deadline = time.monotonic() + 5
    while os.path.getsize(path) < 2_000 * 4096 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.getsize(path) > 2_000 * 4096
    checkpoints.close()
    assert not checkpoints._thread.is_alive()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    conn.close()


# stub script parsing


def test_stub_script_defaults() -> None:
    """An empty or absent config is the default script: two quick steps, then success."""
    configs: tuple[dict[str, object] | None, ...] = ({}, None)
    for config in configs:
        script = scripts.parse(config)
        assert script == scripts.Script()
        assert [s.name for s in script.steps] == ["prepare", "build"]
        assert all(s.duration < 1 for s in script.steps)
        assert (script.queue_seconds, script.outcome, script.exit_code, script.error) == (
            0.1,
            "success",
            1,
            "",
        )


def test_stub_script_parses_every_key_and_round_trips_json() -> None:
    """A full config parses to the script it describes and survives to_json/from_json through JSON."""
    script = scripts.parse(
        {
            "queue_seconds": 0,
            "outcome": "failed",
            "exit_code": 7,
            "error": "boom",
            "steps": [
                {
                    "name": "a",
                    "command": "run a",
                    "output": "one\ntwo\n",
                    "output_count": 2,
                    "duration": 1.5,
                    "stream": "stderr",
                },
                {"name": "b"},
            ],
        }
    )
    assert script.steps[0] == scripts.Step("a", "run a", ("one", "two"), 2, 1.5, "stderr")
    assert script.steps[1] == scripts.Step("b")
    assert [script.steps[0].line(i) for i in range(script.steps[0].line_count)] == [
        "one",
        "two",
        "a: line 1",
        "a: line 2",
    ]
    assert (script.queue_seconds, script.outcome, script.exit_code, script.failure_message()) == (
        0.0,
        "failed",
        7,
        "boom",
    )
    assert scripts.from_json(json.loads(json.dumps(script.to_json()))) == script


def test_stub_failure_message_defaults_to_last_step() -> None:
    """Without error, a failed script reports the last step's name and the exit code."""
    script = scripts.parse({"outcome": "failed", "exit_code": 2, "steps": [{"name": "x"}, {"name": "y"}]})
    assert script.failure_message() == "step 'y' exited with status 2"
    assert scripts.parse({"outcome": "failed", "steps": []}).failure_message() == (
        "step 'workflow' exited with status 1"
    )


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ([], "tack.stub:"),
        ("x", "tack.stub:"),
        ({"bogus": 1}, "tack.stub.bogus:"),
        ({"steps": 3}, "tack.stub.steps:"),
        ({"steps": [{}] * (scripts.MAX_STEPS + 1)}, "tack.stub.steps:"),
        ({"steps": ["x"]}, "tack.stub.steps[0]:"),
        ({"steps": [{"command": "c"}]}, "tack.stub.steps[0].name:"),
        ({"steps": [{"name": 5}]}, "tack.stub.steps[0].name:"),
        ({"steps": [{"name": ""}]}, "tack.stub.steps[0].name:"),
        ({"steps": [{"name": "a", "extra": 1}]}, "tack.stub.steps[0].extra:"),
        ({"steps": [{"name": "a"}, {"name": "b", "command": 1}]}, "tack.stub.steps[1].command:"),
        ({"steps": [{"name": "a", "output": [1]}]}, "tack.stub.steps[0].output:"),
        ({"steps": [{"name": "a", "output": {"k": "v"}}]}, "tack.stub.steps[0].output:"),
        ({"steps": [{"name": "a", "output_count": -1}]}, "tack.stub.steps[0].output_count:"),
        ({"steps": [{"name": "a", "output_count": 1.5}]}, "tack.stub.steps[0].output_count:"),
        ({"steps": [{"name": "a", "output_count": True}]}, "tack.stub.steps[0].output_count:"),
        ({"steps": [{"name": "a", "duration": "x"}]}, "tack.stub.steps[0].duration:"),
        ({"steps": [{"name": "a", "duration": -1}]}, "tack.stub.steps[0].duration:"),
        ({"steps": [{"name": "a", "duration": scripts.MAX_SECONDS + 1}]}, "tack.stub.steps[0].duration:"),
        ({"steps": [{"name": "a", "stream": "stdlog"}]}, "tack.stub.steps[0].stream:"),
        ({"steps": [{"name": "a", "stream": 1}]}, "tack.stub.steps[0].stream:"),
        ({"queue_seconds": "soon"}, "tack.stub.queue_seconds:"),
        ({"queue_seconds": False}, "tack.stub.queue_seconds:"),
        ({"outcome": "explode"}, "tack.stub.outcome:"),
        ({"outcome": 1}, "tack.stub.outcome:"),
        ({"exit_code": "1"}, "tack.stub.exit_code:"),
        ({"exit_code": 2**31}, "tack.stub.exit_code:"),
        ({"error": ["e"]}, "tack.stub.error:"),
    ],
)
def test_stub_script_errors_name_their_key(config: object, where: str) -> None:
    """Every invalid stub config raises InvalidArgument whose message starts with the offending key."""
    with pytest.raises(InvalidArgument) as info:
        scripts.parse(config)
    assert str(info.value).startswith(where), str(info.value)
