"""The stub provider as a real process: scripted outcomes, log framing, validation, restarts, Cancel."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import grpc
import pytest
import pytest_asyncio

from tack_common import status as st
from tack_common.client import channel, provider_stub
from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import ns_from_timestamp
from tack_control.web import tangled_json
from tack_provider_kit.contract.checks import collect, key, reached, spawn_request, terminal_for
from tests.support.procs import StubProcess


pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]

if TYPE_CHECKING:
    from tack_common.pb.provider_pb2_grpc import ProviderAsyncStub

# The asyncio stub type exists only in the generated .pyi, not at run time.
Stub: TypeAlias = "ProviderAsyncStub"

QUICK: dict[str, object] = {"queue_seconds": 0, "steps": []}
RESTART_NOTE = "[stub] provider restarted; resuming this step"
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,8}[1-9])?Z$")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stub]:
    """One stub process shared by the module's tests that do not restart it."""
    proc = StubProcess(tmp_path_factory.mktemp("stub"))
    await proc.start_serving()
    chan = channel(proc.address)
    try:
        yield provider_stub(chan)
    finally:
        await chan.close()
        assert proc.terminate() == 0, proc.output()[-3000:]


def workflow(name: str, config: object) -> pb.Workflow:
    """A workflow for the stub with ``config`` as its tack.stub mapping."""
    return pb.Workflow(name=name, engine="tack", raw="engine: tack\n", config_json=json.dumps(config))


async def read_log(stub: Stub, k: pb.WorkflowKey, timeout: float = 10.0) -> list[pb.LogLine]:
    """The whole Logs stream of ``k``; fails unless the stream ends within ``timeout``."""
    lines: list[pb.LogLine] = []
    async with asyncio.timeout(timeout):
        async for message in stub.Logs(pb.LogsRequest(key=k)):
            lines.extend(message.lines)
    return lines


def statuses(updates: list[pb.StatusUpdate], k: pb.WorkflowKey) -> list[pb.StatusUpdate]:
    """The updates of one run, in order."""
    return [u for u in updates if u.key == k]


def summary(lines: list[pb.LogLine]) -> list[tuple[str, int, str, str]]:
    """(kind, step_id, step_status or stream, content) per line, for exact comparisons."""
    out = []
    for line in lines:
        frame = json.loads(tangled_json.tangled_frames([line])[0])
        edge = frame.get("step_status", frame.get("stream", ""))
        out.append((str(frame["kind"]), line.step_id, str(edge), line.content))
    return out


def assert_well_framed(lines: list[pb.LogLine], since_ns: int) -> None:
    """Tangled framing: steps 0..n-1 start once, in order, before their data, and end once; times are RFC 3339 Z."""
    started: list[int] = []
    ended: list[int] = []
    for line in lines:
        frame = json.loads(tangled_json.tangled_frames([line])[0])
        assert RFC3339_Z.match(frame["time"]), frame
        when = dt.datetime.fromisoformat(frame["time"])
        assert since_ns / 1e9 - 1 <= when.timestamp() <= time.time() + 1, frame
        if frame["kind"] == "control":
            assert frame["step_kind"] == 1 and "stream" not in frame, frame
            if frame["step_status"] == "start":
                assert frame["step_id"] not in started, f"step {frame['step_id']} started twice"
                assert frame["step_id"] == len(started), f"step ids out of order: {frame}"
                started.append(frame["step_id"])
            else:
                assert frame["step_status"] == "end", frame
                assert frame["step_id"] in started and frame["step_id"] not in ended, frame
                ended.append(frame["step_id"])
        else:
            assert frame["kind"] == "data" and frame["stream"] in ("stdout", "stderr"), frame
            assert "step_status" not in frame and "step_kind" not in frame, frame
            assert frame["step_id"] in started, f"data before its step started: {frame}"
            assert frame["step_id"] not in ended, f"data after its step ended: {frame}"
    assert started == ended == list(range(len(started)))


# Scripted outcomes

SCRIPT_STEPS: list[dict[str, object]] = [
    {
        "name": "compile",
        "command": "make all",
        "output": ["hello", "world"],
        "output_count": 3,
        "duration": 0.1,
    },
    {"name": "test", "command": "make test", "output": ["oops"], "stream": "stderr", "duration": 0.05},
]
NOTES = {"failed": "exit status 3", "timeout": "[stub] step timed out", "cancelled": "[stub] cancelled"}


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("success", st.SUCCESS), ("failed", st.FAILED), ("timeout", st.TIMEOUT), ("cancelled", st.CANCELLED)],
    ids=["success", "failed", "timeout", "cancelled"],
)
async def test_scripted_outcome_statuses_and_log(stub: Stub, outcome: str, status: st.Status) -> None:
    """A scripted run reports pending, running, then its outcome, and logs every step framed in order."""
    config = {
        "queue_seconds": 0,
        "steps": SCRIPT_STEPS,
        "outcome": outcome,
        "exit_code": 3,
        "error": "tests failed",
    }
    request = spawn_request([workflow("run.yml", config)])
    k = key(request, "run.yml")
    since = time.time_ns()
    reply = await stub.Spawn(request, timeout=10)
    assert [(a.workflow, a.created, a.status) for a in reply.acceptances] == [("run.yml", True, st.PENDING)]

    mine = statuses(await collect(stub, 0, terminal_for([k])), k)
    assert [u.status for u in mine] == [st.PENDING, st.RUNNING, status]
    assert all(not u.error and not u.HasField("exit_code") for u in mine[:2])
    last = mine[-1]
    if outcome == "failed":
        assert (last.error, last.HasField("exit_code"), last.exit_code) == ("tests failed", True, 3)
    else:
        assert (last.error, last.HasField("exit_code")) == ("", False)

    lines = await read_log(stub, k)
    assert_well_framed(lines, since)
    note = [("data", 1, "stderr", NOTES[outcome])] if outcome in NOTES else []
    assert summary(lines) == [
        ("control", 0, "start", "compile"),
        ("data", 0, "stdout", "hello"),
        ("data", 0, "stdout", "world"),
        ("data", 0, "stdout", "compile: line 1"),
        ("data", 0, "stdout", "compile: line 2"),
        ("data", 0, "stdout", "compile: line 3"),
        ("control", 0, "end", "compile"),
        ("control", 1, "start", "test"),
        ("data", 1, "stderr", "oops"),
        *note,
        ("control", 1, "end", "test"),
    ]
    commands = [line.step_command for line in lines if line.step_status == pb.STEP_STATUS_START]
    assert commands == ["make all", "make test"]


async def test_empty_config_runs_the_default_script_quickly(stub: Stub) -> None:
    """The empty config runs the default two quick steps and succeeds within a few seconds."""
    request = spawn_request([workflow("default.yml", {})])
    k = key(request, "default.yml")
    since, began = time.time_ns(), time.monotonic()
    await stub.Spawn(request, timeout=10)
    mine = statuses(await collect(stub, 0, terminal_for([k]), timeout=10), k)
    elapsed = time.monotonic() - began
    assert [u.status for u in mine] == [st.PENDING, st.RUNNING, st.SUCCESS]
    assert elapsed < 3, f"default script took {elapsed:.2f}s"

    lines = await read_log(stub, k)
    assert_well_framed(lines, since)
    controls = [line for line in lines if line.kind == pb.LOG_KIND_CONTROL]
    assert [(c.content, c.step_status) for c in controls] == [
        ("prepare", pb.STEP_STATUS_START),
        ("prepare", pb.STEP_STATUS_END),
        ("build", pb.STEP_STATUS_START),
        ("build", pb.STEP_STATUS_END),
    ]
    for start, end in zip(controls[::2], controls[1::2], strict=True):
        took = (end.time_unix_nano - start.time_unix_nano) / 1e9
        assert 0 <= took < 1, f"step {start.content} took {took:.2f}s"
    assert [line.content for line in lines if line.kind == pb.LOG_KIND_DATA] == [
        "preparing a simulated workspace",
        "building (simulated)...",
        "build ok",
    ]


# Logs: live follow and replay


async def test_logs_follow_a_running_run_live_and_end_with_it(stub: Stub) -> None:
    """Logs of a running run delivers lines as they happen and ends when the run ends; a replay is identical."""
    config = {"queue_seconds": 0, "steps": [{"name": "slow", "output_count": 10, "duration": 1.0}]}
    request = spawn_request([workflow("live.yml", config)])
    k = key(request, "live.yml")
    since = time.time_ns()
    await stub.Spawn(request, timeout=10)

    arrivals: list[tuple[float, int]] = []
    live: list[pb.LogLine] = []
    async with asyncio.timeout(10):
        async for message in stub.Logs(pb.LogsRequest(key=k)):
            arrivals.append((time.monotonic(), len(message.lines)))
            live.extend(message.lines)
    ended_ns, ended = time.time_ns(), time.monotonic()

    assert len(arrivals) >= 3, f"lines came in {len(arrivals)} messages, not live"
    assert ended - arrivals[0][0] > 0.5, "the stream did not follow the run while it ran"
    assert_well_framed(live, since)
    assert [line.content for line in live if line.kind == pb.LOG_KIND_DATA] == [
        f"slow: line {i}" for i in range(1, 11)
    ]

    mine = statuses(await collect(stub, 0, terminal_for([k]), timeout=5), k)
    assert mine[-1].status == st.SUCCESS
    lag = (ended_ns - ns_from_timestamp(mine[-1].time)) / 1e9
    assert lag < 1.5, f"Logs ended {lag:.2f}s after the run ended"

    began = time.monotonic()
    replay = await read_log(stub, k, timeout=5)
    assert time.monotonic() - began < 1, "replay of a finished run did not end promptly"
    assert [line.SerializeToString() for line in replay] == [line.SerializeToString() for line in live]


# Validation


def _clear(field: str) -> Callable[[pb.SpawnRequest], None]:
    return lambda r: r.ClearField(field)  # type: ignore[arg-type]


def _set_actor(r: pb.SpawnRequest) -> None:
    r.actor_did = "alice.example"


def _pull_request_without_detail(r: pb.SpawnRequest) -> None:
    r.trigger.kind = pb.TRIGGER_KIND_PULL_REQUEST


def _duplicate(r: pb.SpawnRequest) -> None:
    r.workflows[1].name = r.workflows[0].name


def _slash(r: pb.SpawnRequest) -> None:
    r.workflows[1].name = "nested/b.yml"


def _raw_config(text: str, index: int = 0) -> Callable[[pb.SpawnRequest], None]:
    def mutate(r: pb.SpawnRequest) -> None:
        r.workflows[index].config_json = text

    return mutate


def _config(config: object, index: int = 0) -> Callable[[pb.SpawnRequest], None]:
    return _raw_config(json.dumps(config), index)


INVALID: list[tuple[str, Callable[[pb.SpawnRequest], None], str]] = [
    ("missing_knot", _clear("knot"), "knot: required"),
    ("missing_pipeline_rkey", _clear("pipeline_rkey"), "pipeline_rkey: required"),
    ("actor_not_a_did", _set_actor, "actor_did: must be a DID"),
    ("missing_trigger", _clear("trigger"), "trigger: required"),
    ("kind_without_detail", _pull_request_without_detail, "trigger.pull_request: required"),
    ("no_workflows", _clear("workflows"), "workflows: at least one"),
    ("duplicate_names", _duplicate, "workflows[1].name: duplicate workflow 'a.yml'"),
    ("name_with_slash", _slash, "workflows[1].name:"),
    ("config_not_json", _raw_config("{nope"), "workflows[0] (a.yml): config_json: not JSON"),
    ("unknown_key", _config({"bogus": True}), "workflows[0] (a.yml): tack.stub.bogus: unknown key"),
    ("steps_not_a_list", _config({"steps": 3}), "workflows[0] (a.yml): tack.stub.steps:"),
    (
        "duration_not_a_number",
        _config({"steps": [{"name": "s", "duration": "x"}]}),
        "workflows[0] (a.yml): tack.stub.steps[0].duration:",
    ),
    ("unknown_outcome", _config({"outcome": "explode"}), "workflows[0] (a.yml): tack.stub.outcome:"),
    ("one_valid_one_invalid", _config({"bogus": 1}, index=1), "workflows[1] (b.yml): tack.stub.bogus:"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
async def test_invalid_spawn_names_the_field_and_starts_nothing(
    stub: Stub, mutate: Callable[[pb.SpawnRequest], None], message: str
) -> None:
    """An unusable Spawn fails INVALID_ARGUMENT naming the field, and none of its workflows exists afterwards."""
    good = spawn_request([workflow("a.yml", QUICK), workflow("b.yml", QUICK)])
    bad = pb.SpawnRequest()
    bad.CopyFrom(good)
    mutate(bad)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Spawn(bad, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(message), info.value.details()

    keys = [key(good, "a.yml"), key(good, "b.yml")]
    for k in keys:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Cancel(pb.CancelRequest(key=k), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    reply = await stub.Spawn(good, timeout=10)
    assert [(a.workflow, a.created) for a in reply.acceptances] == [("a.yml", True), ("b.yml", True)]
    updates = await collect(stub, 0, lambda got: all(reached(k, st.PENDING)(got) for k in keys))
    for k in keys:
        mine = statuses(updates, k)
        assert mine[0].status == st.PENDING
        assert [u.status for u in mine].count(st.PENDING) == 1


# Restarts


async def test_kill9_mid_step_resumes_the_run_in_the_same_step(tmp_path: Path) -> None:
    """After kill -9 mid-step the restarted stub resumes the run: same step, a restart note, no step twice."""
    config = {
        "queue_seconds": 0,
        "steps": [
            {"name": "warmup", "output": ["ready"]},
            {"name": "slow", "command": "sleep 2", "output_count": 20, "duration": 2.0},
            {"name": "after", "output": ["done"]},
        ],
    }
    request = spawn_request([workflow("resume.yml", config)])
    k = key(request, "resume.yml")
    proc = StubProcess(tmp_path)
    await proc.start_serving()
    try:
        since = time.time_ns()
        async with channel(proc.address) as chan:
            stub = provider_stub(chan)
            await stub.Spawn(request, timeout=10)
            seen = 0
            call = stub.Logs(pb.LogsRequest(key=k))
            async with asyncio.timeout(10):
                async for message in call:
                    seen += sum(1 for x in message.lines if x.kind == pb.LOG_KIND_DATA and x.step_id == 1)
                    if seen >= 3:
                        break
            call.cancel()
        proc.kill9()
        await proc.start_serving()

        async with channel(proc.address) as chan:
            stub = provider_stub(chan)
            mine = statuses(await collect(stub, 0, terminal_for([k]), timeout=20), k)
            assert [u.status for u in mine] == [st.PENDING, st.RUNNING, st.SUCCESS]
            lines = await read_log(stub, k)
            again = await stub.Spawn(request, timeout=10)
            assert [(a.created, a.status) for a in again.acceptances] == [(False, st.SUCCESS)]
    finally:
        proc.kill9()

    assert_well_framed(lines, since)
    step1 = summary([line for line in lines if line.step_id == 1])
    assert step1[0] == ("control", 1, "start", "slow") and step1[-1] == ("control", 1, "end", "slow")
    notes = [i for i, line in enumerate(step1) if line[3] == RESTART_NOTE]
    assert len(notes) == 1, step1
    assert step1[notes[0]][:3] == ("data", 1, "stderr")
    generated = [line[3] for line in step1 if line[3].startswith("slow: line ")]
    assert generated == [f"slow: line {i}" for i in range(1, 21)], "lines lost or repeated across the restart"
    before = [line for line in step1[: notes[0]] if line[0] == "data"]
    assert 3 <= len(before) < 20, "the kill did not land in the middle of the step"
    assert [line.content for line in lines if line.step_id == 2 and line.kind == pb.LOG_KIND_DATA] == ["done"]


# Cancel and Describe


async def test_cancel_of_a_queued_run_skips_running(stub: Stub) -> None:
    """Cancel of a pending run makes it cancelled with no running status; a repeat keeps it cancelled."""
    request = spawn_request([workflow("queued.yml", {"queue_seconds": 3600})])
    k = key(request, "queued.yml")
    await stub.Spawn(request, timeout=10)
    reply = await stub.Cancel(pb.CancelRequest(key=k), timeout=10)
    assert reply.status == st.CANCELLED
    mine = statuses(await collect(stub, 0, reached(k, st.CANCELLED)), k)
    assert [u.status for u in mine] == [st.PENDING, st.CANCELLED]
    assert (await stub.Cancel(pb.CancelRequest(key=k), timeout=10)).status == st.CANCELLED
    assert await read_log(stub, k, timeout=5) == []


async def test_cancel_of_a_running_run_closes_its_step(stub: Stub) -> None:
    """Cancel mid-step ends the run cancelled, with a note and the step's end control in its log."""
    config = {"queue_seconds": 0, "steps": [{"name": "forever", "output_count": 3, "duration": 3600}]}
    request = spawn_request([workflow("forever.yml", config)])
    k = key(request, "forever.yml")
    since = time.time_ns()
    await stub.Spawn(request, timeout=10)
    await collect(stub, 0, reached(k, st.RUNNING))
    reply = await stub.Cancel(pb.CancelRequest(key=k), timeout=10)
    assert reply.status == st.CANCELLED
    mine = statuses(await collect(stub, 0, reached(k, st.CANCELLED)), k)
    assert [u.status for u in mine] == [st.PENDING, st.RUNNING, st.CANCELLED]
    lines = await read_log(stub, k)
    assert_well_framed(lines, since)
    assert summary(lines)[-2:] == [
        ("data", 0, "stderr", "[stub] cancelled by request"),
        ("control", 0, "end", "forever"),
    ]


async def test_cancel_of_an_unknown_run_is_not_found(stub: Stub) -> None:
    """Cancel of a run the stub never accepted fails with NOT_FOUND."""
    unknown = pb.WorkflowKey(knot="knot.test", pipeline_rkey="never", workflow="x.yml")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Cancel(pb.CancelRequest(key=unknown), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_describe_says_stub_and_simulation(stub: Stub) -> None:
    """Describe names the stub and says it is a simulation that cancels and follows logs live."""
    reply = await stub.Describe(pb.DescribeRequest(), timeout=10)
    assert (reply.name, reply.simulation) == ("stub", True)
    assert reply.version and reply.description
    assert (reply.capabilities.cancel, reply.capabilities.live_logs) == (True, True)
