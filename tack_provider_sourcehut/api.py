"""A thin aiohttp client for builds.sr.ht's GraphQL API and its log files (docs/sourcehut-api.md §1-§7).

One ClientSession (opened inside the running loop). Every request passes the shared
:class:`~tack_provider_kit.pacing.Pacer`; a 429 or 503 pauses everything for ``Retry-After`` (or a
backoff) and the request is tried again (nothing happened, even for a submit). Queries and cancel are
retried on other 5xx and transport errors; a submit never is: when its outcome is unknown it raises
:class:`OutcomeUnknown` so the caller can look for the job before trying again. GraphQL answers are
checked for ``errors`` on every status, because builds.sr.ht answers resolver errors with HTTP 200.
Answers are bounded in bytes; the token is only ever put in the Authorization header, and only sent to the
configured instance (see :meth:`SourcehutClient.log_request` for log URLs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tack_common import backoff
from tack_provider_kit.http import OutcomeUnknown, Reply, Tries, Unreachable
from tack_provider_kit.pacing import Pacer
from tack_provider_sourcehut import metrics


__all__ = ["Answer", "ApiError", "OutcomeUnknown", "Reply", "SourcehutClient", "Unreachable"]

MAX_THROTTLED = 8
MAX_WAIT_SECONDS = 60.0
MAX_ANSWER_BYTES = 4 << 20
LOG_CHUNK = 1 << 20
JOB_FIELDS = "id created status tags note log { fullURL } tasks { name status log { fullURL } }"
SUBMITTED_FIELDS = "id created status tags"
"""What ``submit`` asks of the new job: nothing that needs a scope beyond ``JOBS``, so that no partial
access error can stand beside a job that was created."""


class ApiError(Exception):
    """builds.sr.ht answered with an error (HTTP, or GraphQL ``errors``)."""

    def __init__(
        self, operation: str, status: int, message: str, errors: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        super().__init__(f"{operation}: HTTP {status}: {message}")
        self.operation = operation
        self.status = status
        self.message = message
        self.errors = list(errors)

    @property
    def auth(self) -> bool:
        """The token was refused (missing, malformed, unknown, revoked or expired, or the account suspended)."""
        return self.status in (401, 403) or (self.status == 400 and "Authentication error" in self.message)


@dataclass(frozen=True)
class Answer:
    """A GraphQL answer: its ``data`` (None when absent) and its ``errors`` entries."""

    data: Any
    errors: list[Mapping[str, Any]]

    def denied(self, field: str) -> bool:
        """Whether an error (a missing scope) hit a path through ``field``."""
        return any(field in (e.get("path") or []) for e in self.errors)


def error_text(errors: Sequence[Mapping[str, Any]]) -> str:
    """The messages of GraphQL ``errors`` entries, joined (bounded)."""
    text = "; ".join(str(e.get("message", "")) for e in errors) or "no error message"
    return text[:500]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds, when present and numeric."""
    try:
        return max(0.0, float(headers.get("Retry-After", "").strip()))
    except ValueError:
        return None


class SourcehutClient:
    """The builds.sr.ht calls the provider makes."""

    def __init__(
        self,
        instance: str,
        token: str,
        pacer: Pacer,
        *,
        timeout: float = 20.0,
        submit_timeout: float = 30.0,
    ) -> None:
        self.instance = instance.rstrip("/")
        self._token = token
        self.pacer = pacer
        self.timeout = timeout
        self.submit_timeout = submit_timeout
        self._session: aiohttp.ClientSession | None = None
        self._throttle_attempt = 0

    async def open(self) -> None:
        """Create the session; call inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "tack-sourcehut/0.1"},
                raise_for_status=False,
            )

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"SourcehutClient({self.instance!r})"

    def _throttled(self, reply: Reply) -> None:
        metrics.THROTTLED.inc()
        self._throttle_attempt += 1
        wait = retry_after(reply.headers)
        if wait is None:
            wait = backoff.delay(self._throttle_attempt, base=1.0, cap=MAX_WAIT_SECONDS)
        self.pacer.pause(min(wait, MAX_WAIT_SECONDS))

    async def http(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        background: bool = False,
        idempotent: bool = True,
        timeout: float | None = None,
        token: bool = True,
    ) -> Reply:
        """One HTTP call with pacing and the retries allowed for it; any status but 429/503 is returned
        (5xx only after the retries of an idempotent call). ``token``: send the Authorization header."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        if token:
            headers = {**(headers or {}), "Authorization": f"Bearer {self._token}"}
        tries = Tries("builds.sr.ht", operation, idempotent=idempotent, requests=metrics.API_REQUESTS)
        throttled = 0
        while True:
            await self.pacer.acquire(background)
            reply = await tries.send(
                self._session,
                method,
                url,
                timeout=timeout or self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
                json=body,
                headers=headers,
            )
            if reply is None:
                continue
            if reply.status in (429, 503):
                self._throttled(reply)
                throttled += 1
                if throttled > MAX_THROTTLED:
                    if not idempotent:
                        # A 503 may come from a proxy that cut a submit the API had already taken.
                        raise OutcomeUnknown(f"{operation}: HTTP {reply.status} after {throttled} tries")
                    raise ApiError(operation, reply.status, "throttled throughout")
                if reply.status == 503 and not idempotent:
                    raise OutcomeUnknown(f"{operation}: HTTP 503")
                continue
            self._throttle_attempt = 0
            if reply.status >= 500:
                if not idempotent:
                    raise OutcomeUnknown(f"{operation}: HTTP {reply.status}")
                if await tries.again():
                    continue
            return reply

    async def graphql(
        self,
        operation: str,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        background: bool = False,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> Answer:
        """One GraphQL operation; ApiError for a non-200 answer or one that is not GraphQL."""
        reply = await self.http(
            "POST",
            f"{self.instance}/query",
            operation,
            body={"query": query, "variables": dict(variables or {}), "operationName": operation},
            background=background,
            idempotent=idempotent,
            timeout=timeout,
        )
        decoded = reply.json()
        errors = decoded.get("errors") if isinstance(decoded, dict) else None
        errors = [e for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []
        if reply.status != 200:
            message = error_text(errors) if errors else reply.body[:200].decode("utf-8", "replace").strip()
            raise ApiError(operation, reply.status, message or f"HTTP {reply.status}", errors)
        if not isinstance(decoded, dict):
            raise ApiError(operation, reply.status, "the answer is not GraphQL JSON")
        return Answer(decoded.get("data"), errors)

    async def submit(
        self, manifest: str, tags: Sequence[str], note: str, secrets: bool | None, visibility: str | None
    ) -> dict[str, Any]:
        """``submit``: the new job (never retried but after a 429; OutcomeUnknown when unsure).

        A job in the answer was created, whatever ``errors`` say beside it; ApiError only when there is none.
        """
        params = ["$manifest: String!", "$tags: [String!]", "$note: String"]
        args = ["manifest: $manifest", "tags: $tags", "note: $note"]
        variables: dict[str, Any] = {"manifest": manifest, "tags": list(tags), "note": note}
        if secrets is not None:
            params.append("$secrets: Boolean")
            args.append("secrets: $secrets")
            variables["secrets"] = secrets
        if visibility is not None:
            params.append("$visibility: Visibility")
            args.append("visibility: $visibility")
            variables["visibility"] = visibility
        query = (
            f"mutation submit({', '.join(params)}) {{ submit({', '.join(args)}) {{ {SUBMITTED_FIELDS} }} }}"
        )
        answer = await self.graphql("submit", query, variables, idempotent=False, timeout=self.submit_timeout)
        job = answer.data.get("submit") if isinstance(answer.data, dict) else None
        if not isinstance(job, dict) or not isinstance(job.get("id"), int) or isinstance(job["id"], bool):
            raise ApiError("submit", 200, error_text(answer.errors), answer.errors)
        return job

    async def job(self, job_id: int, *, background: bool = True) -> Answer:
        """``job(id)`` with its tasks and log URLs (``data.job`` null: no such job for this token)."""
        query = f"query job($id: Int!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
        return await self.graphql("job", query, {"id": job_id}, background=background)

    async def jobs(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the token owner's jobs, newest first, and the next page's cursor (None at the end).

        Paced as background work: looking for lost jobs after a restart must not burst past the budget."""
        query = "query jobs($cursor: Cursor) { jobs(cursor: $cursor) { results { id created tags } cursor } }"
        answer = await self.graphql("jobs", query, {"cursor": cursor}, background=True)
        page = answer.data.get("jobs") if isinstance(answer.data, dict) else None
        if answer.errors or not isinstance(page, dict) or not isinstance(page.get("results"), list):
            raise ApiError("jobs", 200, error_text(answer.errors), answer.errors)
        next_cursor = page.get("cursor")
        return [j for j in page["results"] if isinstance(j, dict)], next_cursor if isinstance(
            next_cursor, str
        ) and next_cursor else None

    async def cancel(self, job_id: int) -> Answer:
        """``cancel(jobId)``: builds.sr.ht cancels only running jobs (an error entry otherwise)."""
        query = "mutation cancel($id: Int!) { cancel(jobId: $id) { id status } }"
        return await self.graphql("cancel", query, {"id": job_id})

    async def probe(self) -> Answer:
        """What ``check`` asks: a page of jobs with their log URLs (``errors`` show missing scopes)."""
        return await self.graphql("probe", "query probe { jobs { results { id log { fullURL } } } }")

    def log_request(self, url: str) -> tuple[str, bool]:
        """Where to read a log URL from an answer, and whether with the token.

        ``/query/log/...`` (the API's log proxy, which needs the token) is read on the configured
        instance, so the token goes nowhere else and an instance whose public origin differs from the
        address tack uses still serves its logs; any other URL (older builds.sr.ht answers with the
        runner's own file server, ``http://<runner>/logs/...``) is read as given, without the token.
        """
        ours, theirs = urlsplit(self.instance), urlsplit(url)
        if theirs.path.startswith(f"{ours.path.rstrip('/')}/query/log/"):
            return urlunsplit((ours.scheme, ours.netloc, theirs.path, theirs.query, "")), True
        return url, False

    async def log(self, url: str, offset: int) -> Reply:
        """At most LOG_CHUNK bytes of a log file from byte ``offset``: 206 (or 200: the whole file) with
        bytes, 416 (nothing past ``offset``) or 404 (no file yet) without."""
        headers = {"Range": f"bytes={offset}-{offset + LOG_CHUNK - 1}"}
        where, token = self.log_request(url)
        reply = await self.http("GET", where, "log", headers=headers, background=True, token=token)
        if reply.status in (200, 206):
            metrics.LOG_BYTES.inc(len(reply.body))
        return reply
