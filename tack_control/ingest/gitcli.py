"""Running the ``git`` client against a knot, hardened and bounded.

Every command runs with a minimal environment (no inherited ``GIT_*``, no proxy, no system or user
configuration, no credential prompts or helpers), only the ``https`` protocol (``http`` in dev),
redirects refused, the connection pinned to a vetted address (``http.curloptResolve``, git ≥ 2.37),
curl's low-speed abort for stalled transfers, its own process group (killed whole on a limit), an
absolute deadline, a cap on its output and, while it fetches, a cap on the bytes it writes into the
object store. Failures are ``GitFetchError`` with a bounded ``reason`` (usable as a metric label).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tack_control.ingest.addresses import Endpoint


MIN_GIT_VERSION = (2, 39)
_POLL_S = 0.05


class GitFetchError(Exception):
    """Loading from a knot failed; ``reason`` is a short code fit for a metric label, the message says more."""

    REASONS = (
        "invalid_request",
        "invalid_host",
        "dns",
        "forbidden_address",
        "unreachable",
        "http_error",
        "not_found",
        "object_format",
        "timeout",
        "stalled",
        "too_many_bytes",
        "too_many_files",
        "file_too_large",
        "total_too_large",
        "git_missing",
        "git_failed",
    )

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Remote:
    """How to reach a knot's repository: its URL, vetted endpoint, and whether dev rules apply."""

    url: str
    endpoint: Endpoint
    dev: bool


def parse_git_version(text: str) -> tuple[int, int, int] | None:
    """``git version 2.39.5`` (or ``2.39.5.windows.1``) as (2, 39, 5); None when unrecognised."""
    m = re.match(r"git version (\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def base_env(home: Path) -> dict[str, str]:
    """The whole environment git runs with: nothing inherited but ``PATH``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "GIT_LITERAL_PATHSPECS": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
    }


def remote_options(remote: Remote, *, stall_seconds: float) -> list[str]:
    """``-c`` options for a command that talks to ``remote`` (passed on to git's own sub-fetches too)."""
    scheme = "http" if remote.dev else "https"
    options = {
        "protocol.allow": "never",
        f"protocol.{scheme}.allow": "always",
        "http.followRedirects": "false",
        "http.lowSpeedLimit": "1000",
        "http.lowSpeedTime": str(max(1, round(stall_seconds))),
        "credential.helper": "",
        "core.askPass": "",
        "core.hooksPath": "/dev/null",
        "gc.auto": "0",
        "maintenance.auto": "false",
        "fetch.writeCommitGraph": "false",
        "transfer.unpackLimit": "1",  # keep received packs whole, so their growth on disk is visible
        "protocol.version": "2",
    }
    if not remote.endpoint.is_ip_literal:
        options["http.curloptResolve"] = remote.endpoint.curl_resolve
    return [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]


def classify(stderr: str) -> tuple[str, str]:
    """A failed git command's (reason, one-line message) from its stderr."""
    text = " ".join(stderr.split())
    lowered = text.lower()
    rules = (
        ("stalled", ("operation too slow", "curl 28")),
        ("object_format", ("mismatched algorithms",)),
        (
            "not_found",
            (
                "not found",
                "returned error: 404",
                "couldn't find remote ref",
                "not our ref",
                "unadvertised object",
                "isn't reachable",
                "no such remote ref",
                "not a tree object",
                "did not send all necessary objects",
            ),
        ),
        ("http_error", ("returned error:", "redirect")),
        ("unreachable", ("failed to connect", "couldn't connect", "connection refused", "timed out", "ssl")),
        ("dns", ("could not resolve host",)),
    )
    for reason, needles in rules:
        if any(n in lowered for n in needles):
            return reason, text[-400:]
    return "git_failed", text[-400:] or "git failed without a message"


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # git removed a temporary file meanwhile
    return total


@dataclass
class ByteBudget:
    """Bytes git may write into ``objects`` during the fetches of one load: ``limit`` in all, ``remaining`` left."""

    objects: Path
    limit: int
    remaining: int = -1

    def __post_init__(self) -> None:
        if self.remaining < 0:
            self.remaining = self.limit


async def run_git(
    args: Sequence[str],
    *,
    env: dict[str, str],
    deadline: float,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    max_output: int = 1 << 20,
    check_output: Callable[[bytearray], None] | None = None,
    budget: ByteBudget | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> bytes:
    """Run ``git args…`` and return its stdout; GitFetchError on failure or on any bound.

    ``deadline`` is an absolute ``time.monotonic()``; ``check_output`` sees the output so far after
    each read and may raise; ``budget`` caps the growth of the object store while it runs.
    """
    if time.monotonic() >= deadline:
        raise GitFetchError("timeout", "deadline passed before git started")
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise GitFetchError("git_missing", "the git client is not installed (apt-get install git)") from None
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    baseline = tree_size(budget.objects) if budget else 0

    async def feed() -> None:
        if stdin is not None and proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()

    async def read_output() -> bytes:
        out = bytearray()
        while chunk := await stdout.read(64 << 10):
            out += chunk
            if len(out) > max_output:
                raise GitFetchError("too_many_bytes", f"git printed more than {max_output} bytes")
            if check_output is not None:
                check_output(out)
        return bytes(out)

    async def read_errors() -> bytes:
        out = bytearray()
        while chunk := await stderr.read(64 << 10):
            out += chunk[: max(0, (64 << 10) - len(out))]
        return bytes(out)

    async def watch_bytes() -> None:
        assert budget is not None
        while True:
            await asyncio.sleep(_POLL_S)
            grown = await asyncio.to_thread(tree_size, budget.objects) - baseline
            if grown > budget.remaining:
                raise GitFetchError(
                    "too_many_bytes",
                    f"the knot sent more than {budget.limit} bytes (the limit on bytes fetched per load)",
                )

    try:
        async with asyncio.timeout_at(_loop_time(deadline)), asyncio.TaskGroup() as group:
            group.create_task(feed())
            errors = group.create_task(read_errors())
            output = group.create_task(read_output())
            watcher = group.create_task(watch_bytes()) if budget is not None else None
            await proc.wait()
            await output
            if watcher is not None:
                watcher.cancel()
    except TimeoutError:
        raise GitFetchError("timeout", "the knot did not answer within the deadline") from None
    except ExceptionGroup as group_error:
        first = next((e for e in group_error.exceptions if isinstance(e, GitFetchError)), None)
        if first is None:
            raise
        raise first from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        await _finish(proc, stdout, stderr)
    if budget is not None:
        budget.remaining -= max(0, tree_size(budget.objects) - baseline)
    if proc.returncode not in ok_codes:
        reason, message = classify(errors.result().decode(errors="replace"))
        raise GitFetchError(reason, message)
    return output.result()


async def _finish(proc: asyncio.subprocess.Process, *streams: asyncio.StreamReader) -> None:
    """Read what is left, then reap. On Python 3.11 ``wait()`` returns only once every pipe is closed,
    and a pipe paused with unread data never closes, so draining must come first."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(5):
            for stream in streams:
                while await stream.read(64 << 10):
                    pass
            await proc.wait()


def _loop_time(deadline: float) -> float:
    """``deadline`` (a ``time.monotonic()`` value) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
