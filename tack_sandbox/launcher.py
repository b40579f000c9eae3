"""``make run``: the control plane and its providers on embedded defaults, plus, without Tangled
configuration, a local sandbox that shows pipelines' statuses and logs flowing.

The sandbox is a simulation of current Tangled on loopback (:mod:`tack_sandbox.world`):
a Jetstream, a knot serving a real git repository, a PLC directory and the
owner's PDS; the owner's repository names the local spindle, and a commit is
pushed at start and on ``make trigger`` (``make trigger PR=1`` opens a pull
request). ``make ci-run`` and ``make ci-cancel`` call the spindle's XRPC API
with the owner's signed token (:mod:`tack_sandbox.ci`). ``TACK_SANDBOX_PROTOCOL=legacy``
runs a 2025-protocol knot instead. With ``TACK_HOSTNAME`` and
``TACK_OWNER_DID`` set, no simulation runs and tack serves real Tangled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import aiohttp
from aiohttp import web

from tack_common import env as envlib
from tack_sandbox import ci, state as statefile
from tack_sandbox.gitrepos import GitCommandError
from tack_sandbox.state import NotRunning, SandboxState
from tack_sandbox.supervisor import Child, python_env
from tack_sandbox.watch import Watcher
from tack_sandbox.world import PROTOCOLS, SANDBOX_OWNER, SANDBOX_REPO_DID, Change, Protocol, SandboxWorld


KEY_FILE = "service-auth-key.pem"


def say(text: str = "") -> None:
    """Print a line for the person at the terminal."""
    print(text, flush=True)


PROVIDERS: tuple[tuple[str, str, Callable[[Mapping[str, str]], bool]], ...] = (
    ("stub", "127.0.0.1:7102", lambda env: True),
    ("buildkite", "127.0.0.1:7101", lambda env: bool(env.get("TACK_BUILDKITE_TOKEN"))),
    (
        "tekton",
        "127.0.0.1:7104",
        lambda env: bool(env.get("TACK_TEKTON_KUBECONFIG") or env.get("TACK_TEKTON_NAMESPACE")),
    ),
    ("sourcehut", "127.0.0.1:7105", lambda env: bool(env.get("TACK_SOURCEHUT_TOKEN"))),
)
"""The providers ``make run`` starts: (name, default gRPC address, whether this environment asks for it)."""


class Launcher:
    """Starts, watches and stops tack's processes (and the sandbox simulators)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        self.data_dir = Path(environ.get("TACK_DATA_DIR", ".data")).resolve()
        self.sandbox = not (environ.get("TACK_HOSTNAME") or environ.get("TACK_OWNER_DID"))
        protocol = envlib.choice(environ, "TACK_SANDBOX_PROTOCOL", "current", PROTOCOLS)
        self.protocol: Protocol = "legacy" if protocol == "legacy" else "current"
        host, port = envlib.address(environ, "TACK_LISTEN_ADDR", "127.0.0.1:8080")
        self.listen = f"{host}:{port}"
        self.local = f"127.0.0.1:{port}" if host in ("0.0.0.0", "::") else f"{host}:{port}"
        self.children: list[Child] = []
        self.stop = asyncio.Event()
        self.world: SandboxWorld | None = None
        self.triggers: web.AppRunner | None = None
        self.state: SandboxState | None = None
        self.pushing = asyncio.Lock()

    @property
    def state_dir(self) -> Path:
        """Where databases and logs go (a fresh ``sandbox/`` each sandbox run)."""
        return self.data_dir / "sandbox" if self.sandbox else self.data_dir

    def _providers(self) -> tuple[str, list[Child]]:
        children: list[Child] = []
        providers: list[str] = []
        for name, default_addr, wanted in PROVIDERS:
            if not wanted(self.environ):
                continue
            prefix = f"TACK_{name.upper()}"
            addr = self.environ.get(f"{prefix}_LISTEN_ADDR", default_addr)
            env = {f"{prefix}_DB_PATH": str(self.state_dir / f"{name}.db"), f"{prefix}_LISTEN_ADDR": addr}
            log_path = self.state_dir / "logs" / f"{name}.log"
            children.append(Child(name, f"tack_provider_{name}", python_env(env), log_path))
            providers.append(f"{name}={addr}")
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
            self.world = SandboxWorld(self.protocol, self.state_dir)
            await self.world.start(await owner_multikey(self.state_dir / KEY_FILE))
            control_env |= {
                "TACK_HOSTNAME": self.local,
                "TACK_OWNER_DID": SANDBOX_OWNER,
                "TACK_DEV": "1",
                "TACK_JETSTREAM_URL": self.world.jetstream.url,
                "TACK_PLC_URL": self.world.plc.url,
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
        assert self.world is not None
        try:
            await self.world.register(self.local)
        except TimeoutError:
            raise RuntimeError(
                f"tack did not follow the sandbox's Jetstream and knot within 30s; see {self.state_dir / 'logs'}"
            ) from None
        app = web.Application()
        app.router.add_post("/trigger", self._trigger_handler)
        self.triggers = web.AppRunner(app, access_log=None)
        await self.triggers.setup()
        site = web.TCPSite(self.triggers, "127.0.0.1", 0)
        await site.start()
        port = self.triggers.addresses[0][1]
        self.state = SandboxState(
            protocol=self.protocol,
            trigger_url=f"http://127.0.0.1:{port}/trigger",
            spindle=f"http://{self.local}",
            hostname=self.local,
            knot=self.world.knot.hostname,
            owner=SANDBOX_OWNER,
            repo_did=SANDBOX_REPO_DID if self.world.current else "",
            key_path=str(self.state_dir / KEY_FILE),
            clone_url=self.world.clone_url if self.world.current else "",
        )
        statefile.write(self.data_dir, self.state)

    async def _trigger_handler(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        async with self.pushing:  # one git push at a time: concurrent ones would race for the branch
            try:
                change = await (self.open_pull() if body.get("pr") else self.push())
            except (GitCommandError, OSError) as exc:
                say(f"trigger failed: {exc}")
                return web.json_response({"error": str(exc)}, status=500)
        return web.json_response(asdict(change))

    async def push(self) -> Change:
        """Push to the sample repository (legacy: the knot sends a pipeline)."""
        assert self.world is not None
        change = await self.world.push()
        say(change.summary)
        return change

    async def open_pull(self) -> Change:
        """Open a pull request on the sample repository."""
        assert self.world is not None
        change = await self.world.open_pull()
        say(change.summary)
        return change

    def banner(self) -> None:
        """Tell the person what runs and what to do next."""
        base = f"http://{self.local}"
        ws = f"ws://{self.local}"
        say()
        if not self.sandbox:
            say("tack is running, serving real Tangled")
            say(f"  spindle         {base}/   (hostname {self.environ.get('TACK_HOSTNAME')})")
        elif self.protocol == "current":
            say("tack is running against a LOCAL SANDBOX of current Tangled")
            say(
                "  (simulated Jetstream, PLC directory, the owner's PDS, and a knot serving a real git repository)"
            )
            say(f"  spindle         {base}/   (hostname {self.local})")
        else:
            say("tack is running against a LOCAL SANDBOX of 2025 Tangled (a legacy knot sending pipelines)")
            say(f"  spindle         {base}/   (hostname {self.local})")
        say(f"  status stream   {ws}/events?cursor=1")
        if self.state is not None and self.state.repo_did:
            urls = ci.api_urls(self.state)
            say(f"  repository      {self.state.clone_url}   (git clone it; owner {SANDBOX_OWNER})")
            say(f"  pipelines       {urls['pipelines']}")
            say(f"  one pipeline    {urls['pipeline']}")
            say(f"  logs            {urls['logs']}")
        elif self.state is not None:
            say(f"  logs            {ws}/logs/{self.state.knot}/<pipeline rkey>/build.yml")
        say(f"  metrics         {base}/metrics")
        say(f"  readiness       {base}/readyz")
        say(f"  process logs    {self.state_dir / 'logs'}/")
        say()
        if not self.sandbox:
            say("Ctrl-C stops everything.")
            say()
            return
        say("From another terminal:")
        if self.protocol == "current":
            say("  make trigger              push a commit to main (runs build.yml and lint.yml)")
            say("  make trigger PR=1         open a pull request into main (runs them for the pull request)")
            say(
                "  make ci-run               run CI on main through the XRPC API, with the owner's signed token"
            )
            say("  make ci-run PIPELINE=<id> retry a pipeline (a manual run at its commit)")
            say("  make ci-cancel            cancel the newest running pipeline (PIPELINE=<id> for another)")
            say("TACK_SANDBOX_PROTOCOL=legacy make run tries a 2025-protocol knot instead.")
        else:
            say("  make trigger              the knot sends another push pipeline")
            say("  make trigger PR=1         the knot sends a pull request pipeline")
            say("TACK_SANDBOX_PROTOCOL=current (the default) shows current Tangled.")
        say(
            "Ctrl-C stops everything. Set TACK_HOSTNAME and TACK_OWNER_DID to serve real Tangled (see README)."
        )
        say()

    def watcher(self) -> Watcher:
        """What prints the statuses and logs."""
        knot = self.world.knot.hostname if self.world is not None else ""
        return Watcher(self.local, knot, current=self.protocol == "current", logs=self.sandbox, say=say)

    async def supervise(self) -> None:
        """Return when asked to stop or when a child dies."""
        while not self.stop.is_set():
            self._check_children()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    async def shutdown(self) -> None:
        """Stop the control plane first, then providers and simulators; leave no process behind."""
        statefile.remove(self.data_dir)
        for child in reversed(self.children):
            await asyncio.to_thread(child.stop)
        if self.triggers is not None:
            await self.triggers.cleanup()
        if self.world is not None:
            await self.world.stop()


async def owner_multikey(key_path: Path) -> str:
    """The sandbox owner's signing key, created at ``key_path`` by ``python -m tack_control token``; its Multikey."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tack_control",
        "token",
        "--multikey",
        "--key",
        str(key_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"could not create the sandbox owner's key: {err.decode(errors='replace').strip()}"
        )
    return out.decode().strip()


async def run(environ: Mapping[str, str]) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 1 when something failed."""
    try:
        launcher = Launcher(environ)
    except envlib.ConfigError as exc:
        say(f"error: {exc}")
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, launcher.stop.set)
    follower: asyncio.Task[None] | None = None
    status = 0
    try:
        mode = f"{launcher.protocol} sandbox" if launcher.sandbox else "Tangled"
        say(f"starting tack ({mode} mode); data in {launcher.state_dir}")
        await launcher.start()
        launcher.banner()
        follower = asyncio.create_task(launcher.watcher().follow())
        if launcher.sandbox:
            async with launcher.pushing:
                await launcher.push()
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


async def trigger(data_dir: Path, pull_request: bool) -> int:
    """Ask a running sandbox to push (or to open a pull request)."""
    state = statefile.read(data_dir)
    async with (
        aiohttp.ClientSession() as session,
        session.post(state.trigger_url, json={"pr": pull_request}) as resp,
    ):
        change = await resp.json()
    if "error" in change:
        say(f"the sandbox could not do it: {change['error']}")
        return 1
    where = "the `make run` terminal" + (
        f" or {ci.api_urls(state)['pipelines']}" if state.repo_did else f" or {state.spindle}/events"
    )
    say(f"{change['summary']}; watch it in {where}")
    return 0


async def run_ci(data_dir: Path, pipeline: str | None) -> int:
    """``make ci-run``: a manual run (or a retry of ``pipeline``) through the XRPC API."""
    uri = await ci.run_ci(statefile.read(data_dir), pipeline)
    say(
        f"triggered pipeline {uri.rsplit('/', 1)[-1]} ({uri})"
        + (f", a retry of {pipeline}" if pipeline else "")
    )
    return 0


async def cancel(data_dir: Path, pipeline: str | None) -> int:
    """``make ci-cancel``: cancel a pipeline through the XRPC API."""
    cancelled = await ci.cancel(statefile.read(data_dir), pipeline)
    if cancelled is None:
        say("no pipeline is pending or running: nothing to cancel")
        return 0
    say(f"cancelled pipeline {cancelled}")
    return 0


def main(argv: list[str]) -> int:
    """``python -m tack_sandbox [trigger [--pr] | run-ci [--pipeline ID] | cancel [--pipeline ID]]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tack_sandbox", description="make run's launcher and sandbox"
    )
    commands = parser.add_subparsers(dest="command")
    push = commands.add_parser("trigger", help="push a commit to the running sandbox (make trigger)")
    push.add_argument("--pr", action="store_true", help="open a pull request instead (make trigger PR=1)")
    for name, what in (("run-ci", "run CI (or retry a pipeline)"), ("cancel", "cancel a pipeline")):
        command = commands.add_parser(name, help=f"{what} through the spindle's XRPC API")
        command.add_argument("--pipeline", default=None, help="the pipeline id (TID)")
    args = parser.parse_args(argv)
    if args.command is None:
        return asyncio.run(run(os.environ))
    data_dir = Path(os.environ.get("TACK_DATA_DIR", ".data")).resolve()
    try:
        if args.command == "trigger":
            return asyncio.run(trigger(data_dir, args.pr))
        if args.command == "run-ci":
            return asyncio.run(run_ci(data_dir, args.pipeline))
        return asyncio.run(cancel(data_dir, args.pipeline))
    except (NotRunning, ci.CiError) as exc:
        say(str(exc))
        return 1
    except aiohttp.ClientError as exc:
        say(f"the sandbox did not answer ({exc}); is `make run` still running?")
        return 1
