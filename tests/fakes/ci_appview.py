"""CiAppview: reads a spindle's ``sh.tangled.ci.*`` API the way the current Tangled appview and XRPC clients do.

It follows the lexicons, not tack's code: every JSON answer is validated
against the lexicon files in tests/fixtures/lexicons, and every log message is
decoded with cbor2 (an implementation independent of the libipld encoder tack
uses) and must be canonical DAG-CBOR byte for byte (re-encoded canonically by
cbor2, it must give the same bytes: map keys length-first then bytewise,
shortest integer and length forms, definite lengths), only text, integers
and maps, with the header and the body filling the frame exactly. As the
appview does, a text frame or an undecodable one is an error, and the log is
rendered as step blocks per workflow, where data shows only after its
step's ``start``.

Why cbor2: it installs from wheels (cbrrr, the strictest DAG-CBOR decoder,
ships only sources and needs a C compiler at install time). cbor2 itself is
lenient (it accepts unsorted keys and long integer forms), so strictness comes
from the byte comparison with its canonical re-encoding, and from the golden
vectors of tests/control/test_ci_logcbor.py.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import cbor2

from tests.support.lexicon import Lexicons


SUBSCRIBE = "sh.tangled.ci.subscribePipelineLogs"
QUERY = "sh.tangled.ci.queryPipelines"
GET = "sh.tangled.ci.getPipeline"
DESCRIBE = "sh.tangled.ci.describeWorkflowDefinition"
Params = list[tuple[str, str]]


class NotCanonical(AssertionError):
    """A log message that is not the canonical DAG-CBOR the appview's decoder expects."""


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, str) or (type(value) is int and -(1 << 63) <= value < 1 << 63)


def decode_message(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, body) of one event-stream message; NotCanonical unless it is canonical DAG-CBOR."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream)
    header = decoder.decode()
    body = decoder.decode()
    if stream.tell() != len(data):
        raise NotCanonical(f"{len(data) - stream.tell()} bytes after the body")
    if not (isinstance(header, dict) and isinstance(body, dict) and _plain(header) and _plain(body)):
        raise NotCanonical(f"header and body must be maps of text and integers: {header!r} {body!r}")
    again = cbor2.dumps(header, canonical=True) + cbor2.dumps(body, canonical=True)
    if again != data:
        raise NotCanonical(f"not canonical DAG-CBOR: {data.hex()} (canonical: {again.hex()})")
    return header, body


@dataclass
class Step:
    """A step block of one workflow's log page."""

    step: int
    name: str
    kind: str
    command: str
    lines: list[str] = field(default_factory=list)
    ended: bool = False


@dataclass
class LogView:
    """What one subscription delivered, rendered per workflow, with every problem the appview would hit."""

    http_status: int | None = None
    refusal: dict[str, Any] | None = None
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    close_code: int | None = None
    timed_out: bool = False
    steps: dict[str, dict[int, Step]] = field(default_factory=dict)

    def take(self, data: bytes, lexicons: Lexicons) -> None:
        """Decode and render one binary message."""
        try:
            header, body = decode_message(data)
        except (NotCanonical, cbor2.CBORDecodeError) as exc:
            self.problems.append(f"message {len(self.messages)}: {exc}")
            return
        if header.get("op") == -1:
            self.errors.append(body)
            if not (isinstance(body.get("error"), str) and isinstance(body.get("message", ""), str)):
                self.problems.append(f"bad error body {body!r}")
            return
        t = header.get("t")
        if header != {"t": t, "op": 1} or t not in ("#control", "#data"):
            self.problems.append(f"unexpected header {header!r}")
            return
        try:
            lexicons.validate(body, f"{SUBSCRIBE}{t}")
        except AssertionError as exc:
            self.problems.append(str(exc))
            return
        self.messages.append((t, body))
        steps = self.steps.setdefault(body["workflow"], {})
        step = body["step"]
        if t == "#control":
            if body.get("status") == "start":
                if step in steps:
                    self.problems.append(f"{body['workflow']}: second start of step {step}")
                steps[step] = Step(step, body["content"], body.get("kind", ""), body.get("command", ""))
            elif body.get("status") == "end":
                if step not in steps:
                    self.problems.append(f"{body['workflow']}: end of step {step} that never started")
                else:
                    steps[step].ended = True
        elif step not in steps:
            self.problems.append(f"{body['workflow']}: data of step {step} before its start (invisible)")
        else:
            steps[step].lines.append(body["content"])

    def lines(self, workflow: str) -> list[str]:
        """Every data line shown for ``workflow``, in page order, without the trailing newline."""
        return [line.removesuffix("\n") for s in self.steps.get(workflow, {}).values() for line in s.lines]


class LiveLogs:
    """An open subscription, read message by message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, view: LogView, lexicons: Lexicons) -> None:
        self.ws = ws
        self.view = view
        self.lexicons = lexicons

    async def next(self, timeout: float) -> bool:
        """Read one message; False when the socket closed. TimeoutError when nothing came in time."""
        # Not receive(timeout=): aiohttp restarts that timeout after each ping it answers.
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            self.view.take(msg.data, self.lexicons)
            return True
        if msg.type is aiohttp.WSMsgType.TEXT:
            self.view.problems.append(f"text frame (the appview aborts): {msg.data[:200]!r}")
            return True
        self.view.close_code = self.ws.close_code
        return False

    async def until_closed(self, timeout: float) -> LogView:
        """Read to the close (``timed_out`` set and the socket dropped if it takes longer)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.next(timeout):
                    pass
        except TimeoutError:
            self.view.timed_out = True
            await self.ws.close()
        return self.view


class CiAppview:
    """A client of one spindle's CI API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.lexicons = Lexicons()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session."""
        assert self._session is not None, "use CiAppview as an async context manager"
        return self._session

    async def call(self, nsid: str, params: Params) -> tuple[int, Any]:
        """GET an XRPC method: (status, decoded JSON body). Any non-2xx body must be an XRPC error."""
        async with self.session.get(f"{self.base_url}/xrpc/{nsid}", params=params) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                assert isinstance(body, dict) and isinstance(body.get("error"), str), body
                assert isinstance(body.get("message", ""), str), body
            else:
                assert resp.content_type == "application/json", resp.content_type
            return resp.status, body

    async def query_pipelines(
        self,
        repo: str,
        commits: tuple[str, ...] = (),
        kinds: tuple[str, ...] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page, validated against the lexicon and decoded as the Swift client does."""
        params: Params = [("repo", repo), *(("commits", c) for c in commits), *(("kinds", k) for k in kinds)]
        if limit is not None:
            params.append(("limit", str(limit)))
        if cursor is not None:
            params.append(("cursor", cursor))
        status, body = await self.call(QUERY, params)
        assert status == 200, body
        self.lexicons.output(QUERY, body)
        assert isinstance(body, dict)
        for pipeline in body["pipelines"]:
            swift_decode_pipeline(pipeline)
        return body

    async def query_all(self, repo: str, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Every page, following the cursor until there is none."""
        out: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100_000):
            page = await self.query_pipelines(repo, limit=limit, cursor=cursor, **filters)
            out += page["pipelines"]
            cursor = page.get("cursor")
            if cursor is None:
                return out
        raise AssertionError("the cursor never ran out")

    async def get_pipeline(self, pipeline: str) -> dict[str, Any]:
        """One pipeline, validated against the lexicon."""
        status, body = await self.call(GET, [("pipeline", pipeline)])
        assert status == 200, body
        self.lexicons.output(GET, body)
        assert isinstance(body, dict)
        swift_decode_pipeline(body)
        return body

    async def describe(self, repo: str, sha: str, source_repo: str | None = None) -> tuple[int, Any]:
        """``describeWorkflowDefinition``: (status, body), the body validated when 200."""
        params: Params = [("repo", repo), ("sha", sha)]
        if source_repo is not None:
            params.append(("sourceRepo", source_repo))
        status, body = await self.call(DESCRIBE, params)
        if status == 200:
            self.lexicons.output(DESCRIBE, body)
        return status, body

    async def open_logs(self, pipeline: str, workflows: tuple[str, ...] = ()) -> LiveLogs | LogView:
        """Dial the log subscription: LiveLogs once upgraded, else a LogView with the refusal."""
        url = f"{self.base_url.replace('http', 'ws', 1)}/xrpc/{SUBSCRIBE}"
        params: Params = [("pipeline", pipeline), *(("workflows", w) for w in workflows)]
        view = LogView()
        try:
            ws = await self.session.ws_connect(url, params=params, autoping=True, max_msg_size=2 << 20)
        except aiohttp.WSServerHandshakeError as exc:
            view.http_status = exc.status
            async with self.session.get(url, params=params) as resp:
                view.refusal = await resp.json(content_type=None)
            return view
        view.http_status = 101
        return LiveLogs(ws, view, self.lexicons)

    async def read_logs(self, pipeline: str, workflows: tuple[str, ...] = (), timeout: float = 30) -> LogView:
        """Subscribe and read to the close."""
        live = await self.open_logs(pipeline, workflows)
        if isinstance(live, LogView):
            return live
        return await live.until_closed(timeout)


# The Swift client's models (swift-tangled-mirror Sources/SwiftTangled/Models/Pipeline.swift, decoded with
# Codable): required and optional fields per type, and the trigger's variant chosen by $type.
_SWIFT_PIPELINE = ({"id", "commit", "trigger", "workflows"}, {"repo", "sourceRepo", "createdAt"})
_SWIFT_WORKFLOW = ({"id", "name", "status"}, {"startedAt", "finishedAt", "error"})
_SWIFT_TRIGGERS = {
    "sh.tangled.ci.trigger#push": ({"ref", "newSha", "oldSha"}, set()),
    "sh.tangled.ci.trigger#pullRequest": (
        {"targetBranch", "sourceSha"},
        {"sourceBranch", "sourceRepo", "pull"},
    ),
    "sh.tangled.ci.trigger#manual": ({"sha"}, {"ref", "sourceRepo", "inputs"}),
}


def _swift_fields(obj: Any, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    assert isinstance(obj, dict), f"{what}: not an object"
    missing = required - obj.keys()
    assert not missing, f"{what}: Codable fails, missing {sorted(missing)}"
    return {k: obj[k] for k in required | optional if k in obj}


def swift_decode_pipeline(obj: Any) -> dict[str, Any]:
    """The fields the Swift client decodes from a pipeline (what it ignores is dropped); AssertionError where Codable fails."""
    out = _swift_fields(obj, *_SWIFT_PIPELINE, "pipeline")
    trigger = out["trigger"]
    kind = trigger.get("$type") if isinstance(trigger, dict) else None
    assert kind in _SWIFT_TRIGGERS, f"trigger $type {kind!r} decodes as unknown"
    out["trigger"] = {"$type": kind, **_swift_fields(trigger, *_SWIFT_TRIGGERS[kind], f"trigger {kind}")}
    for name, value in out.items():
        if name not in ("trigger", "workflows"):
            assert isinstance(value, str), f"pipeline.{name} is not a string"
    assert isinstance(out["workflows"], list)
    out["workflows"] = [_swift_fields(w, *_SWIFT_WORKFLOW, "workflow") for w in out["workflows"]]
    return out
