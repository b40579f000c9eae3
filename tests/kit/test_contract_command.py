"""``python -m tack_provider_kit.contract``: the contract suite as a command, against real provider processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_provider_kit.contract.checks import CHECKS
from tests.fakes.provider import RawLogsProvider
from tests.support.procs import ROOT, free_port


pytestmark = pytest.mark.e2e


async def run_contract(*args: str, timeout: float = 240) -> tuple[int, list[str]]:
    """Run the command; its exit status and output lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tack_provider_kit.contract",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


class ScriptedStub:
    """A stub provider started and restarted by a shell script, as an operator's restart command would."""

    def __init__(self, workdir: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.pidfile = workdir / "stub.pid"
        env = {
            "TACK_STUB_LISTEN_ADDR": self.address,
            "TACK_STUB_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "TACK_STUB_DB_PATH": str(workdir / "stub.db"),
        }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.script = workdir / "restart.sh"
        self.script.write_text(
            f'[ -f {self.pidfile} ] && kill -9 "$(cat {self.pidfile})" 2>/dev/null\n'
            f"cd {shlex.quote(str(ROOT))}\n"
            f"{exports} {shlex.quote(sys.executable)} -m tack_provider_stub >>{workdir / 'stub.log'} 2>&1 &\n"
            f"echo $! > {self.pidfile}\n"
        )
        self.command = f"sh {shlex.quote(str(self.script))}"

    def kill(self) -> None:
        if self.pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(self.pidfile.read_text()), signal.SIGKILL)


@pytest.fixture
async def scripted_stub(tmp_path: Path) -> AsyncIterator[ScriptedStub]:
    stub = ScriptedStub(tmp_path)
    proc = await asyncio.create_subprocess_shell(stub.command)
    assert await proc.wait() == 0
    try:
        yield stub
    finally:
        stub.kill()


async def test_every_check_passes_against_a_running_stub(scripted_stub: ScriptedStub) -> None:
    """Against the stub, with its workflows and a restart command, every check prints PASS and the exit status is 0."""
    workflows = str(ROOT / "tack_provider_stub" / "contract_workflows.json")
    code, lines = await run_contract(
        scripted_stub.address, "--workflows", workflows, "--restart-command", scripted_stub.command
    )
    assert code == 0, lines
    assert [line.split()[:2] for line in lines[:-1]] == [["PASS", c.__name__] for c in CHECKS]
    assert lines[-1] == f"{len(CHECKS)} of {len(CHECKS)} checks passed or skipped; 0 failed"


async def test_the_restart_check_is_skipped_without_a_restart_command(scripted_stub: ScriptedStub) -> None:
    """Without --restart-command the kill -9 check is reported SKIP, not PASS, and does not fail the run."""
    code, lines = await run_contract(
        scripted_stub.address, "--check", "watch_replays_exactly_after_seq_across_kill9"
    )
    assert code == 0, lines
    assert lines[0] == "SKIP watch_replays_exactly_after_seq_across_kill9: needs --restart-command"


async def test_a_non_idempotent_provider_fails_with_the_reason() -> None:
    """A provider that creates a new run on every repeated Spawn is reported FAIL and the exit status is 1."""
    provider = RawLogsProvider([])
    await provider.start()
    try:
        code, lines = await run_contract(
            provider.address, "--check", "spawn_is_prompt_and_idempotent", "--timeout", "20"
        )
    finally:
        await provider.stop()
    assert code == 1, lines
    assert lines[0].startswith("FAIL spawn_is_prompt_and_idempotent: "), lines
    assert "created" in lines[0], lines
    assert lines[-1] == "0 of 1 checks passed or skipped; 1 failed"
