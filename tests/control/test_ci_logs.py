"""sh.tangled.ci.subscribePipelineLogs end to end: the control plane in this event loop, the stub provider as a
process (tack_control.web.ci.subscribe).

Pipelines are written through the real engine and dispatched to the stub,
which runs their scripts and keeps their logs; an appview-like client decodes
every message with an independent CBOR decoder and renders the steps.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from tack_common.pb import provider_pb2 as pb
from tests.fakes.ci_appview import SUBSCRIBE, CiAppview, LiveLogs, LogView
from tests.fakes.provider import RawLogsProvider
from tests.support.ci import KNOT, LINES, Spindle, message, sha, stub_raw
from tests.support.procs import StubProcess


pytestmark = pytest.mark.e2e
REPO = "did:plc:repoaaaaaaaaaaaaaaaaaaaaaa"
RESTART_NOTE = "[stub] provider restarted; resuming this step"


def script(lines: int, duration: float, queue: float = 0, outcome: str = "success") -> str:
    """A stub workflow: one ``build`` step printing ``lines`` lines over ``duration`` seconds."""
    return stub_raw(
        {
            "queue_seconds": queue,
            "steps": [{"name": "build", "command": "make", "output_count": lines, "duration": duration}],
            "outcome": outcome,
        }
    )


def stub_log(stub: StubProcess, rkey: str, workflow: str) -> list[pb.LogLine]:
    """The lines the stub stored for a run."""
    with sqlite3.connect(f"file:{stub.db_path}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute(
            "SELECT l.line FROM stub_log l JOIN runs r ON r.id = l.run_id"
            " WHERE r.knot=? AND r.pipeline_rkey=? AND r.workflow=? ORDER BY l.idx",
            (KNOT, rkey, workflow),
        ).fetchall()
    return [pb.LogLine.FromString(r[0]) for r in rows]


def data_lines(lines: list[pb.LogLine]) -> list[str]:
    return [line.content for line in lines if line.kind == pb.LOG_KIND_DATA]


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubProcess]:
    """The stub provider process."""
    proc = StubProcess(tmp_path)
    await proc.start_serving()
    try:
        yield proc
    finally:
        proc.kill9()


@pytest.fixture
async def spindle(tmp_path: Path, stub: StubProcess) -> AsyncIterator[Spindle]:
    """The control plane, routing to the stub."""
    async with Spindle(tmp_path, {"stub": stub.address}) as running:
        yield running


@pytest.fixture
async def client(spindle: Spindle) -> AsyncIterator[CiAppview]:
    """A lexicon-following CI client of the spindle."""
    async with CiAppview(spindle.url) as appview:
        yield appview


def _clean(view: LogView) -> None:
    assert view.http_status == 101 and not view.timed_out
    assert view.problems == [] and view.errors == []


async def test_every_workflow_is_multiplexed_live_and_the_socket_closes_after_the_last(
    spindle: Spindle, stub: StubProcess, client: CiAppview
) -> None:
    """Three workflows on one socket from the start, interleaved; each complete and in order; close 1000 after the last."""
    workflows = [
        ("quick.yml", script(20, 0.5)),
        ("slow.yml", script(60, 2.5)),
        ("fails.yml", script(30, 1.0, outcome="failed")),
    ]
    (rkey,) = spindle.run(spindle.maker().spec("push", REPO, sha(1), workflows))
    view = await client.read_logs(rkey, timeout=30)
    _clean(view)
    assert view.close_code == 1000
    for name, _ in workflows:
        assert view.lines(name) == data_lines(stub_log(stub, rkey, name))
        assert all(step.ended for step in view.steps[name].values())
    order = [body["workflow"] for _, body in view.messages]
    last = {name: max(i for i, w in enumerate(order) if w == name) for name, _ in workflows}
    first_slow = order.index("slow.yml")
    assert first_slow < last["quick.yml"] < last["slow.yml"], "workflows were not multiplexed live"
    assert len(order) == sum(len(stub_log(stub, rkey, n)) for n, _ in workflows)
    pipeline = await client.get_pipeline(rkey)
    states = {w["name"]: w["status"] for w in pipeline["workflows"]}
    assert states["fails.yml"] in ("running", "failed") and states["quick.yml"] in ("running", "success")


async def test_named_workflows_only_and_duplicates_once(spindle: Spindle, client: CiAppview) -> None:
    """workflows= narrows the subscription to those named (a name given twice is followed once)."""
    (rkey,) = spindle.run(
        spindle.maker().spec("manual", REPO, sha(2), [("a.yml", script(5, 0)), ("b.yml", script(7, 0))])
    )
    view = await client.read_logs(rkey, ("b.yml", "b.yml"), timeout=20)
    _clean(view)
    assert set(view.steps) == {"b.yml"} and len(view.lines("b.yml")) == 7


async def test_a_viewer_attached_mid_run_gets_the_whole_log_then_live_lines(
    spindle: Spindle, stub: StubProcess, client: CiAppview
) -> None:
    """Joining while the step prints: every line from the first, then the rest as they come, then 1000."""
    (rkey,) = spindle.run(spindle.maker().spec("push", REPO, sha(3), [("build.yml", script(200, 3.0))]))
    deadline = time.monotonic() + 15
    while len(stub_log(stub, rkey, "build.yml")) < 40:
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.05)
    live = await client.open_logs(rkey)
    assert isinstance(live, LiveLogs)
    while len(live.view.messages) < 10:
        assert await live.next(10)
    early_stored = len(stub_log(stub, rkey, "build.yml"))
    view = await live.until_closed(30)
    _clean(view)
    assert view.close_code == 1000
    stored = stub_log(stub, rkey, "build.yml")
    assert early_stored < len(stored), "the run had ended: nothing came live"
    assert view.lines("build.yml") == data_lines(stored) and len(view.messages) == len(stored)


async def test_a_pipeline_not_started_yet_upgrades_and_waits(spindle: Spindle, client: CiAppview) -> None:
    """Queued workflows: the socket opens at once, stays quiet (pinged), then the log comes and the socket closes."""
    (rkey,) = spindle.run(
        spindle.maker().spec("push", REPO, sha(4), [("build.yml", script(3, 0, queue=2.5))])
    )
    live = await client.open_logs(rkey)
    assert isinstance(live, LiveLogs)
    with pytest.raises(TimeoutError):
        await live.next(1.5)
    view = await live.until_closed(20)
    _clean(view)
    assert view.close_code == 1000 and len(view.lines("build.yml")) == 3


async def test_an_idle_subscription_is_pinged(spindle: Spindle, client: CiAppview) -> None:
    """While a queued workflow gives nothing to send, the socket gets WebSocket pings (TACK_PING_INTERVAL, 1 s here)."""
    (rkey,) = spindle.run(spindle.maker().spec("push", REPO, sha(9), [("build.yml", script(1, 0, queue=30))]))
    url = f"{client.base_url.replace('http', 'ws', 1)}/xrpc/{SUBSCRIBE}"
    async with client.session.ws_connect(url, params={"pipeline": rkey}, autoping=False) as ws:
        for _ in range(2):
            message = await ws.receive(timeout=15)
            assert message.type is aiohttp.WSMsgType.PING, message
            await ws.pong(message.data)


async def test_a_workflow_tack_failed_shows_why_in_its_log(spindle: Spindle, client: CiAppview) -> None:
    """An unroutable workflow's log is tack's one step with the reason; the routed one streams beside it."""
    (rkey,) = spindle.run(
        spindle.maker().spec("push", REPO, sha(5), [("plain.yml", "steps: []\n"), ("ok.yml", script(2, 0))])
    )
    view = await client.read_logs(rkey, timeout=20)
    _clean(view)
    [step] = view.steps["plain.yml"].values()
    assert step.name == "tack" and step.ended and "tack:" in "".join(step.lines)
    assert len(view.lines("ok.yml")) == 2


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ([("pipeline", "3mr7m2f6ger22")], "PipelineNotFound"),
        ([("pipeline", "nope")], "InvalidRequest"),
        ([], "InvalidRequest"),
        ([("pipeline", "{rkey}"), ("workflows", "missing.yml")], "WorkflowNotFound"),
    ],
)
async def test_unknown_or_malformed_ids_are_refused_before_the_upgrade(
    spindle: Spindle, client: CiAppview, query: list[tuple[str, str]], error: str
) -> None:
    """400 JSON with the lexicon's error, never an upgrade; a plain GET of a known pipeline is refused too."""
    (rkey,) = spindle.run(spindle.maker().spec("push", REPO, sha(6), [("build.yml", script(1, 0))]))
    params = [(k, v.format(rkey=rkey)) for k, v in query]
    url = f"{client.base_url}/xrpc/{SUBSCRIBE}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.session.ws_connect(url, params=params)
    assert refused.value.status == 400
    async with client.session.get(url, params=params) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == error
    async with client.session.get(url, params=[("pipeline", rkey)]) as resp:
        assert resp.status == 400 and "WebSocket" in (await resp.json())["message"]


@pytest.mark.timeout(90)
async def test_kill_9_of_the_provider_mid_log_resumes_the_rest_once(
    spindle: Spindle, stub: StubProcess, client: CiAppview
) -> None:
    """The stub is killed while a viewer reads; once it is back the viewer gets the rest, each line once, then 1000."""
    (rkey,) = spindle.run(spindle.maker().spec("push", REPO, sha(7), [("build.yml", script(300, 4.0))]))
    live = await client.open_logs(rkey)
    assert isinstance(live, LiveLogs)
    while len(live.view.messages) < 30:
        assert await live.next(15)
    stub.kill9()
    await asyncio.sleep(1.0)
    await stub.start_serving()
    view = await live.until_closed(60)
    _clean(view)
    assert view.close_code == 1000
    stored = stub_log(stub, rkey, "build.yml")
    assert RESTART_NOTE in data_lines(stored)
    assert view.lines("build.yml") == data_lines(stored) and len(view.messages) == len(stored)
    assert (REGISTRY.get_sample_value("tack_ci_log_follows_total", {"outcome": "resumed"}) or 0) >= 1


def _encoded() -> float:
    return REGISTRY.get_sample_value("tack_logs_messages_total", {"source": "encoded"}) or 0.0


async def test_viewers_share_encodings_and_a_malformed_message_ends_with_an_error_frame(
    tmp_path: Path,
) -> None:
    """Three viewers cost one CBOR encoding per message; bad bytes: lines before, a note, error frame, close 1011."""
    provider = RawLogsProvider([message(LINES[:4]), message(LINES[4:])])
    await provider.start()
    try:
        async with Spindle(tmp_path, {"stub": provider.address}) as spindle, CiAppview(spindle.url) as client:
            (rkey,) = spindle.run(spindle.maker().spec("push", REPO, sha(8), [("build.yml", script(1, 0))]))
            deadline = time.monotonic() + 10
            while spindle.core.conn.execute("SELECT dispatch FROM workflows").fetchone()[0] != "accepted":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            before = _encoded()
            views = [await client.read_logs(rkey, timeout=10) for _ in range(3)]
            assert _encoded() - before == 2
            for view in views:
                _clean(view)
                assert view.lines("build.yml") == [f"line {i}" for i in range(6)]
            provider.messages = [message(LINES[:4]), b"\x0a\x7f\x08\x01"]
            broken = await client.read_logs(rkey, timeout=10)
            assert broken.close_code == 1011 and broken.problems == []
            assert broken.lines("build.yml")[:3] == ["line 0", "line 1", "line 2"]
            assert "malformed" in broken.lines("build.yml")[-1]
            [error] = broken.errors
            assert error["error"] == "LogIncomplete" and "build.yml" in error["message"]
    finally:
        await provider.stop()
