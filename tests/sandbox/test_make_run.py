"""`make run`'s launcher end to end: the sandbox's pipelines flow through current Tangled (and the legacy
protocol on request), its commands push, open pull requests, run, retry and cancel CI, and Ctrl-C leaves no
process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tack_sandbox.world import SANDBOX_REPO_DID
from tests.fakes.appview import AppviewClient, render
from tests.fakes.ci_appview import CiAppview
from tests.support.codefacts import ROOT
from tests.support.procs import free_port


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TERMINAL = {"build.yml": "success", "lint.yml": "failed"}


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


class Launched:
    """``python -m tack_sandbox`` running, its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, env: Mapping[str, str], port: int) -> None:
        self.proc = proc
        self.env = dict(env)
        self.spindle = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode().rstrip())
            self._more.set()
        self._more.set()

    async def line(self, pattern: str, timeout: float = 60, after: int = 0) -> re.Match[str]:
        """The first output line from index ``after`` matching ``pattern``."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[after:]:
                    if found := re.search(pattern, line):
                        return found
                if self._reader.done():
                    raise EOFError("launcher output ended:\n" + "\n".join(self.lines[-40:]))
                self._more.clear()
                await self._more.wait()

    async def command(self, *argv: str) -> tuple[int, str]:
        """Run ``python -m tack_sandbox argv`` (what the make targets run) from another "terminal"."""
        done = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tack_sandbox",
            *argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await done.communicate()
        return int(done.returncode or 0), out.decode()

    async def interrupt(self, children: set[int]) -> None:
        """Ctrl-C: the launcher exits 0 after "stopped.", and none of ``children`` survives."""
        self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await self._reader
            code = await self.proc.wait()
        assert code == 0, "\n".join(self.lines[-40:])
        assert self.lines[-1] == "stopped."
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == []


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts the launcher with a data directory and ports of its own; kills it if a test fails."""
    started: list[Launched] = []

    async def start(**extra: str) -> Launched:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TACK_")},
            "TACK_DATA_DIR": str(tmp_path / ".data"),
            "TACK_LISTEN_ADDR": f"127.0.0.1:{port}",
            "TACK_STUB_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "TACK_STUB_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "PYTHONUNBUFFERED": "1",
            **extra,
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
        started.append(Launched(proc, env, port))
        return started[-1]

    yield start
    for launched in started:
        if launched.proc.returncode is None:
            launched.proc.kill()
            await launched.proc.wait()


async def until(check: Callable[[], Any], what: str, timeout: float = 40) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        if found := await check():
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.2)


def statuses(pipeline: dict[str, Any]) -> dict[str, str]:
    """workflow name → status of a ``sh.tangled.ci.pipeline``."""
    return {w["name"]: w["status"] for w in pipeline["workflows"]}


async def test_the_current_sandbox_runs_pushes_pull_requests_and_ci_calls(
    launch: Callable[..., Any], tmp_path: Path
) -> None:
    """Push, `make trigger`, `make trigger PR=1`, `make ci-run` (also a retry) each run a pipeline; `make ci-cancel` cancels."""
    sandbox: Launched = await launch()
    first_sha = (await sandbox.line(r"^pushed ([0-9a-f]{10}) to refs/heads/main \(changed: "))[1]
    repo_url = (await sandbox.line(r"repository\s+http://(\S+)/(did:plc:\S+)"))[0]
    assert SANDBOX_REPO_DID in repo_url
    knot = repo_url.split("http://")[1].split("/")[0]
    children = descendants(sandbox.proc.pid)
    assert len(children) >= 2
    async with AppviewClient(sandbox.spindle) as appview, CiAppview(sandbox.spindle) as ci:
        appview.cursor = 1
        await appview.connect_events()

        async def pipelines() -> list[dict[str, Any]]:
            return await ci.query_all(SANDBOX_REPO_DID)

        [first] = await until(pipelines, "the first push makes a pipeline")
        rkey = first["id"]
        assert first["trigger"]["$type"] == "sh.tangled.ci.trigger#push"
        assert first["commit"].startswith(first_sha)
        await appview.wait_for(
            lambda: all(
                (appview.latest(knot, rkey, w) or {}).get("status") == s for w, s in TERMINAL.items()
            ),
            timeout=40,
        )
        assert [s["status"] for s in appview.statuses(knot, rkey, "build.yml")] == [
            "pending",
            "running",
            "success",
        ]
        logs = await ci.read_logs(rkey)
        assert (logs.close_code, logs.problems, logs.errors) == (1000, [], [])
        assert "build ok" in logs.lines("build.yml")
        assert "Found 1 error." in logs.lines("lint.yml")
        await sandbox.line(rf"{rkey}\s+build\.yml\s+success")
        await sandbox.line(r"│ build ok")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sandbox.spindle}/metrics") as resp,
        ):
            assert 'tack_pushes_total{outcome="pipeline"} 1.0' in await resp.text()

        code, out = await sandbox.command("trigger")
        assert code == 0, out
        pushed = re.search(r"pushed ([0-9a-f]{10}) to refs/heads/main \(changed: CHANGELOG\.md\)", out)
        assert pushed is not None, out
        code, out = await sandbox.command("trigger", "--pr")
        assert code == 0, out
        opened = re.search(r"opened pull request (at://\S+) \(sandbox/pr-1 → main at ([0-9a-f]{10})", out)
        assert opened is not None, out
        code, out = await sandbox.command("run-ci")
        assert code == 0, out
        manual = re.search(r"triggered pipeline ([a-z2-7]{13})", out)
        assert manual is not None, out
        code, out = await sandbox.command("cancel")
        assert code == 0, out
        assert f"cancelled pipeline {manual[1]}" in out
        code, out = await sandbox.command("run-ci", "--pipeline", rkey)
        assert code == 0, out
        retry = re.search(r"triggered pipeline ([a-z2-7]{13})", out)
        assert retry is not None, out

        async def all_finished() -> list[dict[str, Any]]:
            found = await pipelines()
            done = all(s not in ("pending", "running") for p in found for s in statuses(p).values())
            return found if len(found) == 5 and done else []

        by_id = {p["id"]: p for p in await until(all_finished, "every pipeline finishes", timeout=90)}
        kinds = {p["id"]: p["trigger"]["$type"].rsplit("#", 1)[1] for p in by_id.values()}
        [push] = [p for p in by_id.values() if kinds[p["id"]] == "push" and p["commit"].startswith(pushed[1])]
        [pull] = [p for p in by_id.values() if kinds[p["id"]] == "pullRequest"]
        assert pull["commit"].startswith(opened[2])
        assert (pull["trigger"]["sourceBranch"], pull["trigger"]["targetBranch"]) == ("sandbox/pr-1", "main")
        assert (pull["trigger"]["pull"], pull["trigger"]["action"]) == (opened[1], "opened")
        for finished in (push, pull, by_id[retry[1]]):
            assert statuses(finished) == TERMINAL, finished
        assert by_id[retry[1]]["trigger"] == {
            "$type": "sh.tangled.ci.trigger#manual",
            "sha": first["commit"],
            "ref": "refs/heads/main",
        }
        cancelled = by_id[manual[1]]
        assert cancelled["trigger"]["$type"] == "sh.tangled.ci.trigger#manual"
        assert cancelled["commit"] == push["commit"]
        assert statuses(cancelled)["build.yml"] == "cancelled"
        code, out = await sandbox.command("cancel")
        assert (code, "nothing to cancel" in out) == (0, True), out
    await sandbox.interrupt(children)
    assert not (tmp_path / ".data" / "sandbox.json").exists()


async def test_the_legacy_sandbox_runs_knot_pipelines(launch: Callable[..., Any]) -> None:
    """TACK_SANDBOX_PROTOCOL=legacy: the knot's push and pull-request pipelines run with /logs; CI calls explain why not."""
    sandbox: Launched = await launch(TACK_SANDBOX_PROTOCOL="legacy")
    rkey = (await sandbox.line(r"^knot sent pipeline ([a-z2-7]{13})"))[1]
    knot = (await sandbox.line(r"logs\s+ws://\S+/logs/([^/]+)/"))[1]
    children = descendants(sandbox.proc.pid)
    code, out = await sandbox.command("trigger", "--pr")
    assert code == 0, out
    found = re.search(r"knot sent pull request pipeline ([a-z2-7]{13})", out)
    assert found is not None, out
    pull = found[1]
    async with AppviewClient(sandbox.spindle) as appview:
        appview.cursor = 1
        await appview.connect_events()
        await appview.wait_for(
            lambda: all(
                (appview.latest(knot, key, w) or {}).get("status") == s
                for w, s in TERMINAL.items()
                for key in (rkey, pull)
            ),
            timeout=40,
        )
        for workflow in TERMINAL:
            log = await appview.read_logs(knot, rkey, workflow)
            assert (log.close_code, log.errors) == (1000, [])
            assert render(log.lines)
            assert all(step.ended for step in render(log.lines))
    code, out = await sandbox.command("run-ci")
    assert code == 1
    assert "legacy" in out
    await sandbox.interrupt(children)
