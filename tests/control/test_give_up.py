"""The failure budget in real processes: a task that keeps failing (TACK_FAULT_INJECTION, restarts failing
too) for TACK_TASK_GIVE_UP seconds makes the control plane, and a provider, exit with status 70 after one
critical log line, so that compose or systemd starts it afresh."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from tests.support.faults import crash
from tests.support.procs import Proc
from tests.support.stack import Stack


pytestmark = pytest.mark.e2e

ENV = {"TACK_FAULT_INJECTION": "1", "TACK_TASK_GIVE_UP": "2"}


async def exit_status(proc: Proc, timeout: float = 60) -> int:
    assert proc.popen is not None
    return await asyncio.to_thread(proc.popen.wait, timeout)


def gave_up_on(proc: Proc, kind: str) -> bool:
    """Whether ``proc`` logged, at critical level, that it gives up on a task of ``kind``."""
    for line in proc.output().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("level") == "critical" and record.get("kind") == kind:
                return True
    return False


async def test_the_control_plane_exits_70_when_a_task_keeps_failing(tmp_path: Path) -> None:
    """dispatcher fails and every restart fails again for longer than the budget: the process exits 70."""
    async with Stack(tmp_path, control_env=ENV) as stack:
        assert await crash(stack.cp.http, "dispatcher", hold=120) == ["dispatcher"]
        assert await exit_status(stack.cp) == 70
        assert gave_up_on(stack.cp, "dispatcher")


async def test_a_provider_exits_70_when_a_task_keeps_failing(tmp_path: Path) -> None:
    """The stub's prune task fails past the budget: the provider exits 70; a short failure does not."""
    async with Stack(tmp_path, stub_env=ENV) as stack:
        base = f"http://127.0.0.1:{stack.stub.metrics_port}"
        assert await crash(base, "storage", hold=0.5) == ["storage"]
        await asyncio.sleep(3)  # longer than the budget: a task that recovered is not counted against it
        assert stack.stub.alive()
        assert await crash(base, "prune", hold=120) == ["prune"]
        assert await exit_status(stack.stub) == 70
        assert gave_up_on(stack.stub, "prune")
