"""``python -m tack_provider_kit.contract HOST:PORT``: hold a running provider to the contract.

Prints ``PASS``, ``FAIL`` or ``SKIP`` and the check's name on one line per
check, then a summary; exits 1 when any check failed, 2 on bad arguments.
Workflow configs come from ``--workflows FILE``: JSON mapping each flavour
(``quick``: ends in seconds, ``long``: runs until cancelled, ``queued``: stays
pending) to the mapping a workflow puts under ``tack.<provider>``. The check
that kills the provider needs ``--restart-command`` (a shell command that
kills the provider with SIGKILL and starts it again); without one it is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import grpc

from tack_common import health
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import CHECKS, CannotRestart, Flavour


FLAVOURS: tuple[Flavour, ...] = ("quick", "long", "queued")


class CommandLineTarget:
    """A provider reached at ``address``, restarted (when it can be) by a shell command."""

    def __init__(self, address: str, configs: dict[str, object], restart_command: str | None) -> None:
        self.address = address
        self.configs = configs
        self.restart_command = restart_command

    def workflow(self, name: str, flavour: Flavour) -> pb.Workflow:
        config = json.dumps(self.configs.get(flavour, {}))
        return pb.Workflow(name=name, engine="tack", raw="engine: tack\n", config_json=config)

    async def kill9_and_restart(self) -> None:
        if not self.restart_command:
            raise CannotRestart("needs --restart-command")
        proc = await asyncio.create_subprocess_shell(self.restart_command)
        if await proc.wait() != 0:
            raise AssertionError(f"--restart-command exited with status {proc.returncode}")
        await wait_serving(self.address, 60.0)


async def wait_serving(address: str, timeout: float) -> None:
    """Wait until the provider's health service answers SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while True:
            try:
                if await health.check(channel, timeout=2, wait_for_ready=True) == health.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not answer SERVING within {timeout:g}s")
            await asyncio.sleep(0.2)


def describe_failure(exc: BaseException) -> str:
    """One line saying why a check failed."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"gRPC {exc.code().name}: {(exc.details() or '').strip()}"
    if isinstance(exc, AssertionError):
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        detail = str(exc).splitlines()[0] if str(exc) else frame.line or "assertion failed"
        return f"{detail} (line {frame.lineno})"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


async def run(target: CommandLineTarget, names: Sequence[str], check_timeout: float) -> int:
    """Run the selected checks in order, printing one line each; the number that failed."""
    failed = 0
    for check in CHECKS:
        if names and check.__name__ not in names:
            continue
        start = time.monotonic()
        try:
            async with asyncio.timeout(check_timeout):
                await check(target)
        except CannotRestart as exc:
            print(f"SKIP {check.__name__}: {exc}", flush=True)
            continue
        except Exception as exc:
            failed += 1
            print(f"FAIL {check.__name__}: {describe_failure(exc)}", flush=True)
            continue
        print(f"PASS {check.__name__} ({time.monotonic() - start:.2f}s)", flush=True)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the suite, return the exit status."""
    names = [c.__name__ for c in CHECKS]
    parser = argparse.ArgumentParser(
        prog="python -m tack_provider_kit.contract", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("address", help="the provider's gRPC address, HOST:PORT")
    parser.add_argument("--workflows", type=Path, help="JSON file: {quick|long|queued: provider config}")
    parser.add_argument(
        "--restart-command", help="shell command that kill -9s the provider and starts it again"
    )
    parser.add_argument(
        "--check", action="append", default=[], choices=names, help="run only this check (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds each check may take (default 120)"
    )
    args = parser.parse_args(argv)
    configs: dict[str, object] = {}
    if args.workflows is not None:
        try:
            loaded = json.loads(args.workflows.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--workflows: {exc}")
        if not isinstance(loaded, dict) or not set(loaded) <= set(FLAVOURS):
            parser.error(f"--workflows: a JSON object with keys among {', '.join(FLAVOURS)}")
        configs = loaded
    target = CommandLineTarget(args.address, configs, args.restart_command)
    failed = asyncio.run(run(target, args.check, args.timeout))
    selected = len(args.check) or len(CHECKS)
    print(f"{selected - failed} of {selected} checks passed or skipped; {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
