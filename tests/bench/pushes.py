"""Figure 10: push → ``pending`` on current Tangled, including loading the workflows over git.

A real commit is pushed to the knot's repository (outside the timing), then the knot writes its
``refUpdate``; the time runs until an ``/events`` client reads the ``pending`` of the pipeline tack
minted for it. In between tack reads the event, loads ``.tangled/workflows`` at the commit from the
knot over git smart HTTP (its cache warm, as for every push after a repository's first), evaluates
``when:``, routes, writes the pipeline and publishes. The limit is a bare ``git fetch`` of the same
commit's trees and workflow files into a warm repository: no push can become ``pending`` sooner.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tack_sandbox.knot import HostedRepo, SimulatedKnot, ref_update
from tests.bench.figures import Bench
from tests.bench.gitfetch import bare_git_fetch, workflow_blobs
from tests.bench.report import Floor, Row, percentile
from tests.fakes.atproto import FakePlc
from tests.support.atproto import Account, plc_did
from tests.support.stack import OWNER, Stack


WORKFLOW = (
    'when:\n  - event: ["push"]\n    branch: ["main"]\nengine: tack\n'
    'tack:\n  stub: {"queue_seconds": 0, "steps": [{"name": "build", "command": "true", "duration": 0}]}\n'
)
FILES = {
    ".tangled/workflows/build.yml": WORKFLOW,
    ".tangled/workflows/lint.yml": WORKFLOW.replace("build", "lint"),
    "src/main.c": "int main(void) { return 0; }\n" * 200,
}


async def _next_pending(ws: aiohttp.ClientWebSocketResponse, seen: set[str], timeout: float = 30.0) -> None:
    """Read /events until the ``pending`` of a pipeline not seen before."""
    async with asyncio.timeout(timeout):
        async for msg in ws:
            frame = json.loads(msg.data)
            event = frame.get("event", {})
            pending = frame.get("nsid") == "sh.tangled.pipeline.status" and event.get("status") == "pending"
            if pending and event["pipeline"] not in seen:
                seen.add(event["pipeline"])
                return
    raise AssertionError("/events closed")


async def push_latency(bench: Bench) -> list[Row]:
    """Figure 10: push → pending p50/p99 (workflows loaded over git), against a bare git fetch of them."""
    pushes = bench.sizes.push_latency_pushes
    workdir = bench.workdir / "pushes"
    plc = FakePlc()
    await plc.start()
    knot = SimulatedKnot(protocol="current", ping_interval=30.0, git_root=workdir / "git")
    stack = Stack(workdir, control_env={"TACK_PLC_URL": plc.url, "TACK_LOG_LEVEL": "warning"}, knot=knot)
    p50: list[float] = []
    p99: list[float] = []
    l50: list[float] = []
    l99: list[float] = []
    try:
        await stack.start()
        repo_did = plc_did()
        plc.publish(Account(did=repo_did, pds=f"http://{knot.hostname}"))
        await knot.create_repo(HostedRepo(repo_did, OWNER, "bench"))
        stack.jetstream.commit(
            OWNER,
            "sh.tangled.repo",
            "bench",
            "create",
            {
                "knot": knot.hostname,
                "spindle": stack.cp.hostname,
                "repoDid": repo_did,
                "createdAt": "2026-07-01T00:00:00Z",
            },
        )
        await stack.wait_knot_connected()
        assert knot.git is not None
        repo_path = knot.git.repo_path(repo_did)
        seen: set[str] = set()
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(stack.cp.http.replace("http", "ws") + "/events") as ws,
        ):
            # The first push warms tack's cache (and the limit's): a repository's first push is not measured.
            first = await knot.push(repo_did, FILES, emit=True)
            await _next_pending(ws, seen)
            await bare_git_fetch(
                f"http://{knot.hostname}/{repo_did}",
                workdir / "limit",
                first.new_sha,
                await workflow_blobs(repo_path, first.new_sha),
            )
            for run in range(bench.sizes.runs):
                tack: list[float] = []
                limit: list[float] = []
                for i in range(pushes):
                    pushed = await knot.push(
                        repo_did, {"src/main.c": f"int main(void) {{ return {i}; }}\n"}, emit=False
                    )
                    started = time.monotonic()
                    knot.emit_ref_update(
                        ref_update(
                            repo_did=repo_did,
                            owner=OWNER,
                            ref=pushed.ref,
                            old_sha=pushed.old_sha,
                            new_sha=pushed.new_sha,
                            changed_files=pushed.changed_files,
                        )
                    )
                    await _next_pending(ws, seen)
                    tack.append((time.monotonic() - started) * 1000)
                    blobs = await workflow_blobs(repo_path, pushed.new_sha)
                    limit.append(
                        await bare_git_fetch(
                            f"http://{knot.hostname}/{repo_did}", workdir / "limit", pushed.new_sha, blobs
                        )
                        * 1000
                    )
                p50.append(percentile(tack, 50))
                p99.append(percentile(tack, 99))
                l50.append(percentile(limit, 50))
                l99.append(percentile(limit, 99))
                bench.progress(
                    f"  run {run + 1}: tack p50 {p50[-1]:.1f} ms p99 {p99[-1]:.1f} ms;"
                    f" bare git fetch p50 {l50[-1]:.1f} ms p99 {l99[-1]:.1f} ms"
                )
    finally:
        await stack.stop()
        await plc.stop()
    note = (
        f"{pushes} pushes one at a time; refUpdate written -> pending read on /events, workflows loaded over git"
        " smart HTTP (loopback, warm cache). Limit: bare git fetch of the same trees and workflow files."
    )
    return [
        Row(
            "10",
            "push -> pending p50 (current Tangled, with workflow fetch)",
            "ms",
            "lower",
            p50,
            l50,
            note=note,
        ),
        Row(
            "10",
            "push -> pending p99 (current Tangled, with workflow fetch)",
            "ms",
            "lower",
            p99,
            l99,
            [Floor("max", 250)],
            note,
        ),
    ]
