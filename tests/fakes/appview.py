"""AppviewClient: reads a spindle's ``/events`` and ``/logs`` the way Tangled's Go appview
does (docs/tangled-protocol.md §6, §7), and records everything the appview would drop or mis-show.

Differences from the real appview, all deliberate: frames are processed one at
a time in arrival order (the appview uses 64 concurrent workers), statuses are
not joined to knot pipelines (the appview rejects statuses for pipelines it
never ingested), and reconnects happen when the test asks, not after a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self

import aiohttp


JsonObject = dict[str, Any]

STATUS_NSID = "sh.tangled.pipeline.status"
DIAL_TIMEOUT = 5.0
_INT64 = range(-(1 << 63), 1 << 63)

_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_ATURI_RE = re.compile(
    r"at://(?P<authority>[a-zA-Z0-9._:%-]+)"
    r"(/(?P<collection>[a-zA-Z0-9-.]+)(/(?P<rkey>[a-zA-Z0-9_~.:-]{1,512}))?)?"
)
_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_HANDLE_RE = re.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_NSID_RE = re.compile(
    r"[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"(\.[a-zA-Z]([a-zA-Z]{0,61}[a-zA-Z])?)"
)

# Go types of the fields the appview decodes; a JSON null leaves a Go field untouched, so it always passes.
_STATUS_FIELDS = {
    "$type": str,
    "createdat": str,
    "error": str,
    "exitcode": int,
    "pipeline": str,
    "status": str,
    "workflow": str,
}
_LOGLINE_FIELDS = {
    "kind": str,
    "content": str,
    "time": str,
    "step_id": int,
    "stream": str,
    "step_status": str,
    "step_kind": int,
    "step_command": str,
}
_LOGLINE_REQUIRED = ("kind", "content", "time", "step_id")


@dataclass(frozen=True)
class FrameError:
    """A frame the appview would reject, skip or fail to show; ``index`` counts frames from 0."""

    index: int
    raw: str
    reason: str


@dataclass(frozen=True)
class StatusRow:
    """One ``pipeline_statuses`` row as the appview stores it."""

    seq: int
    rkey: str
    knot: str
    pipeline_rkey: str
    workflow: str
    status: str
    created_s: int
    record: JsonObject


@dataclass
class LogResult:
    """What one ``/logs`` connection delivered.

    ``http_status`` is 101 after an upgrade, the refusing status otherwise (a
    redirect counts as a refusal, since Go's dialer does not follow it), and
    ``None`` if the connection could not be made. ``lines`` holds every frame Go
    decodes; ``errors`` also covers decoded lines the page cannot show.
    """

    http_status: int | None
    lines: list[JsonObject] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    errors: list[FrameError] = field(default_factory=list)
    timed_out: bool = False


class RenderedStep(NamedTuple):
    """A collapsible step block on the appview's workflow page."""

    step_id: int
    name: str
    command: str
    kind: int
    lines: list[str]
    ended: bool


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_rfc3339(text: str) -> int | None:
    """Unix nanoseconds of an RFC 3339 timestamp with an offset, as Go's strict parser accepts it; else None."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, sign, off_h, off_m = match.group(7, 8, 9, 10)
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = 0
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset = (int(off_h) * 60 + int(off_m)) * 60 * (1 if sign == "+" else -1)
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


def parse_at_uri(text: str) -> tuple[str, str, str] | None:
    """``(authority, collection, rkey)`` if indigo's ``ParseATURI`` accepts ``text``; missing parts are ``""``."""
    match = _ATURI_RE.fullmatch(text) if len(text) <= 8192 else None
    if match is None:
        return None
    authority, collection, rkey = match.group("authority"), match.group("collection"), match.group("rkey")
    if authority.startswith("did:"):
        if len(authority) > 2048 or _DID_RE.fullmatch(authority) is None:
            return None
    elif len(authority) > 253 or _HANDLE_RE.fullmatch(authority) is None:
        return None
    if collection and (len(collection) > 317 or _NSID_RE.fullmatch(collection) is None):
        return None
    if rkey in (".", ".."):
        return None
    return authority, collection or "", rkey or ""


def _fold(obj: JsonObject) -> JsonObject:
    """Go matches JSON keys to struct fields case-insensitively; with duplicates the last one wins."""
    return {key.lower(): value for key, value in obj.items()}


def _type_problems(obj: JsonObject, fields: dict[str, type]) -> list[str]:
    problems = []
    for name, expected in fields.items():
        value = obj.get(name)
        if value is None:
            continue
        # bool is an int in Python but not in Go; Go ints are 64-bit.
        fits = type(value) is int and value in _INT64 if expected is int else isinstance(value, expected)
        if not fits:
            problems.append(f"{name}={value!r} is not a Go {expected.__name__}")
    return problems


def decode_log_frames(frames: Sequence[str | bytes]) -> tuple[list[JsonObject], list[FrameError]]:
    """Decode ``/logs`` frames like the appview proxy: the decoded LogLines and every problem found."""
    lines: list[JsonObject] = []
    errors: list[FrameError] = []
    started: set[int] = set()
    for index, frame in enumerate(frames):
        if isinstance(frame, bytes):
            errors.append(
                FrameError(index, frame.decode(errors="replace"), "binary frame (LogLines are text)")
            )
            continue
        reason = None
        try:
            decoded = json.loads(frame)
        except ValueError:
            decoded, reason = None, "not JSON"
        if reason is None and not isinstance(decoded, dict):
            reason = "not a JSON object"
        if reason is not None or not isinstance(decoded, dict):
            errors.append(FrameError(index, frame, reason or "not a JSON object"))
            continue
        line = _fold(decoded)
        problems = _type_problems(line, _LOGLINE_FIELDS)
        problems += [f"missing {name}" for name in _LOGLINE_REQUIRED if line.get(name) is None]
        stamp = line.get("time")
        if isinstance(stamp, str) and parse_rfc3339(stamp) is None:
            problems.append(f"time {stamp!r} is not RFC 3339 with an offset")
        if problems:
            errors.append(FrameError(index, frame, "; ".join(problems)))
            continue
        lines.append(line)
        kind, step_id, step_status = line["kind"], line["step_id"], line.get("step_status")
        if kind == "control" and step_status == "start":
            if step_id in started:
                errors.append(FrameError(index, frame, f"second start for step {step_id} (duplicate DOM id)"))
            started.add(step_id)
        elif kind == "control" and step_status == "end" and step_id not in started:
            errors.append(FrameError(index, frame, f"end for step {step_id} that never started"))
        elif kind == "data" and step_id not in started:
            errors.append(FrameError(index, frame, f"data for step {step_id} before its start (invisible)"))
        elif kind not in ("data", "control"):
            errors.append(FrameError(index, frame, f"kind {kind!r} is neither data nor control"))
    return lines, errors


@dataclass
class _Block:
    step_id: int
    name: str
    command: str
    kind: int
    lines: list[str] = field(default_factory=list)
    ended: bool = False


def render(lines: Sequence[JsonObject]) -> list[RenderedStep]:
    """The step blocks the appview page ends up showing for decoded LogLines, in page order."""
    blocks: list[_Block] = []
    by_id: dict[int, _Block] = {}
    for line in lines:
        step_id = line["step_id"]
        if line["kind"] == "control" and line.get("step_status") == "start":
            block = _Block(
                step_id, line["content"], line.get("step_command") or "", line.get("step_kind") or 0
            )
            blocks.append(block)
            # A repeated id adds a block, but htmx swaps into the first element with that id.
            by_id.setdefault(step_id, block)
        elif line["kind"] == "control" and line.get("step_status") == "end" and step_id in by_id:
            by_id[step_id].ended = True
        elif line["kind"] == "data" and step_id in by_id:
            by_id[step_id].lines.append(line["content"])
    return [RenderedStep(b.step_id, b.name, b.command, b.kind, b.lines, b.ended) for b in blocks]


class AppviewClient:
    """A Go-appview-faithful consumer of one spindle (``base_url`` is ``http://host:port`` or ``ws://...``)."""

    def __init__(self, base_url: str) -> None:
        base = base_url.rstrip("/")
        for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
            if base.startswith(plain):
                base = secure + base.removeprefix(plain)
        self._ws_base = base
        self.source = base.split("://", 1)[1]
        self.cursor = 0
        self.connect_urls: list[str] = []
        self.errors: list[FrameError] = []
        self.duplicates = 0
        self.ignored = 0
        self.binary_frames = 0
        self._frames = 0
        self._rows: dict[str, StatusRow] = {}
        self._session: aiohttp.ClientSession | None = None
        self._events_ws: aiohttp.ClientWebSocketResponse | None = None
        self._events_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect and release the HTTP session."""
        await self.disconnect_events()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # /events

    @property
    def events_connected(self) -> bool:
        """Whether the ``/events`` connection is open."""
        return self._events_task is not None and not self._events_task.done()

    @property
    def rows(self) -> list[StatusRow]:
        """Every stored status row, in arrival order."""
        return list(self._rows.values())

    async def connect_events(self) -> None:
        """Dial ``/events``, with ``?cursor=`` only once the appview has a cursor, and start reading."""
        if self.events_connected:
            raise RuntimeError("already connected to /events")
        url = f"{self._ws_base}/events" + (f"?cursor={self.cursor}" if self.cursor != 0 else "")
        self.connect_urls.append(url)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with asyncio.timeout(DIAL_TIMEOUT):
            ws = await self._session.ws_connect(url, max_msg_size=0)
        self._events_ws = ws
        self._events_task = asyncio.create_task(self._read_events(ws))

    async def disconnect_events(self) -> None:
        """Close the ``/events`` connection (as a restart or network blip would) and stop reading."""
        if self._events_ws is not None:
            await self._events_ws.close()
        if self._events_task is not None:
            await self._events_task
        self._events_ws = self._events_task = None

    async def run_events(self, stop: asyncio.Event, reconnect_delay: float = 60.0) -> None:
        """Stay subscribed until ``stop`` is set, redialling ``reconnect_delay`` s after each drop."""
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await self.connect_events()
            if self._events_task is not None:
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({stopper, self._events_task}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), reconnect_delay)
            await self.disconnect_events()

    def statuses(self, knot: str, rkey: str, workflow: str) -> list[JsonObject]:
        """The status records stored for one workflow of pipeline ``(knot, rkey)``, in arrival order."""
        return [row.record for row in self._workflow_rows(knot, rkey, workflow)]

    def latest(self, knot: str, rkey: str, workflow: str) -> JsonObject | None:
        """The status the appview shows: the last by (created second, insert order)."""
        rows = self._workflow_rows(knot, rkey, workflow)
        return max(rows, key=lambda row: (row.created_s, row.seq)).record if rows else None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; re-checked after every frame and on disconnect."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def _workflow_rows(self, knot: str, rkey: str, workflow: str) -> list[StatusRow]:
        return [
            row
            for row in self._rows.values()
            if (row.knot, row.pipeline_rkey, row.workflow) == (knot, rkey, workflow)
        ]

    async def _read_events(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._ingest(message.data)
                elif message.type is aiohttp.WSMsgType.BINARY:
                    self.binary_frames += 1
                else:
                    break
                async with self._changed:
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _reject(self, index: int, raw: str, reason: str) -> None:
        self.errors.append(FrameError(index, raw, reason))

    def _ingest(self, raw: str) -> None:
        index = self._frames
        self._frames += 1
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            self._reject(index, raw, "envelope is not a JSON object (a Go worker would exit)")
            return
        fields = _fold(envelope)
        problems = _type_problems(fields, {"rkey": str, "nsid": str})
        if problems:
            self._reject(index, raw, "envelope: " + "; ".join(problems))
            return
        now = time.time_ns()
        self.cursor = now
        if fields.get("nsid") != STATUS_NSID:
            self.ignored += 1
            return
        self._store(index, raw, fields.get("rkey") or "", fields, now)

    def _store(self, index: int, raw: str, rkey: str, envelope: JsonObject, now: int) -> None:
        if "event" not in envelope:
            self._reject(index, raw, "envelope has no event")
            return
        record = envelope["event"] if envelope["event"] is not None else {}
        if not isinstance(record, dict):
            self._reject(index, raw, "event is not a JSON object")
            return
        fields = _fold(record)
        problems = _type_problems(fields, _STATUS_FIELDS)
        if problems:
            self._reject(index, raw, "status record: " + "; ".join(problems))
            return
        uri = parse_at_uri(fields.get("pipeline") or "")
        if uri is None:
            self._reject(index, raw, f"pipeline {fields.get('pipeline')!r} is not an AT-URI")
            return
        created = parse_rfc3339(fields.get("createdat") or "")
        if created is None:
            self._reject(index, raw, f"createdAt {fields.get('createdat')!r} is not RFC 3339 with an offset")
            created = now
        elif created > now:
            self._reject(
                index, raw, f"createdAt {fields.get('createdat')!r} is later than the appview's clock"
            )
            created = now
        if rkey in self._rows:
            self.duplicates += 1
            return
        self._rows[rkey] = StatusRow(
            seq=len(self._rows),
            rkey=rkey,
            knot=uri[0].removeprefix("did:web:"),
            pipeline_rkey=uri[2],
            workflow=fields.get("workflow") or "",
            status=fields.get("status") or "",
            created_s=created // 1_000_000_000,
            record=record,
        )

    # /logs

    async def read_logs(self, knot: str, rkey: str, workflow: str, timeout: float = 5.0) -> LogResult:
        """Open ``/logs/<knot>/<rkey>/<workflow>`` (plain string join) and read until close or ``timeout``."""
        url = "/".join([self._ws_base, "logs", knot, rkey, workflow])
        redirects: list[int] = []

        async def on_redirect(
            _session: aiohttp.ClientSession, _ctx: object, params: aiohttp.TraceRequestRedirectParams
        ) -> None:
            redirects.append(params.response.status)

        trace = aiohttp.TraceConfig()
        trace.on_request_redirect.append(on_redirect)
        frames: list[str | bytes] = []
        result = LogResult(http_status=None)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            try:
                async with asyncio.timeout(timeout):
                    ws = await session.ws_connect(url, max_msg_size=0)
            except aiohttp.WSServerHandshakeError as exc:
                result.http_status = redirects[0] if redirects else exc.status
                return result
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                result.errors.append(FrameError(-1, url, f"dial failed: {exc!r}"))
                return result
            if redirects:
                await ws.close()
                result.http_status = redirects[0]
                return result
            result.http_status = 101
            try:
                async with asyncio.timeout(timeout):
                    await self._collect(ws, frames, result)
            except TimeoutError:
                result.timed_out = True
            await ws.close()
        result.lines, errors = decode_log_frames(frames)
        result.errors.extend(errors)
        return result

    @staticmethod
    async def _collect(
        ws: aiohttp.ClientWebSocketResponse, frames: list[str | bytes], result: LogResult
    ) -> None:
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                frames.append(message.data)
                continue
            if message.type is aiohttp.WSMsgType.CLOSE:
                result.close_reason = message.extra or ""
            result.close_code = ws.close_code
            return
