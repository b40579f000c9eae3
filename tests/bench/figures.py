"""The seven figures of ``make bench``: tack's number and its limit, measured alternately in each run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tack_common import sqlite as kit_sqlite
from tack_common.status import TERMINAL_NAMES
from tack_common.timefmt import NS_PER_SECOND
from tack_control.engine.db import open_db
from tack_control.engine.eventlog import STATUS_NSID, EventLog
from tack_control.engine.statuses import status_record
from tests.bench.limits import write_frames, write_messages
from tests.bench.report import Floor, Row, percentile
from tests.bench.stack import (
    INSTANT,
    WORKFLOW,
    BenchKnot,
    BenchStack,
    log_frames,
    log_messages,
    read_rss_mb,
)
from tests.bench.workers import JsonDict, Worker, close_all, start_all
from tests.support.procs import StubProcess, wait_serving
from tests.support.stack import OWNER, stub_workflow


TERMINAL = TERMINAL_NAMES
UNROUTABLE_PER_PIPELINE = 250


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; :data:`FULL` for ``make bench``, :data:`QUICK` for the smoke test."""

    runs: int
    client_procs: int
    throughput_workflows: int
    latency_rate: float
    latency_seconds: float
    fanout_subscribers: int
    fanout_events: int
    backfill_events: int
    log_lines: int
    viewers: int
    viewer_lines: int
    idle_subscribers: int
    slow_log_lines: int
    slow_rate: int
    slow_seconds: float
    spawns: int
    spawn_interval: float
    ci_pipelines: int
    ci_requests: int
    push_latency_pushes: int


FULL = Sizes(
    runs=3,
    client_procs=2,
    throughput_workflows=2000,
    latency_rate=50,
    latency_seconds=10,
    fanout_subscribers=1000,
    fanout_events=1000,
    backfill_events=100_000,
    log_lines=200_000,
    viewers=100,
    viewer_lines=10_000,
    idle_subscribers=1000,
    slow_log_lines=1_000_000,
    slow_rate=2000,
    slow_seconds=10,
    spawns=300,
    spawn_interval=0.01,
    ci_pipelines=100_000,
    ci_requests=2000,
    push_latency_pushes=50,
)
QUICK = Sizes(
    runs=1,
    client_procs=2,
    throughput_workflows=40,
    latency_rate=50,
    latency_seconds=1,
    fanout_subscribers=20,
    fanout_events=50,
    backfill_events=2000,
    log_lines=2000,
    viewers=4,
    viewer_lines=500,
    idle_subscribers=20,
    slow_log_lines=5000,
    slow_rate=2000,
    slow_seconds=1,
    spawns=20,
    spawn_interval=0.01,
    ci_pipelines=2000,
    ci_requests=100,
    push_latency_pushes=5,
)


class Bench:
    """What every figure needs: sizes, a scratch directory, worker processes, progress output."""

    def __init__(self, sizes: Sizes, workdir: Path, progress: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.progress = progress
        self._workers = 0

    def worker(self, module: str, role: str, args: JsonDict) -> Worker:
        """A worker process (not yet started) logging into the scratch directory."""
        self._workers += 1
        logs = self.workdir / "workers"
        logs.mkdir(parents=True, exist_ok=True)
        return Worker(module, role, args, logs / f"{self._workers:03d}-{module}-{role}.log")

    def split(self, total: int) -> list[int]:
        """``total`` connections spread over the client processes."""
        procs = max(1, min(self.sizes.client_procs, total))
        return [total // procs + (1 if i < total % procs else 0) for i in range(procs)]

    @contextlib.asynccontextmanager
    async def workers(self, workers: list[Worker], timeout: float = 120.0) -> AsyncIterator[list[JsonDict]]:
        """Start workers (their ``ready`` messages are yielded) and always stop them."""
        try:
            yield await start_all(workers, timeout)
        finally:
            await close_all(workers)


def per_second(count: float, start_ns: int, end_ns: int) -> float:
    return count / max((end_ns - start_ns) / 1e9, 1e-9)


def ms(ns: float) -> float:
    return ns / 1e6


async def wait_idle(stack: BenchStack, timeout: float = 120.0) -> None:
    """Wait until no workflow is in flight and no status is held, so no stray event reaches the next figure."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True, timeout=10) as conn:
            busy = conn.execute(
                "SELECT (SELECT COUNT(*) FROM workflows WHERE status IN ('', 'pending', 'running'))"
                " + (SELECT COUNT(*) FROM status_queue)"
            ).fetchone()[0]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{busy} workflows still in flight after {timeout:g}s")
        await asyncio.sleep(0.2)


# Figures 1 and 2: triggers


async def _track_run(
    bench: Bench,
    url: str,
    knot: BenchKnot,
    records: list[dict[str, Any]],
    rate: float | None,
    until: tuple[str, ...],
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Push ``records`` through ``knot`` (paced at ``rate``, or as fast as read) while one client tracks /events."""
    client = bench.worker(
        "clients",
        "events",
        {"url": url, "connections": 1, "mode": "track", "expect": len(records), "until": list(until)},
    )
    async with bench.workers([client]):
        rkeys = await (knot.pace(records, rate) if rate else knot.push_pipelines(records))
        done = await client.expect("done", timeout=120 + len(records) / 20)
    seen: dict[str, dict[str, int]] = {}
    for rkey, status, at in done["records"]:
        seen.setdefault(rkey, {}).setdefault(status, at)
    return rkeys, seen


def _throughput(
    knot: BenchKnot, rkeys: list[str], seen: dict[str, dict[str, int]]
) -> tuple[float, float, int]:
    """(workflows/s to terminal status, pipelines/s to pending, how many ended in success)."""
    start = min(knot.sent_ns[r] for r in rkeys)
    terminal = [next(seen[r][s] for s in TERMINAL if s in seen[r]) for r in rkeys]
    pending = [seen[r]["pending"] for r in rkeys]
    successes = sum(1 for r in rkeys if "success" in seen[r])
    return (
        per_second(len(rkeys), start, max(terminal)),
        per_second(len(rkeys), start, max(pending)),
        successes,
    )


async def trigger_throughput(bench: Bench, stack: BenchStack) -> list[Row]:
    """Figure 1: pipelines pushed as fast as tack reads them, instant stub runs → workflows/s to terminal status."""
    n = bench.sizes.throughput_workflows
    limit_knot = BenchKnot()
    await limit_knot.start()
    relay = bench.worker("limits", "relay", {"knot_url": limit_knot.url})
    tack_runs: list[float] = []
    limit_runs: list[float] = []
    intake: list[float] = []
    limit_intake: list[float] = []
    try:
        async with bench.workers([relay]) as (ready,):
            relay_url = f"ws://127.0.0.1:{ready['port']}/events"
            for run in range(bench.sizes.runs):
                await wait_idle(stack)
                records = [stack.stub_pipeline(INSTANT) for _ in range(n)]
                rkeys, seen = await _track_run(bench, stack.events_url(), stack.knot, records, None, TERMINAL)
                rate, accepted, ok = _throughput(stack.knot, rkeys, seen)
                if ok != n:
                    raise RuntimeError(f"only {ok} of {n} workflows ended in success")
                tack_runs.append(rate)
                intake.append(accepted)
                rkeys, seen = await _track_run(bench, relay_url, limit_knot, records, None, TERMINAL)
                lrate, laccepted, _ = _throughput(limit_knot, rkeys, seen)
                limit_runs.append(lrate)
                limit_intake.append(laccepted)
                bench.progress(
                    f"  run {run + 1}: tack {rate:.0f} workflows/s (pending at {accepted:.0f}/s), limit {lrate:.0f}/s"
                )
    finally:
        await limit_knot.stop()
    note = (
        f"{n} one-workflow pipelines pushed as fast as read; rate = n / (last terminal status on /events - first knot frame)."
        " Each workflow's statuses are published >= 1 s apart by design, so every workflow takes >= 2 s from"
        " trigger to terminal status; the figure is a completion rate with many workflows in flight."
        " Limit: a relay (separate process) that reads the same knot frames the same way and broadcasts"
        " pending/running/success at once (no database, no gRPC, no state machine, no spacing)."
    )
    return [
        Row(
            "1",
            "trigger throughput (trigger -> terminal status)",
            "workflows/s",
            "higher",
            tack_runs,
            limit_runs,
            [Floor("min", 200)],
            note,
            {"workflows": n},
        ),
        Row(
            "1",
            "trigger intake (trigger -> pending)",
            "workflows/s",
            "higher",
            intake,
            limit_intake,
            note="Same runs: n / (last pending on /events - first knot frame).",
        ),
    ]


async def trigger_latency(bench: Bench, stack: BenchStack) -> list[Row]:
    """Figure 2: one pipeline every 20 ms; knot frame sent → ``pending`` received on /events."""
    rate = bench.sizes.latency_rate
    n = max(1, int(rate * bench.sizes.latency_seconds))
    limit_knot = BenchKnot()
    await limit_knot.start()
    relay = bench.worker("limits", "relay", {"knot_url": limit_knot.url})
    p50: list[float] = []
    p99: list[float] = []
    lp50: list[float] = []
    lp99: list[float] = []
    try:
        async with bench.workers([relay]) as (ready,):
            relay_url = f"ws://127.0.0.1:{ready['port']}/events"
            for run in range(bench.sizes.runs):
                await wait_idle(stack)
                for knot, url, out50, out99 in (
                    (stack.knot, stack.events_url(), p50, p99),
                    (limit_knot, relay_url, lp50, lp99),
                ):
                    records = [stack.stub_pipeline(INSTANT) for _ in range(n)]
                    rkeys, seen = await _track_run(bench, url, knot, records, rate, ("pending",))
                    latencies = [ms(seen[r]["pending"] - knot.sent_ns[r]) for r in rkeys]
                    out50.append(percentile(latencies, 50))
                    out99.append(percentile(latencies, 99))
                bench.progress(
                    f"  run {run + 1}: tack p50 {p50[-1]:.2f} ms p99 {p99[-1]:.2f} ms;"
                    f" limit p50 {lp50[-1]:.2f} ms p99 {lp99[-1]:.2f} ms"
                )
    finally:
        await limit_knot.stop()
    note = f"{n} pipelines at {rate:g}/s; knot frame written -> pending frame read by an /events client. Limit: the relay of figure 1."
    return [
        Row(
            "2",
            "trigger latency p50 (knot frame -> pending)",
            "ms",
            "lower",
            p50,
            lp50,
            note=note,
            details={"pipelines": n},
        ),
        Row(
            "2",
            "trigger latency p99 (knot frame -> pending)",
            "ms",
            "lower",
            p99,
            lp99,
            [Floor("max", 50)],
            note,
        ),
    ]


# Figure 3: /events fan-out


async def _fanout_run(bench: Bench, url: str, expect: int, trigger: Callable[[], Any]) -> tuple[float, int]:
    """Subscribers connect, ``trigger`` makes ``expect`` events; (frames/s from first to last frame, min frames)."""
    clients = [
        bench.worker("clients", "events", {"url": url, "connections": k, "mode": "count", "expect": expect})
        for k in bench.split(bench.sizes.fanout_subscribers)
    ]
    async with bench.workers(clients):
        await trigger()
        results = [await c.expect("done", timeout=300) for c in clients]
    frames = sum(r["frames"] for r in results)
    first = min(r["first_ns"] for r in results)
    last = max(r["last_ns"] for r in results)
    return per_second(frames, first, last), min(r["min_frames"] for r in results)


async def events_fanout(bench: Bench, stack: BenchStack) -> list[Row]:
    """Figure 3: ``fanout_subscribers`` on /events, ``fanout_events`` new events → frames/s delivered."""
    subs, events = bench.sizes.fanout_subscribers, bench.sizes.fanout_events
    sizes = [min(UNROUTABLE_PER_PIPELINE, events - i) for i in range(0, events, UNROUTABLE_PER_PIPELINE)]
    tack_runs: list[float] = []
    limit_runs: list[float] = []
    limit: Worker | None = None
    port = 0
    frames_file = bench.workdir / "fanout-frames.txt"
    try:
        for run in range(bench.sizes.runs):
            await wait_idle(stack)

            async def push() -> None:
                await stack.knot.push_pipelines([stack.unroutable_pipeline(k) for k in sizes])

            rate, least = await _fanout_run(bench, stack.events_url(), events, push)
            if least != events:
                raise RuntimeError(f"a subscriber got {least} of {events} events")
            tack_runs.append(rate)
            if limit is None:
                write_frames(frames_file, stack.events_frames(events))
                limit = bench.worker("limits", "ws", {"frames_file": str(frames_file)})
                port = int((await limit.start())["port"])
            go = functools.partial(limit.ask, "go", "went")
            lrate, least = await _fanout_run(bench, f"ws://127.0.0.1:{port}/events", events, go)
            if least != events:
                raise RuntimeError(f"a limit subscriber got {least} of {events} frames")
            limit_runs.append(lrate)
            bench.progress(f"  run {run + 1}: tack {rate:,.0f} frames/s, limit {lrate:,.0f} frames/s")
    finally:
        if limit is not None:
            await limit.close()
    note = (
        f"{subs} live subscribers, {events} new events (workflows failed at intake, {len(sizes)} pipelines);"
        " frames/s from the first frame any subscriber reads to the last. Limit: a bare aiohttp server sending"
        " the same pre-encoded frames to the same clients."
    )
    return [
        Row(
            "3",
            f"/events fan-out ({subs} subscribers x {events} events)",
            "frames/s",
            "higher",
            tack_runs,
            limit_runs,
            [Floor("ratio", 0.5)],
            note,
        )
    ]


async def start_limit(worker: Worker) -> int:
    """Start a limit server; its port."""
    return int((await worker.start())["port"])


# Figure 4: backfill


def fill_events(path: Path, count: int, knot: str) -> int:
    """Store ``count`` status events in a fresh control plane database; returns the first ``created``."""
    conn = open_db(str(path))
    events = EventLog(conn)
    second = time.time_ns() // NS_PER_SECOND
    first = 0
    statuses = ("pending", "running", "success")
    with kit_sqlite.Transaction(conn):
        for i in range(count):
            record = status_record(knot, f"3bf{i // 3:010d}", WORKFLOW, statuses[i % 3], second, "", None)
            created, _ = events.insert(conn, STATUS_NSID, record)
            first = first or created
    events.discard()
    conn.close()
    return first


async def events_backfill(bench: Bench) -> list[Row]:
    """Figure 4: ``backfill_events`` stored events drained from an old cursor by one client."""
    n = bench.sizes.backfill_events
    workdir = bench.workdir / "backfill"
    workdir.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(workdir, stub=False)
    await stack.jetstream.start()
    await stack.knot.start()
    fill_events(stack.db_path, n, stack.knot.hostname)
    limit = bench.worker("limits", "ws", {"db_path": str(stack.db_path)})
    tack_runs: list[float] = []
    limit_runs: list[float] = []
    seconds: list[float] = []
    try:
        await stack.start_control()
        port = await start_limit(limit)
        for run in range(bench.sizes.runs):
            values = []
            for url in (stack.events_url(cursor=1), f"ws://127.0.0.1:{port}/backfill?cursor=1"):
                client = bench.worker(
                    "clients", "events", {"url": url, "connections": 1, "mode": "count", "expect": n}
                )
                async with bench.workers([client]):
                    done = await client.expect("done", timeout=300)
                if done["frames"] != n:
                    raise RuntimeError(f"backfill delivered {done['frames']} of {n} events")
                values.append(
                    (
                        per_second(n, done["started_ns"], done["last_ns"]),
                        (done["last_ns"] - done["started_ns"]) / 1e9,
                    )
                )
            tack_runs.append(values[0][0])
            seconds.append(values[0][1])
            limit_runs.append(values[1][0])
            bench.progress(
                f"  run {run + 1}: tack {values[0][0]:,.0f} events/s ({values[0][1]:.2f} s), limit {values[1][0]:,.0f} events/s"
            )
    finally:
        await limit.close()
        await stack.stop()
    note = (
        f"{n:,} events stored before start, drained from cursor=1 by one client (connect to last frame)."
        " Limit: a bare aiohttp server reading the same table in pages of 500 and sending each frame."
    )
    return [
        Row(
            "4",
            f"/events backfill ({n:,} events)",
            "events/s",
            "higher",
            tack_runs,
            limit_runs,
            [Floor("ratio", 0.5)],
            note,
        ),
        Row(
            "4",
            f"/events backfill time ({n:,} events)",
            "s",
            "lower",
            seconds,
            [n / r for r in limit_runs],
            [Floor("max", 5.0)],
        ),
    ]


# Figure 5: /logs


async def logs_run(bench: Bench, url: str, viewers: int, before: Callable[[], Any] | None = None) -> JsonDict:
    """``viewers`` /logs readers over the client processes; aggregate of their ``done`` messages."""
    clients = [bench.worker("clients", "logs", {"url": url, "viewers": k}) for k in bench.split(viewers)]
    async with bench.workers(clients):
        if before is not None:
            await before()
        results = [await c.expect("done", timeout=600) for c in clients]
    return {
        "frames": sum(r["frames"] for r in results),
        "min_frames": min(r["min_frames"] for r in results),
        "started_ns": min(r["started_ns"] for r in results),
        "first_ns": min(r["first_ns"] for r in results),
        "end_ns": max(r["end_ns"] for r in results),
        "codes": sorted({c for r in results for c in r["codes"]}),
    }


async def logs_streaming(bench: Bench, stack: BenchStack) -> list[Row]:
    """Figure 5: a finished ``log_lines`` log replayed to one client; 100 viewers of one running log."""
    lines = bench.sizes.log_lines
    await wait_idle(stack)
    script = {
        "queue_seconds": 0,
        "steps": [{"name": "build", "command": "make", "output_count": lines, "duration": 0}],
    }
    (rkey,) = await stack.knot.push_pipelines([stack.stub_pipeline(script)])
    await stack.wait_status(rkey, TERMINAL)
    log = stack.stub_log(rkey)
    expect = len(log)
    frames_file, messages_file = bench.workdir / "log-frames.txt", bench.workdir / "log-messages.bin"
    write_frames(frames_file, log_frames(log))
    write_messages(messages_file, log_messages(log))
    del log
    assert stack.stub is not None
    bare_ws = bench.worker("limits", "ws", {"frames_file": str(frames_file)})
    bare_grpc = bench.worker("limits", "grpc", {"logs_file": str(messages_file)})
    tack_runs: list[float] = []
    limit_runs: list[float] = []
    grpc_tack: list[float] = []
    grpc_limit: list[float] = []
    async with bench.workers([bare_ws, bare_grpc]) as (ws_ready, grpc_ready):
        key = {"knot": stack.knot.hostname, "rkey": rkey, "workflow": WORKFLOW}
        readers = [
            bench.worker("clients", "grpclogs", {"address": stack.stub.address, **key}),
            bench.worker("clients", "grpclogs", {"address": f"127.0.0.1:{grpc_ready['port']}", **key}),
        ]
        async with bench.workers(readers):
            for run in range(bench.sizes.runs):
                values = []
                for url in (stack.logs_url(rkey), f"ws://127.0.0.1:{ws_ready['port']}/logs"):
                    done = await logs_run(bench, url, 1)
                    if done["frames"] != expect or done["codes"] != [1000]:
                        raise RuntimeError(
                            f"/logs delivered {done['frames']} of {expect} frames, close {done['codes']}"
                        )
                    values.append(per_second(expect, done["started_ns"], done["end_ns"]))
                tack_runs.append(values[0])
                limit_runs.append(values[1])
                for reader, out in zip(readers, (grpc_tack, grpc_limit), strict=True):
                    got = await reader.ask("go", "done", timeout=600)
                    if got["lines"] != expect:
                        raise RuntimeError(f"Logs stream gave {got['lines']} of {expect} lines")
                    out.append(per_second(expect, got["started_ns"], got["end_ns"]))
                bench.progress(
                    f"  run {run + 1}: /logs tack {values[0]:,.0f} lines/s, limit {values[1]:,.0f};"
                    f" gRPC stub {grpc_tack[-1]:,.0f}, bare {grpc_limit[-1]:,.0f}"
                )
    rows = [
        Row(
            "5",
            f"/logs replay of a finished {lines:,}-line log, one client",
            "lines/s",
            "higher",
            tack_runs,
            limit_runs,
            [Floor("ratio", 0.5)],
            "Stub provider -> gRPC Logs -> control plane -> one WebSocket client, connect to close."
            " Limit: a bare aiohttp server sending the same pre-encoded frames.",
            {"frames": expect},
        ),
        Row(
            "5",
            f"provider Logs stream alone ({lines:,} lines, gRPC)",
            "lines/s",
            "higher",
            grpc_tack,
            grpc_limit,
            note="The stub's Logs stream read directly. Limit: a bare grpc.aio server streaming the same LogsResponse messages.",
        ),
    ]
    return rows + await _logs_viewers(bench, stack)


async def _logs_viewers(bench: Bench, stack: BenchStack) -> list[Row]:
    viewers, lines = bench.sizes.viewers, bench.sizes.viewer_lines
    script = {
        "queue_seconds": 2,
        "steps": [{"name": "build", "command": "make", "output_count": lines, "duration": 0}],
    }
    tack_runs: list[float] = []
    limit_runs: list[float] = []
    limit: Worker | None = None
    port = 0
    frames_file = bench.workdir / "viewer-frames.txt"
    try:
        for run in range(bench.sizes.runs):
            await wait_idle(stack)
            (rkey,) = await stack.knot.push_pipelines([stack.stub_pipeline(script)])
            done = await logs_run(bench, stack.logs_url(rkey), viewers)
            expect = lines + 2
            if done["min_frames"] != expect:
                raise RuntimeError(f"a viewer got {done['min_frames']} of {expect} frames")
            tack_runs.append(per_second(done["frames"], done["first_ns"], done["end_ns"]))
            if limit is None:
                write_frames(frames_file, log_frames(stack.stub_log(rkey)))
                limit = bench.worker("limits", "ws", {"frames_file": str(frames_file)})
                port = await start_limit(limit)
            ldone = await logs_run(bench, f"ws://127.0.0.1:{port}/logs", viewers)
            limit_runs.append(per_second(ldone["frames"], ldone["first_ns"], ldone["end_ns"]))
            bench.progress(
                f"  run {run + 1}: {viewers} viewers: tack {tack_runs[-1]:,.0f} frames/s, limit {limit_runs[-1]:,.0f}"
            )
    finally:
        if limit is not None:
            await limit.close()
    return [
        Row(
            "5",
            f"/logs {viewers} concurrent viewers of one running {lines:,}-line log",
            "frames/s",
            "higher",
            tack_runs,
            limit_runs,
            note="Viewers connect while the run is pending and follow it live; frames/s over all viewers,"
            " first frame to last close. Limit: a bare aiohttp server sending the same frames to as many viewers.",
        )
    ]


# Figure 6: memory


async def _sample_rss(pid: int, seconds: float) -> float:
    """The highest RSS seen over ``seconds``, sampled every 50 ms."""
    peak = read_rss_mb(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        peak = max(peak, read_rss_mb(pid))
    return peak


async def _subscribers_rss(bench: Bench, url: str, pid: int) -> float:
    """RSS of ``pid`` with ``idle_subscribers`` idle /events subscribers connected (after 1 s)."""
    clients = [
        bench.worker("clients", "events", {"url": url, "connections": k, "mode": "idle"})
        for k in bench.split(bench.sizes.idle_subscribers)
    ]
    async with bench.workers(clients):
        await asyncio.sleep(1.0)
        rss = read_rss_mb(pid)
        for client in clients:
            await client.ask("close", "closed")
    return rss


async def _slow_growth(bench: Bench, url: str, pid: int) -> tuple[float, int]:
    """RSS growth of ``pid`` while a slow client reads ``url``; (MB, frames the client read)."""
    base = read_rss_mb(pid)
    reader = bench.worker("clients", "logs", {"url": url, "viewers": 1, "rate": bench.sizes.slow_rate})
    async with bench.workers([reader]):
        peak = await _sample_rss(pid, bench.sizes.slow_seconds)
        reader.tell("stop")
        done = await reader.expect("done", timeout=30)
    return peak - base, int(done["frames"])


async def memory(bench: Bench, stack: BenchStack) -> list[Row]:
    """Figure 6: control plane RSS idle, with idle subscribers, and while a slow client reads a huge log."""
    sizes = bench.sizes
    await wait_idle(stack)
    script = {
        "queue_seconds": 0,
        "steps": [{"name": "build", "command": "make", "output_count": sizes.slow_log_lines, "duration": 0}],
    }
    (rkey,) = await stack.knot.push_pipelines([stack.stub_pipeline(script)])
    await stack.wait_status(rkey, TERMINAL, timeout=900)
    # The bare server only needs more frames than the slow client can read in the window.
    sample = min(sizes.slow_log_lines, 4 * sizes.slow_rate * math.ceil(sizes.slow_seconds) + 10)
    frames_file = bench.workdir / "slow-frames.txt"
    write_frames(frames_file, log_frames(stack.stub_log(rkey)[:sample]))
    idle: list[float] = []
    subs: list[float] = []
    slow: list[float] = []
    limit_idle: list[float] = []
    limit_subs: list[float] = []
    limit_slow: list[float] = []
    slow_frames: list[int] = []
    for run in range(sizes.runs):
        await stack.restart_control()
        await asyncio.sleep(1.0)
        pid = stack.cp.pid
        idle.append(read_rss_mb(pid))
        subs.append(await _subscribers_rss(bench, stack.events_url(), pid) - idle[-1])
        growth, frames = await _slow_growth(bench, stack.logs_url(rkey), pid)
        slow.append(growth)
        slow_frames.append(frames)
        bare = bench.worker("limits", "ws", {})
        async with bench.workers([bare]) as (ready,):
            await asyncio.sleep(1.0)
            limit_idle.append(read_rss_mb(bare.pid))
            url = f"ws://127.0.0.1:{ready['port']}/events"
            limit_subs.append(await _subscribers_rss(bench, url, bare.pid) - limit_idle[-1])
        bare = bench.worker("limits", "ws", {"frames_file": str(frames_file)})
        async with bench.workers([bare]) as (ready,):
            growth, _ = await _slow_growth(bench, f"ws://127.0.0.1:{ready['port']}/logs", bare.pid)
            limit_slow.append(growth)
        bench.progress(
            f"  run {run + 1}: idle {idle[-1]:.1f} MB (bare {limit_idle[-1]:.1f}),"
            f" +{sizes.idle_subscribers} subscribers {subs[-1]:+.1f} MB (bare {limit_subs[-1]:+.1f}),"
            f" slow reader {slow[-1]:+.1f} MB after {frames:,} frames (bare {limit_slow[-1]:+.1f})"
        )
    return [
        Row(
            "6",
            "control plane RSS, idle",
            "MB",
            "lower",
            idle,
            limit_idle,
            [Floor("max", 100)],
            "Fresh control plane process following the knot, 1 s after start. Limit: a bare aiohttp WebSocket server.",
        ),
        Row(
            "6",
            f"RSS added by {sizes.idle_subscribers:,} idle /events subscribers",
            "MB",
            "lower",
            subs,
            limit_subs,
            [Floor("max", 60)],
            "RSS with the subscribers connected (after 1 s) minus idle RSS.",
        ),
        Row(
            "6",
            f"RSS growth streaming a {sizes.slow_log_lines:,}-line log to a slow reader",
            "MB",
            "lower",
            slow,
            limit_slow,
            [Floor("max", 50)],
            f"Peak RSS while one client reads /logs at {sizes.slow_rate} frames/s for {sizes.slow_seconds:g} s"
            " minus RSS before it connects. Limit: a bare server streaming pre-encoded frames (more than the"
            " reader can take in the window) to the same reader; its growth is ~0, so the ratio only says"
            " how many MB tack holds in flight (gRPC and socket buffers).",
            {"frames_read": slow_frames},
        ),
    ]


# Figure 7: provider RPC


async def provider_rpc(bench: Bench) -> list[Row]:
    """Figure 7: Spawn round trip and WatchStatus delivery latency against the stub, and a bare grpc.aio server."""
    sizes = bench.sizes
    workdir = bench.workdir / "rpc"
    workdir.mkdir(parents=True, exist_ok=True)
    stub = StubProcess(workdir)
    raw = stub_workflow(WORKFLOW, INSTANT)["raw"]
    bare = bench.worker("limits", "grpc", {})
    results: dict[str, list[float]] = {k: [] for k in ("spawn50", "spawn99", "watch50", "watch99")}
    limits: dict[str, list[float]] = {k: [] for k in results}
    stub.start()
    try:
        await wait_serving(stub.address, stub)
        port = await start_limit(bare)
        for run in range(sizes.runs):
            for address, out in ((stub.address, results), (f"127.0.0.1:{port}", limits)):
                args = {
                    "address": address,
                    "knot": "knot.bench",
                    "did": OWNER,
                    "raw": raw,
                    "offset": run * 10_000_000,
                    "after_seq": _last_seq(stub.db_path) if address == stub.address else 0,
                    "warmup": 10,
                    "count": sizes.spawns,
                    "interval": sizes.spawn_interval,
                    "updates_per_spawn": 3,
                }
                client = bench.worker("clients", "rpc", args)
                async with bench.workers([client]):
                    done = await client.expect("done", timeout=120)
                spawn = [ms(v) for v in done["spawn_ns"]]
                watch = [ms(v) for v in done["watch_ns"]]
                if len(watch) < sizes.spawns * 3:
                    raise RuntimeError(f"WatchStatus delivered {len(watch)} of {sizes.spawns * 3} updates")
                out["spawn50"].append(percentile(spawn, 50))
                out["spawn99"].append(percentile(spawn, 99))
                out["watch50"].append(percentile(watch, 50))
                out["watch99"].append(percentile(watch, 99))
            bench.progress(
                f"  run {run + 1}: Spawn p50 {results['spawn50'][-1]:.2f} ms p99 {results['spawn99'][-1]:.2f} ms"
                f" (bare {limits['spawn50'][-1]:.2f}/{limits['spawn99'][-1]:.2f});"
                f" WatchStatus p50 {results['watch50'][-1]:.2f} ms p99 {results['watch99'][-1]:.2f} ms"
                f" (bare {limits['watch50'][-1]:.2f}/{limits['watch99'][-1]:.2f})"
            )
    finally:
        await bare.close()
        stub.kill9()
    note = (
        f"{sizes.spawns} sequential one-workflow Spawns ({sizes.spawn_interval * 1000:g} ms apart) of instant stub runs;"
        " WatchStatus: provider's update time -> client receipt, over every update (pending, running, success)."
        " Limit: a bare grpc.aio server with canned answers and in-memory updates."
    )
    return [
        Row("7", "Spawn round trip p50", "ms", "lower", results["spawn50"], limits["spawn50"], note=note),
        Row("7", "Spawn round trip p99", "ms", "lower", results["spawn99"], limits["spawn99"]),
        Row("7", "WatchStatus delivery p50", "ms", "lower", results["watch50"], limits["watch50"]),
        Row("7", "WatchStatus delivery p99", "ms", "lower", results["watch99"], limits["watch99"]),
    ]


def _last_seq(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='status_log'").fetchone()
    return 0 if row is None else int(row[0])
