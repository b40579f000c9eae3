"""``FakeSourcehut``: the fake builds.sr.ht on loopback (docs/sourcehut-api.md §12)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web

from tack_sandbox._loopback import LoopbackServer
from tests.fakes.sourcehut.execute import RequestError, run
from tests.fakes.sourcehut.faults import Faults, Rule
from tests.fakes.sourcehut.gql import GqlSyntaxError, parse
from tests.fakes.sourcehut.schema import Caller, User, build_schema
from tests.fakes.sourcehut.state import DEFAULT_RUNNER, Job, Store, Submission, Task
from tests.fakes.sourcehut.triggers import Delivery, Signer, fires, payload


DEFAULT_TOKEN = "FakeSourcehutToken0123456789abcdefghijklmnopqrstuv"
"""A personal access token of user ``tack`` with ``ALL_GRANTS`` (the OAuth 2.0 token format)."""
ALL_GRANTS = frozenset({"PROFILE:RW", "JOBS:RW", "LOGS:RW", "SECRETS:RW"})
TACK_GRANTS = frozenset({"JOBS:RW", "LOGS:RO"})
"""The two scopes tack documents."""

_OAUTH2_TOKEN = re.compile(r"^[0-9a-zA-Z_+/]{33,}$")
_LEGACY_TOKEN = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Token:
    user: User
    grants: frozenset[str]
    revoked: bool = False


@dataclass
class RequestRecord:
    """One request as the fake saw it."""

    method: str
    path: str
    op: str  # first top-level field, "log", or "" (no operation)
    fields: list[str]
    status: int
    token: str | None
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobPlan:
    """How ``autorun`` moves a job, one step per tick (§4): picked up, setup, tasks in order, end."""

    pick_up: bool = True
    setup_log: str = "[#] Booting image\r\nCloning repositories\r\n"
    setup_fails: bool = False
    fail_task: str | None = None
    hang_task: str | None = None
    """This task keeps running until the test cancels or times out the job."""
    complete_at: str | None = None
    """This task runs ``complete-build``: later tasks are skipped."""
    timeout_at: str | None = None
    """The job times out while this task runs."""
    task_log: Callable[[str], str] = lambda name: f"+ ./{name}.sh\r\n{name}: ok\r\n"


def _auth_error(status: int, reason: str) -> web.Response:
    body = {"errors": [{"message": f"Authentication error: {reason}"}]}
    return web.json_response(body, status=status)


class FakeSourcehut(LoopbackServer):
    """builds.sr.ht's GraphQL endpoint and log URLs, with test controls.

    Start it with ``async with FakeSourcehut() as srht`` and point a client at ``srht.url`` with
    ``DEFAULT_TOKEN``. Jobs move only when the test says so (``pick_up``, ``start_task``,
    ``append_task_log``, ``finish_task``, ``complete_build``, ``fail_setup``, ``time_out``) or, with
    ``autorun(plan)``, on a tick. ``submissions`` and ``requests`` record what arrived; ``fail_next``,
    ``drop_next``, ``stall_next`` and ``delay_next`` inject faults; ``deliveries`` are the signed trigger
    POSTs, verifiable with ``webhook_public_key``.
    """

    def __init__(
        self,
        *,
        tokens: dict[str, Token] | None = None,
        max_complexity: int = 250,
        build_timeout: str = "4h",
        rate_limit: tuple[int, float] | None = None,
        cancel_lag: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.tokens: dict[str, Token] = (
            tokens if tokens is not None else {DEFAULT_TOKEN: Token(User("tack"), ALL_GRANTS)}
        )
        self.max_complexity = max_complexity
        self.build_timeout = build_timeout
        self.rate_limit = rate_limit
        """(requests, seconds): more requests than that per token in a sliding window answer 429."""
        self.store = Store()
        self.store.on_finish.append(self._job_finished)
        self.store.cancel_lag = cancel_lag
        self.schema = build_schema()
        self.faults = Faults()
        self.submissions: list[Submission] = []
        self.requests: list[RequestRecord] = []
        self.deliveries: list[Delivery] = []
        self.signer = Signer()
        self.trigger_timeout = 10.0
        self.log_origin: str | None = None
        """The origin of the log URLs the API answers with (builds.sr.ht's configured public origin, which
        need not be the address its clients use); None: ``url``."""
        self._recent: dict[str, list[float]] = {}
        self._plan: Callable[[Job], JobPlan | None] | None = None
        self._plans: dict[int, JobPlan] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The instance URL (``TACK_SOURCEHUT_INSTANCE``)."""
        return f"http://{self.hostname}"

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.wait_deliveries_idle()
        await super().stop()

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/query", self._query),
            web.route("HEAD", "/query/log/{job}/log", self._log),
            web.get("/query/log/{job}/log", self._log, allow_head=False),
            web.route("HEAD", "/query/log/{job}/{task}/log", self._log),
            web.get("/query/log/{job}/{task}/log", self._log, allow_head=False),
        ]

    # -- tokens and faults --------------------------------------------------------------------------------

    def add_token(self, token: str, username: str = "tack", grants: Iterable[str] = ALL_GRANTS) -> None:
        """Register a personal access token (it must look like one: ``[0-9a-zA-Z_+/]{33,}``)."""
        self.tokens[token] = Token(User(username), frozenset(grants))

    def revoke(self, token: str) -> None:
        self.tokens[token].revoked = True

    def fail_next(
        self,
        op: str = "*",
        *,
        status: int = 500,
        count: int = 1,
        retry_after: str | int | None = None,
        after_effect: bool = False,
    ) -> None:
        """The next ``count`` ``op`` requests answer ``status`` (plain text), before or after taking effect."""
        self.faults.add(
            Rule(
                op,
                "status",
                count,
                status,
                None if retry_after is None else str(retry_after),
                0.0,
                after_effect,
            )
        )

    def drop_next(self, op: str = "submit", count: int = 1) -> None:
        """The next ``count`` ``op`` requests take effect, then their connection is cut with no answer."""
        self.faults.add(Rule(op, "drop", count))

    def stall_next(self, op: str = "submit", seconds: float = 30.0, count: int = 1) -> None:
        """The next ``count`` ``op`` requests take effect, then their answer waits ``seconds``."""
        self.faults.add(Rule(op, "stall", count, seconds=seconds))

    def delay_next(self, op: str = "*", seconds: float = 1.0, count: int = 1) -> None:
        """The next ``count`` ``op`` requests wait ``seconds`` before they take effect."""
        self.faults.add(Rule(op, "delay", count, seconds=seconds))

    # -- reading what happened ----------------------------------------------------------------------------

    @property
    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        return sorted(self.store.jobs.values(), key=lambda j: j.id)

    def job(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def ops(self, op: str) -> list[RequestRecord]:
        """The requests whose operation was ``op``."""
        return [r for r in self.requests if r.op == op]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait until ``predicate()`` holds (checked after every request and job move)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

    def _poke(self) -> None:
        self._changed.set()

    # -- driving jobs -------------------------------------------------------------------------------------

    def pick_up(self, job_id: int, runner: str = DEFAULT_RUNNER, setup_log: str = "") -> Job:
        job = self.store.pick_up(job_id, runner)
        if setup_log:
            self.store.append_setup_log(job_id, setup_log)
        self._poke()
        return job

    def append_setup_log(self, job_id: int, text: str | bytes) -> None:
        self.store.append_setup_log(job_id, text)
        self._poke()

    def start_task(self, job_id: int, name: str, log: str = "") -> Task:
        task = self.store.start_task(job_id, name)
        if log:
            self.store.append_task_log(job_id, name, log)
        self._poke()
        return task

    def append_task_log(self, job_id: int, name: str, text: str | bytes) -> None:
        self.store.append_task_log(job_id, name, text)
        self._poke()

    def finish_task(self, job_id: int, name: str, *, ok: bool = True, settle: bool = True) -> Task:
        task = self.store.finish_task(job_id, name, ok=ok, settle=settle)
        self._poke()
        return task

    def complete_build(self, job_id: int, name: str) -> Job:
        job = self.store.complete_build(job_id, name)
        self._poke()
        return job

    def succeed(self, job_id: int) -> Job:
        job = self.store.succeed(job_id)
        self._poke()
        return job

    def fail_setup(self, job_id: int) -> Job:
        job = self.store.fail_setup(job_id)
        self._poke()
        return job

    def time_out(self, job_id: int) -> Job:
        job = self.store.time_out(job_id)
        self._poke()
        return job

    def runner_cancels(self, job_id: int) -> Job:
        """With ``cancel_lag``: the runner kills a job whose cancel the API took; it reads CANCELLED."""
        job = self.store.runner_cancels(job_id)
        self._poke()
        return job

    def run_job(self, job_id: int, *, fail_task: str | None = None) -> Job:
        """Pick up and run every task to the end at once (each with one log line); ``fail_task`` fails there."""
        job = self.store.get(job_id)
        if job.status in ("PENDING", "QUEUED"):
            self.pick_up(job_id, setup_log="[#] Booting image\r\n")
        for task in job.tasks:
            if job.finished:
                break
            self.start_task(job_id, task.name, log=f"{task.name}: output\r\n")
            self.finish_task(job_id, task.name, ok=task.name != fail_task)
        return job

    def autorun(self, plan: Callable[[Job], JobPlan | None] | None = None, tick: float = 0.02) -> None:
        """Move every job by its plan (``plan(job)``, default ``JobPlan()``; None leaves a job to the test)."""
        self._plan = plan or (lambda _job: JobPlan())
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(tick))

    async def _tick_loop(self, tick: float) -> None:
        while True:
            await asyncio.sleep(tick)
            for job in self.jobs:
                if not job.finished:
                    self._step(job)

    def _step(self, job: Job) -> None:
        if job.id not in self._plans:
            chosen = self._plan(job) if self._plan is not None else None
            if chosen is None:
                return
            self._plans[job.id] = chosen
        plan = self._plans[job.id]
        if job.cancelling:
            self.store.runner_cancels(job.id)
            return
        if job.status == "PENDING" and job.runner is None and not plan.pick_up:
            return
        if job.status in ("PENDING", "QUEUED"):
            self.pick_up(job.id, setup_log=plan.setup_log)
            return
        running = job.running_task()
        if running is None:
            if plan.setup_fails:
                self.append_setup_log(job.id, "Error: setup failed\r\n")
                self.fail_setup(job.id)
                return
            upcoming = next((t for t in job.tasks if t.status == "PENDING"), None)
            if upcoming is None:
                return
            self.start_task(job.id, upcoming.name, log=plan.task_log(upcoming.name))
            return
        name = running.name
        if name == plan.hang_task:
            return
        if name == plan.timeout_at:
            self.time_out(job.id)
        elif name == plan.complete_at:
            self.complete_build(job.id, name)
        else:
            self.finish_task(job.id, name, ok=name != plan.fail_task)

    # -- triggers -----------------------------------------------------------------------------------------

    @property
    def webhook_public_key(self) -> str:
        """Base64 Ed25519 public key that verifies ``X-Payload-Signature``."""
        return self.signer.public_key

    def _job_finished(self, job: Job) -> None:
        self._poke()
        for trigger in job.parsed.triggers:
            if trigger.action == "webhook" and trigger.url and fires(trigger.condition, job.status):
                body = payload(job)
                nonce, signature = self.signer.sign(body)
                delivery = Delivery(job.id, trigger.url, body, nonce, signature)
                self.deliveries.append(delivery)
                task = asyncio.get_running_loop().create_task(self._deliver(delivery))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _deliver(self, delivery: Delivery) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Payload-Nonce": delivery.nonce,
            "X-Payload-Signature": delivery.signature,
        }
        timeout = aiohttp.ClientTimeout(total=self.trigger_timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(delivery.url, data=delivery.body, headers=headers) as resp,
            ):
                await resp.content.read(2048)
                delivery.status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.error = repr(exc)
        self._poke()

    async def wait_deliveries_idle(self, timeout: float = 20.0) -> None:
        """Wait until every trigger POST has been answered or has failed."""
        async with asyncio.timeout(timeout):
            while self._background:
                await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> Token | web.Response:
        header = request.headers.get("Authorization", "")
        if not header:
            return _auth_error(
                401, "Authorization header is required. Expected 'Authorization: Bearer [token]'"
            )
        parts = header.split(" ", 1)
        if len(parts) != 2 or parts[0].lower() not in ("bearer", "internal"):
            return _auth_error(400, "Invalid Authorization header")
        if parts[0].lower() == "internal":
            return _auth_error(403, "Invalid Authorization header (encryption error)")
        value = parts[1]
        if _OAUTH2_TOKEN.match(value):
            token = self.tokens.get(value)
            if token is None or token.revoked:
                return _auth_error(403, "Invalid or expired OAuth 2.0 bearer token")
            return token
        if _LEGACY_TOKEN.match(value):
            return _auth_error(403, "Invalid or expired OAuth token")
        return _auth_error(400, "Invalid OAuth bearer token")

    def _rate_limited(self, key: str) -> web.Response | None:
        if self.rate_limit is None:
            return None
        allowed, window = self.rate_limit
        now = time.monotonic()
        recent = [t for t in self._recent.get(key, []) if now - t < window]
        if len(recent) >= allowed:
            self._recent[key] = recent
            retry = max(1, int(window - (now - recent[0]) + 0.999))
            return web.Response(status=429, text="Too Many Requests\n", headers={"Retry-After": str(retry)})
        recent.append(now)
        self._recent[key] = recent
        return None

    def _record(
        self, request: web.Request, op: str, fields: list[str], status: int, variables: Any = None
    ) -> None:
        header = request.headers.get("Authorization", "")
        token = header.split(" ", 1)[1] if " " in header else None
        self.requests.append(
            RequestRecord(
                request.method,
                request.path,
                op,
                fields,
                status,
                token,
                variables if isinstance(variables, dict) else {},
            )
        )
        self._poke()

    async def _before(self, op: str) -> web.Response | None:
        rule = self.faults.take(op, before=True)
        if rule is None:
            return None
        if rule.action == "delay":
            await asyncio.sleep(rule.seconds)
            return None
        return self._fault_response(rule)

    def _fault_response(self, rule: Rule) -> web.Response:
        headers = {} if rule.retry_after is None else {"Retry-After": rule.retry_after}
        try:
            phrase = HTTPStatus(rule.status).phrase
        except ValueError:
            phrase = "Error"
        return web.Response(status=rule.status, text=f"{phrase}\n", headers=headers)

    async def _after(self, request: web.Request, op: str, answer: web.Response) -> web.Response:
        rule = self.faults.take(op, before=False)
        if rule is None:
            return answer
        if rule.action == "stall":
            await asyncio.sleep(rule.seconds)
            return answer
        if rule.action == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return self._fault_response(rule)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        auth = self._authenticate(request)
        if isinstance(auth, web.Response):
            self._record(request, "", [], auth.status)
            return auth
        limited = self._rate_limited(request.headers["Authorization"])
        if limited is not None:
            self._record(request, "", [], limited.status)
            return limited
        if request.content_type != "application/json":
            answer = web.json_response(
                {"errors": [{"message": "transport not supported"}], "data": None}, status=400
            )
            self._record(request, "", [], 400)
            return answer
        raw = await request.read()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("json body must be an object")
            query = body.get("query")
            if not isinstance(query, str):
                raise ValueError("query must be a string")
            variables = body.get("variables") or {}
            if not isinstance(variables, dict):
                raise ValueError("variables must be an object")
            operation_name = body.get("operationName") or None
        except ValueError as exc:
            answer = web.json_response(
                {"errors": [{"message": f"json body could not be decoded: {exc}"}], "data": None}, status=400
            )
            self._record(request, "", [], 400)
            return answer
        fields = _root_fields(query, operation_name)
        op = fields[0] if fields else ""
        early = await self._before(op)
        if early is not None:
            self._record(request, op, fields, early.status, variables)
            return early
        caller = Caller(
            user=auth.user,
            grants=auth.grants,
            store=self.store,
            origin=self.log_origin or self.url,
            build_timeout=self.build_timeout,
            record=self.submissions.append,
        )
        try:
            result = run(
                self.schema, query, variables, operation_name, caller, max_complexity=self.max_complexity
            )
            answer = web.json_response(result)
        except RequestError as exc:
            answer = web.json_response({"errors": [exc.as_json()], "data": None}, status=422)
        self._poke()
        try:
            final = await self._after(request, op, answer)
        except asyncio.CancelledError:
            self._record(request, op, fields, 0, variables)
            raise
        self._record(request, op, fields, final.status, variables)
        return final

    async def _log(self, request: web.Request) -> web.StreamResponse:
        auth = self._authenticate(request)
        if isinstance(auth, web.Response):
            self._record(request, "log", [], auth.status)
            return auth
        limited = self._rate_limited(request.headers["Authorization"])
        if limited is not None:
            self._record(request, "log", [], limited.status)
            return limited
        early = await self._before("log")
        if early is not None:
            self._record(request, "log", [], early.status)
            return early
        answer = self._log_answer(request, auth)
        final = await self._after(request, "log", answer)
        self._record(request, "log", [], final.status)
        return final

    def _log_answer(self, request: web.Request, auth: Token) -> web.Response:
        try:
            job_id = int(request.match_info["job"])
        except ValueError:
            return web.Response(status=400, text="Invalid job ID\r\n")
        job = self.store.visible(auth.user.username, job_id)
        if job is None:
            return web.Response(status=404, text="Unknown build job\r\n")
        if job.runner is None:
            return web.Response(status=404, text="This build job has not been started yet\r\n")
        name = request.match_info.get("task")
        if name is None:
            data = bytes(job.setup_log)
        else:
            task = next((t for t in job.tasks if t.name == name), None)
            if task is None or not task.log_exists:
                return web.Response(status=404, text="404 page not found\n")
            data = bytes(task.log)
        return _serve_bytes(request, data)


def _serve_bytes(request: web.Request, data: bytes) -> web.Response:
    """Go's ``http.ServeFile`` for a plain-text file: single ranges, 206 and 416 (§7)."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": "text/plain; charset=utf-8"}
    size = len(data)
    spec = request.headers.get("Range", "")
    if spec.startswith("bytes=") and "," not in spec:
        first, _, last = spec.removeprefix("bytes=").strip().partition("-")
        try:
            if first == "":
                count = int(last)
                start, end = max(size - count, 0), size - 1
                if count == 0:
                    raise IndexError
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
                if start >= size or end < start:
                    raise IndexError
        except ValueError:
            start, end = 0, size - 1
            spec = ""
        except IndexError:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, text="invalid range: failed to overlap\n", headers=headers)
        if spec:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            body = data[start : end + 1]
            return web.Response(status=206, body=body, headers=headers)
    return web.Response(status=200, body=data, headers=headers)


def _root_fields(query: str, operation_name: str | None) -> list[str]:
    try:
        operations = parse(query)
    except GqlSyntaxError:
        return []
    chosen = [o for o in operations if operation_name is None or o.name == operation_name]
    return [f.name for f in chosen[0].selections] if len(chosen) == 1 or (chosen and operation_name) else []
