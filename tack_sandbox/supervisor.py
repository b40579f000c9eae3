"""Child processes of the launcher: started together, stopped in order, never left behind.

Each child runs in its own session (a terminal's Ctrl-C reaches only the
launcher, which then stops the children in order) and is asked by the kernel
to receive SIGTERM if the launcher itself dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Child:
    """One ``python -m <module>`` child with its own log file."""

    def __init__(
        self, name: str, module: str, env: Mapping[str, str], log_path: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.module = module
        self.env = dict(env)
        self.log_path = log_path
        self.args = args
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child, appending its output to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        """Process id (0 before start)."""
        return 0 if self.popen is None else self.popen.pid

    def exited(self) -> int | None:
        """The exit status, or None while running."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; always reaps."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def tail(self, lines: int = 15) -> str:
        """The last lines the child wrote."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The launcher's environment plus ``extra``, with unbuffered output."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
