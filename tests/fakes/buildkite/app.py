"""HTTP routes of the fake: the REST API v2 and job logs (docs/buildkite-api.md §10.2, §10.3).

A middleware applies what every API response shares: gateway-error
injection, Bearer auth (401), the org and per-user rate limits (429) with
their headers on every response, ``Access-Control-Expose-Headers: Link``,
JSON error bodies, and the request log. ``/__fake/...`` (control.py) is outside all of it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from tests.fakes.buildkite.config import JsonObject, TokenInfo
from tests.fakes.buildkite.listing import filter_builds, link_header, paginate
from tests.fakes.buildkite.logs import render_html
from tests.fakes.buildkite.ratelimit import Verdict
from tests.fakes.buildkite.state import ApiError, Build, Job


if TYPE_CHECKING:
    from tests.fakes.buildkite.fake import FakeBuildkite

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUTH_REQUIRED = (
    "Authentication required. Please supply a valid API Access Token: "
    "https://buildkite.com/docs/apis/rest-api#authentication"
)
PUBLIC_PATHS = frozenset({"/", "/v2/meta"})
RECORDED_HEADERS = ("Accept", "Range", "Content-Type", "User-Agent", "If-None-Match")
_CREATE_PATH = re.compile(r"/v2/organizations/[^/]+/pipelines/[^/]+/builds/?")
_SUFFIX_RANGE = re.compile(r"bytes=-(\d+)")
_ORG = "/v2/organizations/{org}"
_BUILD = _ORG + "/pipelines/{pipeline}/builds/{number}"
_JOB = _BUILD + "/jobs/{job_id}"


@dataclass(frozen=True)
class RequestRecord:
    """One API request the fake answered (``/__fake`` control calls are not recorded)."""

    method: str
    path: str
    query: str
    status: int
    headers: dict[str, str]
    token: str | None
    at: float

    def as_json(self) -> JsonObject:
        """A JSON summary."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "headers": self.headers,
            "at": self.at,
        }


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """``application/json; charset=utf-8``, compact."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(
        status=status, body=raw, content_type="application/json", charset="utf-8", headers=headers
    )


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes")


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _accepts(request: web.Request) -> str:
    """The first of ``application/json``, ``text/plain`` or ``text/html`` the client accepts (JSON if none)."""
    for part in request.headers.get("Accept", "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("application/json", "text/plain", "text/html"):
            return media
    return "application/json"


class Api:
    """The REST handlers, bound to one fake."""

    def __init__(self, fake: FakeBuildkite) -> None:
        self.fake = fake
        self.world = fake.world
        self.render = fake.renderer

    # the middleware

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Everything an API response goes through (see the module docstring)."""
        if request.path.startswith("/__fake"):
            return await handler(request)
        response = await self._serve(request, handler)
        token = _bearer(request)
        self.fake.requests.append(
            RequestRecord(
                request.method,
                request.path,
                request.query_string,
                response.status,
                {h: request.headers[h] for h in RECORDED_HEADERS if h in request.headers},
                token,
                self.fake.clock(),
            )
        )
        return response

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        knobs = self.fake.knobs
        if request.method == "POST" and _CREATE_PATH.fullmatch(request.path):
            await self._count_create(request)
        gateway_error = self._take_fault(request, "fail")
        if gateway_error and not knobs.fail_after_effect:
            return self._gateway_error()
        if request.path in PUBLIC_PATHS:
            return await self._guarded(request, handler)
        info = self._token(request)
        verdict = self.fake.limiter.hit(
            None if info is None else info.user.id,
            knobs.rate_limit_org,
            knobs.rate_limit_user,
            knobs.rate_limit_window_s,
        )
        response: web.StreamResponse
        if info is None:
            response = json_response(401, {"message": AUTH_REQUIRED})
        else:
            if self._take_fault(request, "429"):
                verdict = verdict.forced(knobs.force_429_scope)
            over = verdict.exceeded()
            response = json_response(429, over.body()) if over else await self._guarded(request, handler)
        if gateway_error:
            return self._gateway_error()
        self._decorate(response, verdict)
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.status, exc.body)
        except web.HTTPException as exc:
            message = "Not Found" if exc.status == 404 else exc.reason
            return json_response(exc.status, {"message": message})

    @staticmethod
    def _decorate(response: web.StreamResponse, verdict: Verdict) -> None:
        response.headers.update(verdict.headers())
        response.headers["Access-Control-Expose-Headers"] = "Link"

    def _gateway_error(self) -> web.Response:
        status = self.fake.knobs.fail_status
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        text = f"<html><body><h1>{status} {phrase}</h1></body></html>\n"
        return web.Response(status=status, text=text, content_type="text/html")

    def _take_fault(self, request: web.Request, kind: str) -> bool:
        knobs = self.fake.knobs
        left = knobs.fail_next_n if kind == "fail" else knobs.force_429_next_n
        if left <= 0:
            return False
        if knobs.fault_match and not re.search(knobs.fault_match, f"{request.method} {request.path}"):
            return False
        if kind == "fail":
            knobs.fail_next_n -= 1
        else:
            knobs.force_429_next_n -= 1
        return True

    async def _count_create(self, request: web.Request) -> None:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return
        if isinstance(body, dict) and isinstance(body.get("meta_data"), dict):
            for key, value in body["meta_data"].items():
                self.fake.create_calls[
                    (str(key), value if isinstance(value, str) else json.dumps(value))
                ] += 1

    def _token(self, request: web.Request) -> TokenInfo | None:
        token = _bearer(request)
        return None if token is None else self.fake.tokens.get(token)

    # lookups (each 404 is Buildkite's wording)

    def _need(self, request: web.Request, scope: str) -> TokenInfo:
        info = self._token(request)
        assert info is not None  # the middleware answered 401 otherwise
        if scope not in info.scopes:
            raise ApiError(403, f"Your access token doesn't have the {scope} scope")
        return info

    def _sees_org(self, info: TokenInfo, org: str) -> bool:
        return org == self.world.org and (info.orgs is None or org in info.orgs)

    def _pipeline_slug(self, request: web.Request, info: TokenInfo) -> str:
        org, slug = request.match_info["org"], request.match_info["pipeline"]
        visible = info.pipelines is None or slug in info.pipelines
        if not self._sees_org(info, org) or slug not in self.world.pipelines or not visible:
            raise ApiError(404, "No pipeline found")
        return slug

    def _build(self, request: web.Request, info: TokenInfo) -> Build:
        slug = self._pipeline_slug(request, info)
        number = request.match_info["number"]
        build = self.world.find(slug, int(number)) if number.isdigit() else None
        if build is None:
            raise ApiError(404, "No build found")
        return build

    def _job(self, request: web.Request, info: TokenInfo) -> tuple[Build, Job]:
        if "number" in request.match_info:
            build = self._build(request, info)
            candidates = [(build, job) for job in build.jobs]
        else:
            if not self._sees_org(info, request.match_info["org"]):
                raise ApiError(404, "No job found")
            candidates = [
                (b, j)
                for b in self.world.builds
                if info.pipelines is None or b.pipeline in info.pipelines
                for j in b.jobs
            ]
        for build, job in candidates:
            if job.id == request.match_info["job_id"]:
                return build, job
        raise ApiError(404, "No job found")

    # endpoints

    async def root(self, request: web.Request) -> web.Response:
        """``GET /``."""
        return json_response(200, {"message": "\U0001f6e0", "timestamp": int(self.fake.clock())})

    async def meta(self, request: web.Request) -> web.Response:
        """``GET /v2/meta``: the webhook source IPs."""
        return json_response(200, {"webhook_ips": ["127.0.0.1/32"]})

    async def access_token(self, request: web.Request) -> web.Response:
        """``GET /v2/access-token``: no scope needed."""
        info = self._token(request)
        assert info is not None
        return json_response(
            200,
            {
                "uuid": info.uuid,
                "scopes": list(info.scopes),
                "description": info.description,
                "created_at": "2026-01-01 00:00:00 UTC",
                "expires_at": None,
                "user": {"name": info.user.name, "email": info.user.email},
            },
        )

    async def organization(self, request: web.Request) -> web.Response:
        """``GET /v2/organizations/{org}``."""
        info = self._token(request)
        assert info is not None
        if self.fake.knobs.org_requires_scope:
            self._need(request, "read_organizations")
        if not self._sees_org(info, request.match_info["org"]):
            raise ApiError(404, "No organization found")
        return json_response(200, self.render.organization())

    async def list_builds(self, request: web.Request) -> web.Response:
        """The three list endpoints: all, per org, per pipeline."""
        info = self._need(request, "read_builds")
        builds = [b for b in self.world.builds if info.pipelines is None or b.pipeline in info.pipelines]
        if "pipeline" in request.match_info:
            slug = self._pipeline_slug(request, info)
            builds = [b for b in builds if b.pipeline == slug]
        elif "org" in request.match_info and not self._sees_org(info, request.match_info["org"]):
            raise ApiError(404, "No organization found")
        elif not self._sees_org(info, self.world.org):
            builds = []
        page = paginate(filter_builds(builds, request.query), request.query, self.fake.knobs.max_list_page)
        body = [self._build_json(b, request.query) for b in page.items]
        base = URL(self.fake.url).with_path(request.path).with_query(list(request.query.items()))
        link = link_header(base, page)
        return json_response(200, body, {"Link": link} if link else None)

    def _build_json(self, build: Build, query: Any, *, counts: bool = False) -> JsonObject:
        states = [*query.getall("job_states[]", []), *query.getall("job_states", [])]
        return self.render.build(
            build,
            jobs=not _truthy(query.get("exclude_jobs")),
            pipeline=not _truthy(query.get("exclude_pipeline")),
            retried=_truthy(query.get("include_retried_jobs")),
            state_counts=counts,
            job_states=frozenset(states) if states else None,
        )

    async def get_pipeline(self, request: web.Request) -> web.Response:
        """``GET .../pipelines/{pipeline}``: the Pipeline with its steps."""
        slug = self._pipeline_slug(request, self._need(request, "read_pipelines"))
        return json_response(200, self.render.pipeline(self.world.pipelines[slug], steps=True))

    async def get_build(self, request: web.Request) -> web.Response:
        """``GET .../builds/{number}``."""
        build = self._build(request, self._need(request, "read_builds"))
        return json_response(200, self._build_json(build, request.query, counts=True))

    async def create_build(self, request: web.Request) -> web.Response:
        """``POST .../builds``: 201 with the build; webhooks queued; optional slow answer."""
        info = self._need(request, "write_builds")
        slug = self._pipeline_slug(request, info)
        if request.content_type != "application/json":
            raise ApiError(415, "Request bodies must be JSON (Content-Type: application/json)")
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(422, "Problems parsing JSON") from None
        build, events = self.world.create_build(slug, info.user, body)
        build.request_raw = raw
        response = json_response(201, self.render.build(build))
        self.fake.emit(events)
        self.fake.created(build)
        if self.fake.knobs.create_delay_s > 0:
            await asyncio.sleep(self.fake.knobs.create_delay_s)
        return response

    async def cancel_build(self, request: web.Request) -> web.Response:
        """``PUT .../cancel``: 200 with the build as it is now (possibly ``canceling``)."""
        build = self._build(request, self._need(request, "write_builds"))
        self.fake.cancel(build)
        return json_response(200, self.render.build(build))

    async def rebuild_build(self, request: web.Request) -> web.Response:
        """``PUT .../rebuild``: 200 with the new build."""
        info = self._need(request, "write_builds")
        build = self._build(request, info)
        new, events = self.world.rebuild(build, info.user)
        self.fake.emit(events)
        self.fake.created(new)
        return json_response(200, self.render.build(new))

    async def get_job(self, request: web.Request) -> web.Response:
        """``GET .../jobs/{id}`` (build-scoped or org-scoped)."""
        build, job = self._job(request, self._need(request, "read_builds"))
        return json_response(200, self.render.job(build, job))

    async def retry_job(self, request: web.Request) -> web.Response:
        """``PUT .../jobs/{id}/retry``: 200 with the new job."""
        build, job = self._job(request, self._need(request, "write_builds"))
        new = self.fake.retry_job(build, job.id)
        return json_response(200, self.render.job(build, new))

    async def job_env(self, request: web.Request) -> web.Response:
        """``GET .../jobs/{id}/env``."""
        build, job = self._job(request, self._need(request, "read_job_env"))
        env = {
            "BUILDKITE": "true",
            "CI": "true",
            "BUILDKITE_ORGANIZATION_SLUG": self.world.org,
            "BUILDKITE_PIPELINE_SLUG": build.pipeline,
            "BUILDKITE_BUILD_ID": build.id,
            "BUILDKITE_BUILD_NUMBER": str(build.number),
            "BUILDKITE_BRANCH": build.branch,
            "BUILDKITE_COMMIT": build.commit,
            "BUILDKITE_MESSAGE": build.message or "",
            "BUILDKITE_JOB_ID": job.id,
            "BUILDKITE_STEP_KEY": job.step_key or "",
            **{str(k): str(v) for k, v in build.env.items()},
        }
        return json_response(200, {"env": env})

    async def get_log(self, request: web.Request) -> web.Response:
        """``GET .../log`` (JSON), ``log.txt``/``Accept: text/plain`` (raw), ``log.html``; suffix ranges."""
        build, job = self._job(request, self._need(request, "read_build_logs"))
        suffix = request.match_info.get("ext", "")
        media = {".txt": "text/plain", ".html": "text/html"}.get(suffix) or _accepts(request)
        data = self._log_bytes(job)
        if "Range" in request.headers:
            return self._ranged(request, data)
        if media == "text/plain":
            return web.Response(
                body=data, content_type="text/plain", charset="utf-8", headers={"Accept-Ranges": "bytes"}
            )
        if media == "text/html":
            return web.Response(text=render_html(data), content_type="text/html")
        body = {
            "url": self.render.job_url(build, job) + "/log",
            "content": data.decode("utf-8", errors="replace"),
            "size": len(data),
            "header_times": [],
        }
        return json_response(200, body)

    async def head_log(self, request: web.Request) -> web.Response:
        """``HEAD .../log``: ``Content-Length`` of the raw log and ``Accept-Ranges: bytes``."""
        _, job = self._job(request, self._need(request, "read_build_logs"))
        data = self._log_bytes(job)
        headers = {"Content-Length": str(len(data)), "Accept-Ranges": "bytes", "Content-Type": "text/plain"}
        return web.Response(status=200, headers=headers)

    async def delete_log(self, request: web.Request) -> web.Response:
        """``DELETE .../log``: 204."""
        _, job = self._job(request, self._need(request, "write_build_logs"))
        job.log.clear()
        return web.Response(status=204)

    def _log_bytes(self, job: Job) -> bytes:
        if job.type != "script" or (job.started_at is None and self.fake.knobs.log_absent_mode == "404"):
            raise ApiError(404, "No log found")
        return bytes(job.log.data)

    def _ranged(self, request: web.Request, data: bytes) -> web.Response:
        if "text/plain" not in request.headers.get("Accept", "").lower():
            raise ApiError(400, "Range requests are only supported with Accept: text/plain")
        match = _SUFFIX_RANGE.fullmatch(request.headers["Range"].strip())
        if match is None or int(match.group(1)) == 0:
            raise ApiError(400, "Only suffix byte ranges (bytes=-N) are supported")
        total = len(data)
        if total == 0:
            raise ApiError(416, "The log is empty")
        start = total - min(int(match.group(1)), total)
        headers = {"Content-Range": f"bytes {start}-{total - 1}/{total}", "Accept-Ranges": "bytes"}
        return web.Response(status=206, body=data[start:], content_type="text/plain", headers=headers)

    def routes(self) -> list[web.RouteDef]:
        """Every REST route."""
        routes = [
            web.get("/", self.root),
            web.get("/v2/meta", self.meta),
            web.get("/v2/access-token", self.access_token),
            web.get(_ORG, self.organization),
            web.get(_ORG + "/pipelines/{pipeline}", self.get_pipeline),
            web.get("/v2/builds", self.list_builds),
            web.get(_ORG + "/builds", self.list_builds),
            web.get(_ORG + "/pipelines/{pipeline}/builds", self.list_builds),
            web.post(_ORG + "/pipelines/{pipeline}/builds", self.create_build),
            web.get(_BUILD, self.get_build),
            web.put(_BUILD + "/cancel", self.cancel_build),
            web.put(_BUILD + "/rebuild", self.rebuild_build),
            web.get(_JOB, self.get_job),
            web.get(_ORG + "/jobs/{job_id}", self.get_job),
            web.put(_JOB + "/retry", self.retry_job),
            web.get(_JOB + "/env", self.job_env),
        ]
        for job_path in (_JOB, _ORG + "/jobs/{job_id}"):
            routes += [
                web.get(job_path + "/log{ext:(?:\\.txt|\\.html)?}", self.get_log, allow_head=False),
                web.head(job_path + "/log", self.head_log),
                web.head(job_path + "/log.txt", self.head_log),
                web.delete(job_path + "/log", self.delete_log),
            ]
        return routes


def build_app(fake: FakeBuildkite) -> web.Application:
    """The aiohttp application: REST routes, the control API and the shared middleware."""
    from tests.fakes.buildkite.control import Control

    api = Api(fake)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await api.serve(request, handler)

    app = web.Application(middlewares=[middleware])
    app.add_routes(api.routes())
    app.add_routes(Control(fake).routes())
    return app
