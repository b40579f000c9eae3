"""The watch protocol's wire, free of I/O (docs/tekton-api.md §2): newline-delimited JSON events, and
what each means for the watcher's cursor.

A stream may end anywhere, so :class:`Lines` keeps the partial tail; a line longer than its bound is
an error (the watcher relists instead of buffering without limit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


MAX_LINE_BYTES = 16 << 20

Kind = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "GONE", "ERROR"]


class LineTooLong(Exception):
    """A line (one watch event, one log line) exceeded its bound."""


class Lines:
    """Splits a byte stream into lines; the unterminated tail waits for more."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The lines completed by ``data`` (without their ``\\n``)."""
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > self.limit or any(len(line) > self.limit for line in complete):
            self._partial = b""
            raise LineTooLong(f"a line is longer than {self.limit} bytes")
        return complete

    def flush(self) -> bytes:
        """The unterminated last line, once the stream has ended."""
        partial, self._partial = self._partial, b""
        return partial


@dataclass(frozen=True)
class Event:
    """One decoded watch event.

    ``version`` is the resourceVersion to resume from after it (None for errors); ``obj`` the object
    (the ``Status`` for errors). ``GONE`` is a 410: the version is too old, list again.
    """

    kind: Kind
    obj: Mapping[str, Any]
    version: str | None
    code: int = 0

    @property
    def name(self) -> str:
        """The object's name (empty for bookmarks and errors)."""
        metadata = self.obj.get("metadata")
        return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""


class Malformed(Exception):
    """A watch line that is not an event."""


def object_version(obj: Mapping[str, Any]) -> str | None:
    """``metadata.resourceVersion`` of an object or list."""
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return version if isinstance(version, str) and version else None


def decode(line: bytes) -> Event | None:
    """The event on one line; None for a blank line; Malformed for anything else."""
    if not line.strip():
        return None
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("object"), dict):
        raise Malformed("no object")
    kind, obj = raw.get("type"), raw["object"]
    if kind == "ERROR":
        code = obj.get("code")
        code = code if isinstance(code, int) else 0
        return Event("GONE" if code == 410 else "ERROR", obj, None, code)
    if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise Malformed(f"unknown event type {kind!r}")
    version = object_version(obj)
    if kind == "BOOKMARK" and version is None:
        raise Malformed("a bookmark without resourceVersion")
    return Event(kind, obj, version)
