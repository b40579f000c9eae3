"""Starting tack's processes for tests: real ``python -m`` processes on loopback ports."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc

from tack_common import client, health


ROOT = Path(__file__).resolve().parents[2]


def _ephemeral_low() -> int:
    """Where the kernel's range of ports for outgoing connections starts (Linux's default when unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS = random.Random(os.getpid() ^ time.time_ns())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel picked for us (bind to 0) lies in that range, where any outgoing connection of
    any process may take it before the server that is handed it binds it ("Address already in use");
    ports below the range are only ever taken by an explicit bind.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = _PORTS.randrange(10_000, low) if low > 11_000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port found below the ephemeral range")


class Proc:
    """A tack process (``python -m module``) with its environment, restartable and killable."""

    def __init__(self, module: str, env: Mapping[str, str], log_path: Path) -> None:
        self.module = module
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process; its stderr and stdout go to ``log_path`` (appended)."""
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    @property
    def pid(self) -> int:
        """The running process id."""
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        """SIGKILL the process and reap it."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def wait_serving(
    address: str, proc: Proc | None = None, timeout: float = 20.0, tls_ca: bytes | None = None
) -> None:
    """Wait until the gRPC health service at ``address`` answers SERVING."""
    deadline = time.monotonic() + timeout
    async with client.channel(address, tls_ca) as channel:
        while True:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.module} exited:\n{proc.output()[-3000:]}")
            try:
                if await health.check(channel, timeout=1) == health.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                detail = proc.output()[-3000:] if proc else ""
                raise TimeoutError(f"{address} not SERVING after {timeout}s\n{detail}")
            await asyncio.sleep(0.05)


class ProviderProcess(Proc):
    """A provider (``python -m <module>``) on free ports, configured by ``<prefix>_*``, its database and
    log in ``workdir`` named after ``name``."""

    def __init__(
        self,
        workdir: Path,
        module: str,
        prefix: str,
        name: str,
        extra_env: Mapping[str, str] | None = None,
        tls_ca: bytes | None = None,
    ) -> None:
        self.tls_ca = tls_ca
        self.port = free_port()
        self.metrics_port = free_port()
        self.db_path = workdir / f"{name}.db"
        env = {
            f"{prefix}_LISTEN_ADDR": f"127.0.0.1:{self.port}",
            f"{prefix}_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            f"{prefix}_DB_PATH": str(self.db_path),
            **(extra_env or {}),
        }
        super().__init__(module, env, workdir / f"{name}.log")

    @property
    def address(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.port}"

    async def start_serving(self, timeout: float = 20.0) -> None:
        """Start and wait for SERVING."""
        self.start()
        await wait_serving(self.address, self, timeout, tls_ca=self.tls_ca)


class StubProcess(ProviderProcess):
    """The stub provider on free ports, its database in ``workdir``."""

    def __init__(
        self, workdir: Path, extra_env: Mapping[str, str] | None = None, tls_ca: bytes | None = None
    ) -> None:
        super().__init__(workdir, "tack_provider_stub", "TACK_STUB", "stub", extra_env, tls_ca)
