"""A thin aiohttp client for the Buildkite REST API v2 (docs/buildkite-api.md §1-§4).

One ClientSession (opened inside the running loop) per client. Every request
passes the shared :class:`~tack_provider_buildkite.ratelimit.RateLimiter`; a
429 pauses everything for the reset of the limit that was hit, then the
request is retried (a 429 means nothing happened, even for a create).
Idempotent calls (GET, PUT cancel) are also retried with backoff on 5xx and
connection errors. A create is never retried here: a create whose outcome is
unknown raises :class:`OutcomeUnknown` so the caller can look for the build
before trying again. The token is only ever put in the Authorization header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from tack_provider_buildkite import metrics
from tack_provider_buildkite.ratelimit import RateLimiter
from tack_provider_kit import http
from tack_provider_kit.http import OutcomeUnknown, Tries, Unreachable


__all__ = ["ApiError", "BuildkiteClient", "OutcomeUnknown", "Reply", "Unreachable"]

MAX_THROTTLED = 8
JSON = "application/json"
TEXT = "text/plain"


class ApiError(Exception):
    """Buildkite answered with an error status."""

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(f"{endpoint}: HTTP {status}: {message}")
        self.endpoint = endpoint
        self.status = status
        self.message = message

    @property
    def definitive(self) -> bool:
        """A refusal that repeating the request will not change (4xx other than 408/429)."""
        return 400 <= self.status < 500 and self.status not in (408, 429)


class Reply(http.Reply):
    """A response read whole."""

    def message(self) -> str:
        """Buildkite's ``message`` (or the start of the body)."""
        decoded = self.json()
        if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
            text: str = decoded["message"]
            errors = decoded.get("errors")
            if isinstance(errors, list) and errors:
                text += " " + json.dumps(errors, separators=(",", ":"))[:300]
            return text
        return self.body[:200].decode("utf-8", errors="replace").strip() or f"HTTP {self.status}"


def _segment(value: str) -> str:
    return quote(value, safe="")


class BuildkiteClient:
    """Buildkite REST calls used by the provider."""

    def __init__(
        self,
        api_url: str,
        token: str,
        limiter: RateLimiter,
        *,
        timeout: float = 20.0,
        create_timeout: float = 30.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.limiter = limiter
        self.timeout = timeout
        self.create_timeout = create_timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the session; call inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}", "User-Agent": "tack-buildkite/0.1"},
                raise_for_status=False,
            )

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"BuildkiteClient({self.api_url!r})"

    async def request(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        background: bool = False,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> Reply:
        """One call, with rate limiting and the retries allowed for it; any status below 500 is returned."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        tries = Tries("Buildkite", endpoint, idempotent=idempotent, requests=metrics.API_REQUESTS)
        throttled = 0
        while True:
            await self.limiter.acquire(background)
            sent = await tries.send(
                self._session,
                method,
                self.api_url + path,
                timeout=timeout or self.timeout,
                params=params,
                json=body,
                headers=headers,
            )
            if sent is None:
                continue
            reply = Reply(sent.status, sent.headers, sent.body)
            self.limiter.observe(reply.headers)
            if reply.status == 429:
                decoded = reply.json()
                scope = decoded.get("scope") if isinstance(decoded, dict) else None
                metrics.RATE_LIMITED.labels(scope if scope in ("rest", "rest_user") else "unknown").inc()
                self.limiter.throttled(reply.headers, reply.body)
                throttled += 1
                if throttled > MAX_THROTTLED:
                    raise ApiError(endpoint, 429, reply.message())
                continue
            if reply.status >= 500:
                if not idempotent:
                    raise OutcomeUnknown(f"{endpoint}: HTTP {reply.status}: {reply.message()}")
                if not await tries.again():
                    raise ApiError(endpoint, reply.status, reply.message())
                continue
            return reply

    @staticmethod
    def _pipeline(org: str, pipeline: str) -> str:
        return f"/v2/organizations/{_segment(org)}/pipelines/{_segment(pipeline)}"

    def _build(self, org: str, pipeline: str, number: int) -> str:
        return f"{self._pipeline(org, pipeline)}/builds/{int(number)}"

    @staticmethod
    def _json(reply: Reply, endpoint: str) -> Any:
        if reply.status != 200:
            raise ApiError(endpoint, reply.status, reply.message())
        decoded = reply.json()
        if decoded is None:
            raise ApiError(endpoint, reply.status, "answer is not JSON")
        return decoded

    async def access_token(self) -> Reply:
        """``GET /v2/access-token``: is the token valid, and with which scopes."""
        return await self.request("GET", "/v2/access-token", "access_token")

    async def organization(self, org: str) -> Reply:
        """``GET /v2/organizations/{org}``."""
        return await self.request("GET", f"/v2/organizations/{_segment(org)}", "organization")

    async def create_build(self, org: str, pipeline: str, body: Mapping[str, Any]) -> Reply:
        """``POST .../builds``; never retried except after a 429 (OutcomeUnknown when unsure)."""
        return await self.request(
            "POST",
            f"{self._pipeline(org, pipeline)}/builds",
            "create_build",
            body=dict(body),
            idempotent=False,
            timeout=self.create_timeout,
        )

    async def get_build(
        self, org: str, pipeline: str, number: int, *, background: bool = True
    ) -> dict[str, Any]:
        """The build with its jobs (without the pipeline object)."""
        reply = await self.request(
            "GET",
            self._build(org, pipeline, number),
            "get_build",
            params={"exclude_pipeline": "true"},
            background=background,
        )
        build = self._json(reply, "get_build")
        if not isinstance(build, dict):
            raise ApiError("get_build", reply.status, "answer is not a build")
        return build

    async def find_builds(
        self, org: str, pipeline: str, meta_data: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Builds of the pipeline whose meta-data has every given pair, newest first."""
        params = {f"meta_data[{k}]": v for k, v in meta_data.items()}
        params.update(per_page="100", exclude_jobs="true", exclude_pipeline="true")
        reply = await self.request(
            "GET", f"{self._pipeline(org, pipeline)}/builds", "list_builds", params=params
        )
        builds = self._json(reply, "list_builds")
        if not isinstance(builds, list):
            raise ApiError("list_builds", reply.status, "answer is not a list")
        return [
            b
            for b in builds
            if isinstance(b, dict)
            and isinstance(b.get("meta_data"), dict)
            and all(b["meta_data"].get(k) == v for k, v in meta_data.items())
        ]

    async def cancel_build(self, org: str, pipeline: str, number: int) -> Reply:
        """``PUT .../cancel`` (idempotent; 422 when the build already finished)."""
        return await self.request("PUT", f"{self._build(org, pipeline, number)}/cancel", "cancel_build")

    async def job_log(
        self, org: str, pipeline: str, number: int, job_id: str, suffix: int | None = None
    ) -> Reply:
        """The raw job log (``Accept: text/plain``); ``suffix`` asks for only its last bytes (206)."""
        headers = {"Accept": TEXT}
        if suffix is not None:
            headers["Range"] = f"bytes=-{max(1, suffix)}"
        return await self.request(
            "GET",
            f"{self._build(org, pipeline, number)}/jobs/{_segment(job_id)}/log",
            "job_log",
            headers=headers,
            background=True,
        )
