"""`make run`'s launcher end to end: the sandbox pipeline flows, then Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.appview import AppviewClient, render
from tests.support.codefacts import ROOT
from tests.support.procs import free_port


pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    """Every process whose ancestry leads to ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def read_until(stream: asyncio.StreamReader, marker: str, lines: list[str], timeout: float) -> str:
    """Read output lines until one contains ``marker``; returns that line."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            if not raw:
                raise EOFError("launcher output ended:\n" + "\n".join(lines[-30:]))
            line = raw.decode().rstrip()
            lines.append(line)
            if marker in line:
                return line


async def test_make_run_sandbox_flows_and_stops_cleanly(tmp_path: Path) -> None:
    """The sandbox pipeline reaches terminal statuses with logs and metrics; SIGINT stops every child."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACK_")},
        "TACK_DATA_DIR": str(tmp_path / ".data"),
        "TACK_LISTEN_ADDR": f"127.0.0.1:{port}",
        "TACK_STUB_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "TACK_STUB_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tack_sandbox",
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        pushed = await read_until(proc.stdout, "pushed pipeline", lines, timeout=60)
        rkey = pushed.split()[2]
        knot = next(line.split("/logs/")[1].split("/")[0] for line in lines if "/logs/" in line)
        children = descendants(proc.pid)
        assert len(children) >= 2
        appview = AppviewClient(f"http://127.0.0.1:{port}")
        appview.cursor = 1
        await appview.connect_events()
        terminal = {"build.yml": "success", "lint.yml": "failed"}
        await appview.wait_for(
            lambda: all(
                (appview.latest(knot, rkey, w) or {}).get("status") == s for w, s in terminal.items()
            ),
            timeout=30,
        )
        for workflow in terminal:
            log = await appview.read_logs(knot, rkey, workflow)
            assert log.close_code == 1000
            assert log.errors == []
            assert all(step.ended for step in render(log.lines))
            assert render(log.lines)
        await appview.close()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            metrics = await resp.text()
        assert 'tack_pipelines_total{decision="accepted"} 1.0' in metrics
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = await proc.stdout.read()
        assert await proc.wait() == 0, rest.decode()[-2000:]
        assert "stopped." in rest.decode()
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
