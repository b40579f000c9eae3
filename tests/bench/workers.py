"""Load clients and limit servers as separate processes, driven by JSON lines.

The orchestrator starts ``python -m tests.bench.<module> <role> <json args>``
with :class:`Worker`; the worker talks back with :class:`Link`: one JSON object
per stdout line (``{"kind": ..., ...}``), commands read from stdin. A worker
exits when its stdin closes, so none outlives the benchmark.

Times that cross processes are ``time.monotonic_ns()`` (CLOCK_MONOTONIC is one
clock for every process on the machine) unless named ``wall``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from tests.support.procs import ROOT


JsonDict = dict[str, Any]


class WorkerFailed(RuntimeError):
    """A worker reported an error, exited, or did not answer in time."""


class Worker:
    """The orchestrator's handle on one worker process."""

    def __init__(self, module: str, role: str, args: Mapping[str, Any], log_path: Path) -> None:
        self.module = module
        self.role = role
        self.args = dict(args)
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60.0) -> JsonDict:
        """Start the process and wait for its ``ready`` message."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"tests.bench.{self.module}",
                self.role,
                json.dumps(self.args),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                limit=64 << 20,
            )
        return await self.expect("ready", timeout)

    @property
    def pid(self) -> int:
        """The worker's process id."""
        assert self.proc is not None
        return self.proc.pid

    def _tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-2000:]

    async def expect(self, kind: str, timeout: float) -> JsonDict:
        """The next message, which must be of ``kind``."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise WorkerFailed(
                f"{self.module} {self.role}: no {kind!r} within {timeout:g}s\n{self._tail()}"
            ) from None
        if not line:
            raise WorkerFailed(f"{self.module} {self.role} exited before {kind!r}\n{self._tail()}")
        message: JsonDict = json.loads(line)
        if message.get("kind") == "error":
            raise WorkerFailed(f"{self.module} {self.role} failed: {message.get('error')}")
        if message.get("kind") != kind:
            raise WorkerFailed(f"{self.module} {self.role}: expected {kind!r}, got {message.get('kind')!r}")
        return message

    def tell(self, kind: str, **data: Any) -> None:
        """Send a command."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"kind": kind, **data}) + "\n").encode())

    async def ask(self, kind: str, reply: str, timeout: float = 30.0, **data: Any) -> JsonDict:
        """Send a command and wait for its reply."""
        self.tell(kind, **data)
        return await self.expect(reply, timeout)

    async def close(self) -> None:
        """Close stdin (the worker exits), then make sure the process is gone."""
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def start_all(workers: list[Worker], timeout: float = 60.0) -> list[JsonDict]:
    """Start workers concurrently; their ``ready`` messages in order."""
    return list(await asyncio.gather(*(w.start(timeout) for w in workers)))


async def close_all(workers: list[Worker]) -> None:
    """Stop every worker."""
    await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)


class Link:
    """The worker's end: ``say`` writes a message line, ``hear`` reads a command (None at EOF)."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None

    async def open(self) -> None:
        """Attach to stdin."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._reader = reader

    def say(self, kind: str, **data: Any) -> None:
        """Report to the orchestrator."""
        sys.stdout.write(json.dumps({"kind": kind, **data}) + "\n")
        sys.stdout.flush()

    async def hear(self) -> JsonDict | None:
        """The next command, or None when the orchestrator has gone."""
        assert self._reader is not None
        line = await self._reader.readline()
        if not line:
            return None
        message: JsonDict = json.loads(line)
        return message


Role = Callable[[Link, JsonDict], Awaitable[None]]


def run_worker(roles: Mapping[str, Role]) -> None:
    """Entry point of a worker module: ``<role> <json args>`` from argv."""
    role, raw = sys.argv[1], sys.argv[2]

    async def main() -> None:
        link = Link()
        await link.open()
        try:
            await roles[role](link, json.loads(raw))
        except Exception as exc:
            traceback.print_exc()
            link.say("error", error=f"{type(exc).__name__}: {exc}")

    asyncio.run(main())
