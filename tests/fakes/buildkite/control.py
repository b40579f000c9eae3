"""The fake-only control API under ``/__fake`` (docs/buildkite-api.md §10.4), for tests in other processes.

No auth and no rate limits. Builds are addressed by UUID or by number when
that is unique. Errors: 404 for unknown builds or jobs, 400 for bad input,
409 when the state rules refuse, 422 when the Buildkite API would.

| Route | Body | Effect |
| --- | --- | --- |
| ``GET /__fake/state`` | | knobs, targets, builds (every job attempt) with create bodies |
| ``POST /__fake/builds/{build}/advance`` | ``{job, to, exit_status, log_append}`` | move a job |
| ``POST /__fake/builds/{build}/scenario`` | ``{scenario, tick_s}`` | play a scenario in the background (202) |
| ``POST /__fake/builds/{build}/cancel`` | | cancel as the REST API does |
| ``POST /__fake/builds/{build}/finish_cancel`` | | stop the ``canceling`` jobs now |
| ``POST /__fake/builds/{build}/retry`` | ``{job}`` | retry a failed job |
| ``POST /__fake/builds/{build}/jobs`` | ``{steps: [...]}`` | add jobs (pipeline upload) |
| ``GET /__fake/builds/{build}/jobs/{job}/log`` | | raw log bytes |
| ``GET``/``POST /__fake/knobs`` | ``{name: value}`` | read or change knobs |
| ``GET``/``POST /__fake/webhooks`` | ``{url, token, token_mode, events}`` | targets with their last 20 deliveries / add one |
| ``GET /__fake/requests`` | | the API request log |
| ``GET /__fake/create_calls`` | | create requests per meta-data key and value |
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast, get_args

from aiohttp import web

from tests.fakes.buildkite.app import json_response
from tests.fakes.buildkite.config import JsonObject, Scenario
from tests.fakes.buildkite.state import ApiError, Build, StateError


if TYPE_CHECKING:
    from tests.fakes.buildkite.fake import FakeBuildkite


ControlHandler = Callable[[web.Request], Awaitable[web.Response]]


def _guard(handler: ControlHandler) -> ControlHandler:
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.status, exc.body)
        except KeyError as exc:
            return json_response(404, {"message": str(exc.args[0]) if exc.args else "not found"})
        except StateError as exc:
            return json_response(409, {"message": str(exc)})
        except ValueError as exc:
            return json_response(400, {"message": str(exc)})

    return guarded


async def _body(request: web.Request) -> JsonObject:
    raw = await request.read()
    if not raw:
        return {}
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _optional_str(body: JsonObject, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


class Control:
    """Handlers of ``/__fake``."""

    def __init__(self, fake: FakeBuildkite) -> None:
        self.fake = fake

    def _build(self, request: web.Request) -> Build:
        return self.fake.build(request.match_info["build"])

    def _build_json(self, build: Build) -> JsonObject:
        return {
            "build": self.fake.render_build(build),
            "request_body": build.request_body,
            "log_sizes": {job.id: job.log.size for job in build.jobs},
        }

    async def state(self, request: web.Request) -> web.Response:
        """Everything at once."""
        return json_response(
            200,
            {
                "knobs": self.fake.knobs.as_json(),
                "webhook_targets": [t.as_json() for t in self.fake.webhook_targets],
                "builds": [self._build_json(b) for b in self.fake.builds],
            },
        )

    async def advance(self, request: web.Request) -> web.Response:
        """Move a job: ``{"job", "to", "exit_status", "log_append"}``."""
        body = await _body(request)
        exit_status = body.get("exit_status")
        if exit_status is not None and (isinstance(exit_status, bool) or not isinstance(exit_status, int)):
            raise ValueError("exit_status must be an integer")
        build = self.fake.advance(
            self._build(request),
            _optional_str(body, "job"),
            _optional_str(body, "to"),
            exit_status=exit_status,
            log_append=_optional_str(body, "log_append"),
        )
        return json_response(200, self._build_json(build))

    async def scenario(self, request: web.Request) -> web.Response:
        """Start a scenario in the background: ``{"scenario", "tick_s"}``."""
        body = await _body(request)
        scenario = body.get("scenario")
        if scenario not in get_args(Scenario):
            raise ValueError(f"scenario must be one of {get_args(Scenario)}")
        tick = body.get("tick_s", 0.05)
        if isinstance(tick, bool) or not isinstance(tick, int | float):
            raise ValueError("tick_s must be a number")
        build = self._build(request)
        self.fake.start_scenario(build, cast(Scenario, scenario), float(tick))
        return json_response(202, {"build_id": build.id, "scenario": scenario})

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel like ``PUT .../cancel``."""
        return json_response(200, self._build_json(self.fake.cancel(self._build(request))))

    async def finish_cancel(self, request: web.Request) -> web.Response:
        """Stop the ``canceling`` jobs now."""
        return json_response(200, self._build_json(self.fake.finish_cancel(self._build(request))))

    async def retry(self, request: web.Request) -> web.Response:
        """Retry a failed or timed-out job: ``{"job"}``."""
        body = await _body(request)
        build = self._build(request)
        self.fake.retry_job(build, _optional_str(body, "job"))
        return json_response(200, self._build_json(build))

    async def add_jobs(self, request: web.Request) -> web.Response:
        """Add jobs: ``{"steps": [{type, name, step_key, command}, ...]}``."""
        steps = (await _body(request)).get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise ValueError("steps must be a list of objects")
        return json_response(200, self._build_json(self.fake.add_jobs(self._build(request), steps)))

    async def log(self, request: web.Request) -> web.Response:
        """The raw stored log bytes."""
        data = self.fake.log(self._build(request), request.match_info["job"])
        return web.Response(body=data, content_type="application/octet-stream")

    async def knobs(self, request: web.Request) -> web.Response:
        """Read, or with POST change, the knobs."""
        if request.method == "POST":
            self.fake.knobs.update(await _body(request))
        return json_response(200, self.fake.knobs.as_json())

    async def webhooks(self, request: web.Request) -> web.Response:
        """List targets with their recent deliveries, or with POST add one."""
        if request.method == "POST":
            body = await _body(request)
            url, token = body.get("url"), body.get("token")
            if not isinstance(url, str) or not isinstance(token, str):
                raise ValueError("url and token are required strings")
            events: Any = body.get("events")
            if events is not None and not isinstance(events, list):
                raise ValueError("events must be a list")
            mode = body.get("token_mode", "token")
            target = self.fake.add_webhook_target(url, token, mode, events)
            return json_response(201, target.as_json())
        targets = [
            {**t.as_json(), "recent": [d.as_json() for d in self.fake.emitter.recent(t)]}
            for t in self.fake.webhook_targets
        ]
        return json_response(200, {"targets": targets})

    async def requests(self, request: web.Request) -> web.Response:
        """The API request log."""
        return json_response(200, [r.as_json() for r in self.fake.requests])

    async def create_calls(self, request: web.Request) -> web.Response:
        """Create requests counted per ``(meta_data key, value)``."""
        calls = [{"key": k, "value": v, "count": n} for (k, v), n in self.fake.create_calls.items()]
        return json_response(200, calls)

    def routes(self) -> list[web.RouteDef]:
        """Every ``/__fake`` route."""
        build = "/__fake/builds/{build}"
        return [
            web.get("/__fake/state", _guard(self.state)),
            web.post(build + "/advance", _guard(self.advance)),
            web.post(build + "/scenario", _guard(self.scenario)),
            web.post(build + "/cancel", _guard(self.cancel)),
            web.post(build + "/finish_cancel", _guard(self.finish_cancel)),
            web.post(build + "/retry", _guard(self.retry)),
            web.post(build + "/jobs", _guard(self.add_jobs)),
            web.get(build + "/jobs/{job}/log", _guard(self.log)),
            web.get("/__fake/knobs", _guard(self.knobs)),
            web.post("/__fake/knobs", _guard(self.knobs)),
            web.get("/__fake/webhooks", _guard(self.webhooks)),
            web.post("/__fake/webhooks", _guard(self.webhooks)),
            web.get("/__fake/requests", _guard(self.requests)),
            web.get("/__fake/create_calls", _guard(self.create_calls)),
        ]
