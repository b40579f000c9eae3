"""``make run``: the control plane and its providers on embedded defaults, plus, without Tangled
configuration, a local sandbox that shows a pipeline's statuses and logs flowing.

The sandbox is a simulation: a loopback Jetstream and knot stand in for
Tangled, an owner's repo names the local spindle, and a sample pipeline is
pushed at start and on ``make trigger``. With ``TACK_HOSTNAME`` and
``TACK_OWNER_DID`` set, no simulation runs and tack serves real Tangled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tack_common import env as envlib
from tack_common.status import TERMINAL_NAMES
from tack_sandbox import demo
from tack_sandbox.jetstream import SimulatedJetstream
from tack_sandbox.knot import SimulatedKnot, pipeline_record
from tack_sandbox.supervisor import Child, python_env


SANDBOX_OWNER = "did:plc:tacksandboxowner0000000"
SANDBOX_REPO = "sample"
STATE_FILE = "sandbox.json"


def say(text: str = "") -> None:
    """Print a line for the person at the terminal."""
    print(text, flush=True)


class Launcher:
    """Starts, watches and stops tack's processes (and the sandbox simulators)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        self.data_dir = Path(environ.get("TACK_DATA_DIR", ".data")).resolve()
        self.sandbox = not (environ.get("TACK_HOSTNAME") or environ.get("TACK_OWNER_DID"))
        host, port = envlib.address(environ, "TACK_LISTEN_ADDR", "127.0.0.1:8080")
        self.listen = f"{host}:{port}"
        self.local = f"127.0.0.1:{port}" if host in ("0.0.0.0", "::") else f"{host}:{port}"
        self.children: list[Child] = []
        self.stop = asyncio.Event()
        self.jetstream: SimulatedJetstream | None = None
        self.knot: SimulatedKnot | None = None
        self.triggers: web.AppRunner | None = None
        self.pushed: list[str] = []

    @property
    def state_dir(self) -> Path:
        """Where databases and logs go (a fresh ``sandbox/`` each sandbox run)."""
        return self.data_dir / "sandbox" if self.sandbox else self.data_dir

    def _providers(self) -> tuple[str, list[Child]]:
        stub_addr = self.environ.get("TACK_STUB_LISTEN_ADDR", "127.0.0.1:7102")
        children = [
            Child(
                "stub",
                "tack_provider_stub",
                python_env(
                    {"TACK_STUB_DB_PATH": str(self.state_dir / "stub.db"), "TACK_STUB_LISTEN_ADDR": stub_addr}
                ),
                self.state_dir / "logs" / "stub.log",
            )
        ]
        providers = [f"stub={stub_addr}"]
        if self.environ.get("TACK_BUILDKITE_TOKEN"):
            bk_addr = self.environ.get("TACK_BUILDKITE_LISTEN_ADDR", "127.0.0.1:7101")
            children.append(
                Child(
                    "buildkite",
                    "tack_provider_buildkite",
                    python_env(
                        {
                            "TACK_BUILDKITE_DB_PATH": str(self.state_dir / "buildkite.db"),
                            "TACK_BUILDKITE_LISTEN_ADDR": bk_addr,
                        }
                    ),
                    self.state_dir / "logs" / "buildkite.log",
                )
            )
            providers.append(f"buildkite={bk_addr}")
        return self.environ.get("TACK_PROVIDERS") or ",".join(providers), children

    async def start(self) -> None:
        """Start the simulators (sandbox only), the providers and the control plane."""
        if self.sandbox:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        providers, children = self._providers()
        control_env: dict[str, str] = {
            "TACK_DB_PATH": str(self.state_dir / "tack.db"),
            "TACK_LISTEN_ADDR": self.listen,
            "TACK_PROVIDERS": providers,
        }
        if self.sandbox:
            self.jetstream = SimulatedJetstream()
            self.knot = SimulatedKnot(ping_interval=20)
            await self.jetstream.start()
            await self.knot.start()
            control_env |= {
                "TACK_HOSTNAME": self.local,
                "TACK_OWNER_DID": SANDBOX_OWNER,
                "TACK_DEV": "1",
                "TACK_JETSTREAM_URL": self.jetstream.url,
            }
        control = Child(
            "control", "tack_control", python_env(control_env), self.state_dir / "logs" / "control.log"
        )
        self.children = [*children, control]
        for child in children:
            child.start()
        control.start()
        await self._wait_ready()
        if self.sandbox:
            await self._seed_sandbox()

    async def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                self._check_children()
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://{self.local}/readyz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"tack did not become ready within {timeout:.0f}s; see {self.state_dir / 'logs'}"
                    )
                await asyncio.sleep(0.1)

    def _check_children(self) -> None:
        for child in self.children:
            code = child.exited()
            if code is not None:
                raise RuntimeError(f"{child.name} exited with status {code}:\n{child.tail()}")

    async def _seed_sandbox(self) -> None:
        assert self.jetstream is not None and self.knot is not None
        self.jetstream.commit(
            SANDBOX_OWNER,
            "sh.tangled.repo",
            "3sandboxrepo2",
            "create",
            {
                "$type": "sh.tangled.repo",
                "name": SANDBOX_REPO,
                "knot": self.knot.hostname,
                "spindle": self.local,
            },
        )
        await self.knot.wait_connected(1, timeout=30)
        app = web.Application()
        app.router.add_post("/trigger", self._trigger_handler)
        self.triggers = web.AppRunner(app, access_log=None)
        await self.triggers.setup()
        site = web.TCPSite(self.triggers, "127.0.0.1", 0)
        await site.start()
        port = self.triggers.addresses[0][1]
        state = {
            "trigger_url": f"http://127.0.0.1:{port}/trigger",
            "spindle": f"http://{self.local}",
            "knot": self.knot.hostname,
        }
        (self.data_dir / STATE_FILE).write_text(json.dumps(state))

    async def _trigger_handler(self, request: web.Request) -> web.Response:
        return web.json_response({"rkey": self.push_sample()})

    def push_sample(self) -> str:
        """Push the sample pipeline on the simulated knot; returns its rkey."""
        assert self.knot is not None
        rkey = self.knot.new_rkey()
        record = pipeline_record(
            knot=self.knot.hostname, did=SANDBOX_OWNER, repo=SANDBOX_REPO, workflows=demo.workflows()
        )
        self.knot.emit_pipeline(rkey, record)
        self.pushed.append(rkey)
        say(f"pushed pipeline {rkey} (build.yml, lint.yml)")
        return rkey

    def banner(self) -> None:
        """Tell the person what runs and what to do next."""
        base = f"http://{self.local}"
        ws = f"ws://{self.local}"
        say()
        say(
            "tack is running"
            + (" against a LOCAL SANDBOX (simulated Jetstream and knot)" if self.sandbox else "")
        )
        say(
            f"  spindle         {base}/   (hostname {self.local if self.sandbox else self.environ.get('TACK_HOSTNAME')})"
        )
        say(f"  status stream   {ws}/events?cursor=1")
        if self.sandbox and self.knot is not None:
            say(f"  logs            {ws}/logs/{self.knot.hostname}/<pipeline rkey>/build.yml")
        say(f"  metrics         {base}/metrics")
        say(f"  readiness       {base}/readyz")
        say(f"  process logs    {self.state_dir / 'logs'}/")
        say()
        if self.sandbox:
            say("Push another sample pipeline with `make trigger`. Ctrl-C stops everything.")
            say("Set TACK_HOSTNAME and TACK_OWNER_DID to serve real Tangled instead (see README).")
        else:
            say("Serving real Tangled. Ctrl-C stops everything.")
        say()

    async def follow(self) -> None:
        """Print each status as it arrives on /events, and a finished workflow's log."""
        async with aiohttp.ClientSession() as session:
            while not self.stop.is_set():
                try:
                    async with session.ws_connect(f"ws://{self.local}/events?cursor=1", heartbeat=None) as ws:
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                await self._show_status(session, json.loads(msg.data)["event"])
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(1)

    async def _show_status(self, session: aiohttp.ClientSession, record: dict[str, Any]) -> None:
        rkey = record["pipeline"].rsplit("/", 1)[-1]
        extra = f"  ({record['error']}, exit code {record['exitCode']})" if "error" in record else ""
        say(f"{record['createdAt']}  {rkey}  {record['workflow']:<10} {record['status']}{extra}")
        if record["status"] in TERMINAL_NAMES and self.knot is not None:
            url = f"ws://{self.local}/logs/{self.knot.hostname}/{rkey}/{record['workflow']}"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.ws_connect(url) as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            line = json.loads(msg.data)
                            if line["kind"] == "control" and line.get("step_status") == "start":
                                say(
                                    f"    ── {record['workflow']} · {line['content']}: $ {line.get('step_command', '')}"
                                )
                            elif line["kind"] == "data":
                                say(f"    │ {line['content']}")

    async def supervise(self) -> None:
        """Return when asked to stop or when a child dies."""
        while not self.stop.is_set():
            self._check_children()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    async def shutdown(self) -> None:
        """Stop the control plane first, then providers and simulators; leave no process behind."""
        for child in reversed(self.children):
            await asyncio.to_thread(child.stop)
        if self.triggers is not None:
            await self.triggers.cleanup()
        if self.knot is not None:
            await self.knot.stop()
        if self.jetstream is not None:
            await self.jetstream.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / STATE_FILE).unlink()


async def run(environ: Mapping[str, str]) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 1 when something failed."""
    launcher = Launcher(environ)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, launcher.stop.set)
    follower: asyncio.Task[None] | None = None
    status = 0
    try:
        say(
            f"starting tack ({'sandbox' if launcher.sandbox else 'Tangled'} mode); data in {launcher.state_dir}"
        )
        await launcher.start()
        launcher.banner()
        follower = asyncio.create_task(launcher.follow())
        if launcher.sandbox:
            launcher.push_sample()
        await launcher.supervise()
    except (RuntimeError, envlib.ConfigError) as exc:
        say(f"error: {exc}")
        status = 1
    finally:
        say("stopping...")
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await launcher.shutdown()
        say("stopped.")
    return status


async def trigger(environ: Mapping[str, str]) -> int:
    """Ask a running sandbox to push the sample pipeline again."""
    state_file = Path(environ.get("TACK_DATA_DIR", ".data")).resolve() / STATE_FILE
    if not state_file.exists():
        say("no sandbox is running (start one with `make run` in another terminal)")
        return 1
    state = json.loads(state_file.read_text())
    async with aiohttp.ClientSession() as session, session.post(state["trigger_url"]) as resp:
        rkey = (await resp.json())["rkey"]
    say(f"pushed pipeline {rkey}; watch it in the `make run` terminal or on {state['spindle']}/events")
    return 0


def main(argv: list[str]) -> int:
    """``python -m tack_sandbox [trigger]``."""
    if argv == ["trigger"]:
        return asyncio.run(trigger(os.environ))
    if argv:
        say("usage: python -m tack_sandbox [trigger]")
        return 2
    return asyncio.run(run(os.environ))
