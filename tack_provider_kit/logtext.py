"""Turning raw CI log bytes (a job's terminal output) into clean text lines, free of I/O.

Used for Buildkite's raw job logs and builds.sr.ht's task logs. They hold:

- (Buildkite) ``ESC _ bk;t=<unix ms> BEL`` timestamp markers at line starts and mid-line
  (also the bare ``bk;t=<ms> BEL`` variant): removed; a line's first marker
  becomes its time;
- ANSI escapes (SGR colours, erase-in-line, cursor moves, OSC links): removed;
- ``\\r\\n`` and PTY ``\\r\\r\\n`` line ends, and bare ``\\r`` progress redraws: a
  line shows what a terminal would finally show, its last non-empty redraw.

Logs arrive in increments that can end anywhere, even inside a marker or a
UTF-8 sequence, so :class:`LogCleaner` only cleans complete lines and keeps the
partial tail for the next increment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


_TIMESTAMP = re.compile(r"(?:\x1b_)?bk;t=(\d+)\x07")
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: SGR colours, erase in line, cursor moves
    r"|\x1b[\]_P^X][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, APC, DCS, PM, SOS strings
    r"|\x1b[()#%][0-9A-Za-z@]"  # character set selection
    r"|\x1b[@-Z\\-_a-z=>]?"  # two-byte escapes, or a lone ESC
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_PARTIAL_BYTES = 1 << 20


@dataclass(frozen=True)
class LogText:
    """One clean line and when the agent wrote it (Unix ms), if the log said."""

    text: str
    ms: int | None


def clean_line(raw: str) -> LogText:
    """Clean one line of log text (without its ``\\n``)."""
    ms: int | None = None
    found = _TIMESTAMP.search(raw)
    if found is not None:
        ms = int(found.group(1))
        raw = _TIMESTAMP.sub("", raw)
    raw = raw.rstrip("\r")
    if "\r" in raw:
        redraws = [_ESCAPES.sub("", part) for part in raw.split("\r")]
        text = next((part for part in reversed(redraws) if part.strip()), "")
    else:
        text = _ESCAPES.sub("", raw)
    return LogText(_CONTROLS.sub("", text), ms)


class LogCleaner:
    """Cleans a log fed in arbitrary byte increments; lines without a marker inherit the last time."""

    def __init__(self) -> None:
        self._partial = b""
        self._last_ms: int | None = None

    def feed(self, data: bytes) -> list[LogText]:
        """The lines completed by ``data``."""
        buffer = self._partial + data
        *complete, self._partial = buffer.split(b"\n")
        if len(self._partial) > MAX_PARTIAL_BYTES:
            complete.append(self._partial)
            self._partial = b""
        return [self._clean(raw) for raw in complete]

    def flush(self) -> list[LogText]:
        """The unterminated last line, once the log is complete."""
        partial, self._partial = self._partial, b""
        if not partial.strip(b"\r"):
            return []
        return [self._clean(partial)]

    def _clean(self, raw: bytes) -> LogText:
        line = clean_line(raw.decode("utf-8", errors="replace"))
        if line.ms is None:
            return LogText(line.text, self._last_ms)
        self._last_ms = line.ms
        return line
