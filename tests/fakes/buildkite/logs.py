"""Job log bytes as a Buildkite agent v4 uploads them (docs/buildkite-api.md §4, §10.4).

The agent's timestamper writes ``ESC _ bk;t=<unix ms> BEL`` at the start of
every line, and again mid-line when a write arrives more than a second after
the previous marker; erase-in-line sequences (``ESC[K``, ``ESC[1K``,
``ESC[2K``) count as line ends. Command output passes through a PTY, which
turns ``\\n`` into ``\\r\\n`` (so output that already says ``\\r\\n`` becomes
``\\r\\r\\n``); the agent's own lines are written with ``\\r\\n``.
"""

from __future__ import annotations

import html
import re


MID_LINE_AFTER_MS = 1000
GREY = "\x1b[90m"
GREEN = "\x1b[32m"
RED = "\x1b[31m"
RESET = "\x1b[0m"
TIMEOUT_LINE = "Terminated with signal SIGTERM (because the job timed out). Exit status -1"

_LINE_END = re.compile(rb"\n|\x1b\[[012]?K")
_MARKER = re.compile(rb"(?:\x1b_)?bk;t=\d+\x07")
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def marker(now_ms: int) -> bytes:
    """The inline timestamp the agent writes: ``\\x1b_bk;t=<ms>\\x07``."""
    return b"\x1b_bk;t=%d\x07" % now_ms


class JobLog:
    """The raw stored bytes of one job's log, grown only by appending."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._at_line_start = True
        self._last_marker_ms: int | None = None

    @property
    def size(self) -> int:
        """Length of the stored log in bytes."""
        return len(self.data)

    def write_output(self, text: str | bytes, now_ms: int) -> None:
        """Append command output as it comes out of the PTY (``\\n`` becomes ``\\r\\n``); lines may stay open."""
        raw = text.encode() if isinstance(text, str) else bytes(text)
        self._write(raw.replace(b"\n", b"\r\n"), now_ms)

    def agent_line(self, text: str, now_ms: int) -> None:
        """Append a line the agent writes itself, closing any open output line first."""
        self.end_line(now_ms)
        self._write(text.encode() + b"\r\n", now_ms)

    def end_line(self, now_ms: int) -> None:
        """Terminate an open output line, as the agent does when the command exits."""
        if not self._at_line_start:
            self._write(b"\r\n", now_ms)

    def clear(self) -> None:
        """Forget the stored bytes (``DELETE`` on the log URL)."""
        self.data.clear()
        self._at_line_start = True

    def _write(self, raw: bytes, now_ms: int) -> None:
        if not raw:
            return
        last = self._last_marker_ms
        if not self._at_line_start and last is not None and now_ms - last > MID_LINE_AFTER_MS:
            self._mark(now_ms)
        pos = 0
        for match in _LINE_END.finditer(raw):
            self._segment(raw[pos : match.end()], now_ms)
            self._at_line_start = True
            pos = match.end()
        if pos < len(raw):
            self._segment(raw[pos:], now_ms)
            self._at_line_start = False

    def _segment(self, chunk: bytes, now_ms: int) -> None:
        if self._at_line_start:
            self._mark(now_ms)
        self.data += chunk

    def _mark(self, now_ms: int) -> None:
        self.data += marker(now_ms)
        self._last_marker_ms = now_ms


def preamble(command: str | None) -> list[str]:
    """The lines an agent writes before running a command step's script."""
    lines = ["~~~ Running global environment hook", "~~~ Preparing working directory", "~~~ Running script"]
    if command:
        lines.append(f"{GREY}${RESET} {command}")
    return lines


def exit_error_line(exit_status: int) -> str:
    """The agent's closing line for a command that exited non-zero (contains a multi-byte emoji)."""
    return f"{RED}\U0001f6a8 Error: The command exited with status {exit_status}{RESET}"


def render_html(data: bytes) -> str:
    """A crude stand-in for terminal-to-html: markers and ANSI removed, text escaped, one div per line."""
    plain = _ANSI.sub(b"", _MARKER.sub(b"", data)).decode("utf-8", errors="replace")
    body = ""
    for line in plain.split("\n"):
        # A bare CR rewinds the line (progress bars): what is visible is the last non-empty overwrite.
        parts = [part for part in line.split("\r") if part]
        if parts:
            body += f"<div>{html.escape(parts[-1])}</div>"
    return f'<div class="term-container">{body}</div>'
