"""Figures 8 and 9: the CI API the current appview reads.

8. ``queryPipelines`` (30 commits; pages at random cursors) and ``getPipeline``
   latency on a database of ``ci_pipelines`` pipelines, written through the
   real engine before the control plane starts. One client process sends the
   requests one after another; the limit is a bare aiohttp server answering
   the same response bytes to the same client.
9. The log subscription in CBOR: a finished ``log_lines``-line log replayed to
   one client, and ``viewers`` viewers of one running log; the limits send the
   same pre-encoded binary frames through the same socket mechanics
   (``sender.frame_binaries``, chunked writes, aiohttp's drain).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from tack_common.status import TERMINAL_NAMES
from tack_control.engine.db import open_db
from tack_control.engine.eventlog import EventLog
from tack_control.engine.pipelines import Pipelines, PipelineSpec, Routed
from tack_control.engine.statuses import StatusBook
from tack_control.ingest.routing import route
from tack_control.ingest.wire import Clone, Workflow
from tack_control.web.ci.logcbor import cbor_messages
from tests.bench.figures import Bench, logs_run, ms, per_second, start_limit, wait_idle
from tests.bench.limits import write_messages
from tests.bench.report import Floor, Row, percentile
from tests.bench.stack import WORKFLOW, BenchStack
from tests.support.ci import STUB_DEFAULT, record, sha


QUERY = "/xrpc/sh.tangled.ci.queryPipelines"
GET = "/xrpc/sh.tangled.ci.getPipeline"
SUBSCRIBE = "/xrpc/sh.tangled.ci.subscribePipelineLogs"
BUSY_REPO = "did:plc:benchbusy00000000000000000"
OTHER_REPOS = 49
KINDS = ("push",) * 7 + ("pull_request",) * 2 + ("manual",)


@dataclass(frozen=True)
class Filled:
    """What the benchmark database holds for the busy repository."""

    commits: list[str]
    created: list[int]
    rkeys: list[str]


def fill_pipelines(path: Path, count: int) -> Filled:
    """``count`` two-workflow pipelines through the engine: half in one busy repo (two per commit), the rest in 49 others.

    The workflows are then marked finished (success, with times), so the
    control plane has nothing to dispatch while it is measured.
    """
    conn = open_db(str(path))
    events = EventLog(conn)
    book = StatusBook(conn, events)
    pipelines = Pipelines(book, events)
    routed = [
        Routed(Workflow(n, "tack", STUB_DEFAULT, Clone()), route(STUB_DEFAULT, ["stub"], None))
        for n in ("build.yml", "lint.yml")
    ]
    busy: list[str] = []
    for start in range(0, count, 1000):
        with book.transaction() as tx:
            for i in range(start, min(count, start + 1000)):
                repo = BUSY_REPO if i % 2 == 0 else f"did:plc:benchother{i % OTHER_REPOS:014d}"
                kind = KINDS[i % len(KINDS)]
                commit = sha(i // 4)
                rkey = pipelines.mint_rkey()
                pipelines.create(
                    tx,
                    PipelineSpec(
                        knot="knot.bench",
                        rkey=rkey,
                        record=record(kind, repo, commit, ["build.yml", "lint.yml"], knot="knot.bench"),
                        repo_did=repo,
                        kind=kind,
                        commit=commit,
                        origin={"push": "push", "pull_request": "pull", "manual": "manual"}[kind],
                        workflows=routed,
                    ),
                )
                if repo == BUSY_REPO:
                    busy.append(rkey)
    events.discard()
    with book.transaction() as tx:
        tx.execute(
            "UPDATE workflows SET status='success', dispatch='accepted', started_s=1784698510, finished_s=1784698570"
        )
        tx.execute("DELETE FROM status_queue")
    rows = conn.execute(
        "SELECT commit_sha, created_ns FROM pipelines WHERE repo_did=? ORDER BY created_ns", (BUSY_REPO,)
    ).fetchall()
    conn.close()
    return Filled(sorted({c for c, _ in rows}), [c for _, c in rows], busy)


def _paths(filled: Filled, count: int, rng: random.Random) -> dict[str, list[str]]:
    """Request paths of each measured kind."""
    commits = [
        QUERY
        + "?"
        + urlencode([("repo", BUSY_REPO), *(("commits", c) for c in rng.sample(filled.commits, 30))])
        for _ in range(count)
    ]
    pages = [
        QUERY + "?" + urlencode({"repo": BUSY_REPO, "cursor": str(rng.choice(filled.created[60:]))})
        for _ in range(count)
    ]
    gets = [GET + "?" + urlencode({"pipeline": rng.choice(filled.rkeys)}) for _ in range(count)]
    return {"commits": commits, "paging": pages, "get": gets}


async def _timed(bench: Bench, base: str, paths: list[str]) -> list[float]:
    paths_file = bench.workdir / "ci" / "paths.json"
    paths_file.write_text(json.dumps(paths))
    client = bench.worker("clients", "xrpc", {"base": base, "paths_file": str(paths_file), "warmup": 50})
    async with bench.workers([client]):
        done = await client.expect("done", timeout=600)
    return [ms(v) for v in done["latency_ns"]]


async def ci_queries(bench: Bench) -> list[Row]:
    """Figure 8: queryPipelines (commits, paging) and getPipeline latency on a big database, and a bare server's."""
    n, requests = bench.sizes.ci_pipelines, bench.sizes.ci_requests
    workdir = bench.workdir / "ci"
    workdir.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(workdir, stub=False)
    await stack.jetstream.start()
    await stack.knot.start()
    bench.progress(f"  writing {n:,} pipelines through the engine")
    filled = fill_pipelines(stack.db_path, n)
    rng = random.Random(8)
    results: dict[str, list[list[float]]] = {k: [] for k in ("commits", "paging", "get")}
    limits: dict[str, list[list[float]]] = {k: [] for k in results}
    bodies: dict[str, str] = {}
    limit = None
    try:
        await stack.start_control()
        base = f"http://{stack.cp.hostname}"
        async with aiohttp.ClientSession() as session:
            for kind, paths in _paths(filled, 1, rng).items():
                async with session.get(base + paths[0]) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{paths[0]}: HTTP {resp.status}")
                if kind == "commits" and len(json.loads(body)["pipelines"]) != 30:
                    raise RuntimeError("a 30-commit query did not answer 30 pipelines")
                bodies[kind] = str(workdir / f"{kind}.json")
                Path(bodies[kind]).write_bytes(body)
        limit = bench.worker("limits", "http", {"bodies": bodies})
        port = await start_limit(limit)
        for run in range(bench.sizes.runs):
            for kind, paths in _paths(filled, requests, rng).items():
                results[kind].append(await _timed(bench, base, paths))
                bare = [f"/{kind}?{p.split('?', 1)[1]}" for p in paths]
                limits[kind].append(await _timed(bench, f"http://127.0.0.1:{port}", bare))
            bench.progress(
                f"  run {run + 1}: "
                + "; ".join(
                    f"{k} p50 {percentile(results[k][-1], 50):.2f} p99 {percentile(results[k][-1], 99):.2f} ms"
                    f" (bare {percentile(limits[k][-1], 99):.2f})"
                    for k in results
                )
            )
    finally:
        if limit is not None:
            await limit.close()
        await stack.stop()

    def p(kind: str, q: float, source: dict[str, list[list[float]]]) -> list[float]:
        return [percentile(values, q) for values in source[kind]]

    note = (
        f"{n:,} pipelines (2 workflows each; half in one repository, two per commit; the rest in {OTHER_REPOS}"
        f" others) written through the engine; {requests} sequential requests per run from one client process."
        " Limit: a bare aiohttp server answering the same response bytes to the same client."
    )
    return [
        Row(
            "8",
            "queryPipelines, commits= 30 SHAs, p99",
            "ms",
            "lower",
            p("commits", 99, results),
            p("commits", 99, limits),
            [Floor("max", 5)],
            note,
            {"p50": p("commits", 50, results), "pipelines": n},
        ),
        Row(
            "8",
            "queryPipelines, pages of 50 at random cursors, p99",
            "ms",
            "lower",
            p("paging", 99, results),
            p("paging", 99, limits),
            [Floor("max", 5)],
            details={"p50": p("paging", 50, results)},
        ),
        Row(
            "8",
            "getPipeline, p99",
            "ms",
            "lower",
            p("get", 99, results),
            p("get", 99, limits),
            [Floor("max", 2)],
            details={"p50": p("get", 50, results)},
        ),
    ]


def _stub_log_messages(stack: BenchStack, rkey: str) -> list[bytes]:
    """The subscription messages tack sends for the stub's stored log of a run (the limit sends these)."""
    return cbor_messages(stack.stub_log(rkey), WORKFLOW)


def _subscribe_url(stack: BenchStack, rkey: str) -> str:
    return f"ws://{stack.cp.hostname}{SUBSCRIBE}?pipeline={rkey}"


async def ci_logs(bench: Bench, stack: BenchStack) -> list[Row]:
    """Figure 9: a finished log replayed in CBOR to one client; viewers of a running log; each against its limit."""
    lines = bench.sizes.log_lines
    await wait_idle(stack)
    script = {
        "queue_seconds": 0,
        "steps": [{"name": "build", "command": "make", "output_count": lines, "duration": 0}],
    }
    (rkey,) = await stack.knot.push_pipelines([stack.stub_pipeline(script)])
    await stack.wait_status(rkey, TERMINAL_NAMES)
    messages = _stub_log_messages(stack, rkey)
    expect = len(messages)
    messages_file = bench.workdir / "ci-log-messages.bin"
    write_messages(messages_file, messages)
    del messages
    replay: list[float] = []
    replay_limit: list[float] = []
    bare = bench.worker("limits", "ws", {"messages_file": str(messages_file)})
    async with bench.workers([bare]) as (ready,):
        for run in range(bench.sizes.runs):
            values = []
            for url in (_subscribe_url(stack, rkey), f"ws://127.0.0.1:{ready['port']}/logs"):
                done = await logs_run(bench, url, 1)
                if done["frames"] != expect or done["codes"] != [1000]:
                    raise RuntimeError(
                        f"CBOR log delivered {done['frames']} of {expect} frames, close {done['codes']}"
                    )
                values.append(per_second(expect, done["started_ns"], done["end_ns"]))
            replay.append(values[0])
            replay_limit.append(values[1])
            bench.progress(
                f"  run {run + 1}: CBOR replay tack {values[0]:,.0f} lines/s, limit {values[1]:,.0f}"
            )
    viewers, viewer_lines = bench.sizes.viewers, bench.sizes.viewer_lines
    live = {
        "queue_seconds": 2,
        "steps": [{"name": "build", "command": "make", "output_count": viewer_lines, "duration": 0}],
    }
    watched: list[float] = []
    watched_limit: list[float] = []
    for run in range(bench.sizes.runs):
        await wait_idle(stack)
        (rkey,) = await stack.knot.push_pipelines([stack.stub_pipeline(live)])
        done = await logs_run(bench, _subscribe_url(stack, rkey), viewers)
        if done["min_frames"] != viewer_lines + 2:
            raise RuntimeError(f"a viewer got {done['min_frames']} of {viewer_lines + 2} frames")
        watched.append(per_second(done["frames"], done["first_ns"], done["end_ns"]))
        file = bench.workdir / f"ci-viewer-messages-{run}.bin"
        write_messages(file, _stub_log_messages(stack, rkey))
        limit = bench.worker("limits", "ws", {"messages_file": str(file)})
        port = await start_limit(limit)
        try:
            ldone = await logs_run(bench, f"ws://127.0.0.1:{port}/logs", viewers)
        finally:
            await limit.close()
        watched_limit.append(per_second(ldone["frames"], ldone["first_ns"], ldone["end_ns"]))
        bench.progress(
            f"  run {run + 1}: {viewers} CBOR viewers: tack {watched[-1]:,.0f} frames/s, limit {watched_limit[-1]:,.0f}"
        )
    return [
        Row(
            "9",
            f"log subscription (CBOR) replay of a finished {lines:,}-line log, one client",
            "lines/s",
            "higher",
            replay,
            replay_limit,
            [Floor("ratio", 0.5)],
            "Stub provider -> gRPC Logs -> control plane -> one subscribePipelineLogs client, connect to close."
            " Limit: a bare aiohttp server sending the same pre-encoded binary frames the same way.",
            {"frames": expect},
        ),
        Row(
            "9",
            f"log subscription (CBOR), {viewers} concurrent viewers of one running {viewer_lines:,}-line log",
            "frames/s",
            "higher",
            watched,
            watched_limit,
            [Floor("ratio", 0.5)],
            "Viewers subscribe while the run is pending and follow it live; frames/s over all viewers, first"
            " frame to last close. Limit: a bare aiohttp server sending the same binary frames to as many viewers.",
        ),
    ]
