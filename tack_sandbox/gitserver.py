"""A knot's git face: bare repositories served over smart HTTP at ``/<repoDid>``, on loopback.

Requests go through ``git http-backend`` as CGI, as a knot serves them: ``info/refs`` and
``git-upload-pack`` only (pushes over HTTP are refused, like the Go knot's "Pushes are only supported
over SSH."), the client's ``Git-Protocol`` header passed on (protocol v2), gzip request bodies
inflated (by aiohttp, before they reach the CGI), and ``uploadpack.allowFilter`` on so partial fetches work. Bodies stream
both ways.

Test knobs: ``refuse_status`` answers every request with that status; ``redirect_to`` answers with a
302 to that base URL; ``stall_after_bytes`` stops an upload-pack response after that many body bytes
(the connection stays open, silent); ``response_delay`` holds each upload-pack response. Every
request is recorded (``requests``), with the bytes sent, and ``max_concurrent_fetches`` tells how many
upload-pack requests one repository ever had at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tack_sandbox._loopback import LoopbackServer


log = logging.getLogger(__name__)

_DID = re.compile(r"did:[a-z]+:[A-Za-z0-9._:%-]{1,512}")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CHUNK = 64 << 10


@dataclass
class RequestRecord:
    """One request the server answered."""

    method: str
    repo: str
    service: str  # "info/refs", "git-upload-pack", ...
    status: int
    bytes_sent: int = 0


class GitServer(LoopbackServer):
    """Bare repositories under ``root`` (one directory per repo DID) served by ``git http-backend``."""

    client_max_size = 0  # pushes stream their packs through

    def __init__(
        self, root: Path, *, host: str = "127.0.0.1", port: int = 0, allow_filter: bool = True
    ) -> None:
        self.root = root
        self.allow_filter = allow_filter
        self.refuse_status: int | None = None
        self.redirect_to: str | None = None
        self.stall_after_bytes: int | None = None
        self.response_delay = 0.0
        self.requests: list[RequestRecord] = []
        self.max_concurrent_fetches: Counter[str] = Counter()
        self._active: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._reaping: set[asyncio.Task[None]] = set()
        super().__init__(host=host, port=port)

    def _routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/{repo}/{service:.+}", self._handle)]

    async def start(self) -> None:
        """Listen on loopback (an ephemeral port unless one was given)."""
        self.root.mkdir(parents=True, exist_ok=True)
        await super().start()
        self._stop.clear()

    def routes(self) -> list[web.RouteDef]:
        """The git routes, for another loopback server to serve them (a simulated knot's one address)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return [web.route("*", "/{repo:did:[^/]+}/{service:.+}", self._handle)]

    async def stop(self) -> None:
        """Stop listening; stalled responses end."""
        self._stop.set()
        await super().stop()
        await asyncio.gather(*self._reaping, return_exceptions=True)

    def url(self, repo_did: str) -> str:
        """The clone URL of a repository: ``http://host:port/<repoDid>``."""
        return f"http://{self.hostname}/{repo_did}"

    def repo_path(self, repo_did: str) -> Path:
        """Where the bare repository of ``repo_did`` lives."""
        if not _DID.fullmatch(repo_did):
            raise ValueError(f"not a repo DID: {repo_did!r}")
        return self.root / repo_did

    def count(self, service: str, method: str | None = None) -> int:
        """How many requests for ``service`` (e.g. ``git-upload-pack``) were answered."""
        return sum(1 for r in self.requests if r.service == service and method in (None, r.method))

    @property
    def bytes_sent(self) -> int:
        """Response body bytes sent so far, over all requests."""
        return sum(r.bytes_sent for r in self.requests)

    def reset_stats(self) -> None:
        """Forget recorded requests."""
        self.requests.clear()
        self.max_concurrent_fetches.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        repo = request.match_info["repo"]
        service = request.match_info["service"]
        record = RequestRecord(request.method, repo, service, 200)
        self.requests.append(record)
        if self.refuse_status is not None:
            record.status = self.refuse_status
            return web.Response(status=self.refuse_status, text="refused by test knob\n")
        if self.redirect_to is not None:
            record.status = 302
            raise web.HTTPFound(f"{self.redirect_to.rstrip('/')}/{repo}/{service}?{request.query_string}")
        allowed = (request.method == "GET" and service == "info/refs") or (
            request.method == "POST" and service == "git-upload-pack"
        )
        if "receive-pack" in service or request.query.get("service") == "git-receive-pack":
            record.status = 403
            return web.Response(status=403, text="Pushes are only supported over SSH.\n")
        if not allowed or not _DID.fullmatch(repo) or not (self.root / repo).is_dir():
            record.status = 404
            return web.Response(status=404, text="Repository not found.\n")
        fetching = service == "git-upload-pack"
        if fetching:
            self._active[repo] += 1
            self.max_concurrent_fetches[repo] = max(self.max_concurrent_fetches[repo], self._active[repo])
        try:
            return await self._cgi(request, repo, service, record, stall=fetching)
        finally:
            if fetching:
                self._active[repo] -= 1

    def _cgi_env(self, request: web.Request, repo: str, service: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo}/{service}",
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_ADDR": request.remote or "",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
        }
        # aiohttp inflates gzip request bodies itself: the CGI gets the plain body, read to EOF.
        if request.content_length is not None and "Content-Encoding" not in request.headers:
            env["CONTENT_LENGTH"] = str(request.content_length)
        if "Git-Protocol" in request.headers:
            env["HTTP_GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        config = [
            ("uploadpack.allowFilter", "true" if self.allow_filter else "false"),
            ("http.receivepack", "false"),
        ]
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    async def _cgi(
        self, request: web.Request, repo: str, service: str, record: RequestRecord, *, stall: bool
    ) -> web.StreamResponse:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._cgi_env(request, repo, service),
            start_new_session=True,  # http-backend runs upload-pack: kill them together
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = asyncio.create_task(_feed(request, proc.stdin))
        errors = asyncio.create_task(proc.stderr.read())
        try:
            status, headers, body = await _read_cgi_headers(proc.stdout)
            record.status = status
            if stall and self.response_delay:
                await asyncio.sleep(self.response_delay)
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            try:
                await self._stream(request, response, body, proc.stdout, record, stall)
                await response.write_eof()
            except ConnectionError:
                pass  # the client went away (or a stall ended): nothing more to send
            return response
        finally:
            feeder.cancel()
            # Shielded: a handler cancelled when the server stops still reaps its CGI; stop() waits for it.
            reaping = asyncio.create_task(_reap(proc, errors, f"{repo} {service}"))
            self._reaping.add(reaping)
            reaping.add_done_callback(self._reaping.discard)
            await asyncio.shield(reaping)

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        first: bytes,
        stdout: asyncio.StreamReader,
        record: RequestRecord,
        stall: bool,
    ) -> None:
        chunk = first or await stdout.read(_CHUNK)
        while chunk:
            limit = self.stall_after_bytes if stall else None
            if limit is not None and record.bytes_sent + len(chunk) > limit:
                chunk = chunk[: max(0, limit - record.bytes_sent)]
                if chunk:
                    await response.write(chunk)
                    record.bytes_sent += len(chunk)
                # Stall: keep the connection open and silent until the client gives up.
                while not self._stop.is_set() and request.transport is not None:
                    if request.transport.is_closing():
                        break
                    await asyncio.sleep(0.05)
                raise ConnectionResetError("stalled by test knob")
            await response.write(chunk)
            record.bytes_sent += len(chunk)
            chunk = await stdout.read(_CHUNK)


async def _reap(proc: asyncio.subprocess.Process, errors: asyncio.Task[bytes], what: str) -> None:
    """Kill the CGI if it still runs, drain its output so its pipes close, wait for it, log its errors.

    The whole process group goes (upload-pack too, which holds the pipes), with os.killpg rather than
    proc.kill: Popen.kill polls first, and reaping the child there makes asyncio's watcher report
    "Unknown child process". Draining comes before waiting: on Python 3.11 ``wait()`` returns only
    once every pipe is closed, and a pipe paused with unread data never closes.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.stdout is not None
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(5):
            while await proc.stdout.read(_CHUNK):
                pass
            stderr = await errors
            await proc.wait()
            if proc.returncode not in (0, -9) and stderr:
                log.warning("git http-backend for %s: %s", what, stderr.decode(errors="replace")[:500])


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    """Copy the request body to the CGI's stdin, then close it (http-backend reads to EOF without a length)."""
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (ConnectionError, BrokenPipeError):
        pass
    finally:
        stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The CGI response's status and headers, and whatever body bytes came with them."""
    buffer = b""
    while not (m := _HEADER_END.search(buffer)):
        chunk = await stdout.read(_CHUNK)
        if not chunk:
            raise web.HTTPBadGateway(text="git http-backend ended before its headers\n")
        buffer += chunk
        if len(buffer) > 64 << 10:
            raise web.HTTPBadGateway(text="git http-backend headers too long\n")
    status = 200
    headers: dict[str, str] = {}
    for line in buffer[: m.start()].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name.strip()] = value.strip()
    return status, headers, buffer[m.end() :]
