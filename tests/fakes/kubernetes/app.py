"""The fake API server's HTTP face (docs/tekton-api.md §1-§8, §10): the endpoints the Tekton provider uses.

Everything answers JSON ``Status`` objects on errors, as the real API server does; watches stream
newline-delimited events; pod logs stream text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.kubernetes.controller import Controller, Logs
from tests.fakes.kubernetes.store import JSON, Store


TEKTON = "/apis/tekton.dev/v1/namespaces/{ns}/{plural:pipelineruns|taskruns|pipelines}"


def status_error(code: int, reason: str, message: str) -> web.Response:
    """An API error answer."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def _stamp(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 1_000_000_000:09d}Z"


class Api:
    """Routes over one store, controller and logs."""

    def __init__(
        self, store: Store, controller: Controller, logs: Logs, knobs: dict[str, Any], token: str
    ) -> None:
        self.store = store
        self.controller = controller
        self.logs = logs
        self.knobs = knobs
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.watches: set[asyncio.Task[Any]] = set()
        self.reviews: list[JSON] = []

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(TEKTON, self.create),
            web.get(TEKTON, self.collection),
            web.get(TEKTON + "/{name}", self.get),
            web.patch(TEKTON + "/{name}", self.patch),
            web.get("/api/v1/namespaces/{ns}/pods/{name}", self.get_pod),
            web.get("/api/v1/namespaces/{ns}/pods/{name}/log", self.pod_log),
            web.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self.review),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status_error(401, "Unauthorized", "Unauthorized")
        failures = self.knobs.setdefault("fail", {})
        op = f"{request.method} {request.match_info.get('plural', request.path.rsplit('/', 1)[-1])}"
        if failures.get(op):
            failures[op] -= 1
            return status_error(500, "InternalError", "injected failure")
        plural = request.match_info.get("plural")
        if plural is not None and not self.knobs.get("tekton_installed", True):
            return status_error(404, "NotFound", "the server could not find the requested resource")
        return await handler(request)  # type: ignore[no-any-return]

    async def create(self, request: web.Request) -> web.StreamResponse:
        ns, plural = request.match_info["ns"], request.match_info["plural"]
        body = await request.json()
        name = (body.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            return status_error(422, "Invalid", "metadata.name: Required value")
        if plural == "pipelineruns" and len(name) > 63:
            return status_error(
                422, "Invalid", f'metadata.name: Invalid value: "{name}": must be no more than 63 characters'
            )
        if self.store.get(plural, ns, name) is not None:
            return status_error(409, "AlreadyExists", f'{plural}.tekton.dev "{name}" already exists')
        body["metadata"].setdefault("uid", f"uid-{self.store.version}")
        body["metadata"]["creationTimestamp"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        stored = self.store.put(plural, ns, body)
        if plural == "pipelineruns":
            self.controller.start(ns, name)
        stall = self.knobs.get("stall_creates", 0)
        if stall:
            self.knobs["stall_creates"] = stall - 1
            await asyncio.sleep(float(self.knobs.get("stall_seconds", 30)))
        return web.json_response(stored, status=201)

    async def get(self, request: web.Request) -> web.StreamResponse:
        ns, plural, name = request.match_info["ns"], request.match_info["plural"], request.match_info["name"]
        found = self.store.get(plural, ns, name)
        if found is None:
            return status_error(404, "NotFound", f'{plural}.tekton.dev "{name}" not found')
        return web.json_response(found)

    async def get_pod(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        found = self.store.get("pods", ns, name)
        if found is None:
            return status_error(404, "NotFound", f'pods "{name}" not found')
        return web.json_response(found)

    async def patch(self, request: web.Request) -> web.StreamResponse:
        ns, plural, name = request.match_info["ns"], request.match_info["plural"], request.match_info["name"]
        if request.content_type not in ("application/merge-patch+json", "application/json-patch+json"):
            return status_error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {request.content_type}",
            )
        if request.content_type != "application/merge-patch+json":
            return status_error(422, "Invalid", "the fake takes JSON merge patches only")
        found = self.store.get(plural, ns, name)
        if found is None:
            return status_error(404, "NotFound", f'{plural}.tekton.dev "{name}" not found')
        patch = await request.json()
        spec_patch = (patch or {}).get("spec") or {}
        if set(spec_patch) - {"status"} or set(patch) - {"spec", "metadata"}:
            return status_error(
                422, "Invalid", "spec: Forbidden: only spec.status may change once a run started"
            )
        found.setdefault("spec", {})["status"] = spec_patch.get("status")
        return web.json_response(self.store.put(plural, ns, found))

    async def collection(self, request: web.Request) -> web.StreamResponse:
        ns, plural = request.match_info["ns"], request.match_info["plural"]
        selector = request.query.get("labelSelector", "")
        if request.query.get("watch") in ("1", "true", "True"):
            return await self.watch(request, ns, plural, selector)
        body = {
            "apiVersion": "tekton.dev/v1",
            "kind": plural[:-1].capitalize() + "List",
            "metadata": {"resourceVersion": str(self.store.version)},
            "items": self.store.items(plural, ns, selector),
        }
        return web.json_response(body)

    async def watch(self, request: web.Request, ns: str, plural: str, selector: str) -> web.StreamResponse:
        text = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true", "True")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        too_old = text not in ("", "0") and int(text) < self.store.compacted_at
        gone = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Expired",
            "code": 410,
            "message": f"too old resource version: {text} ({self.store.compacted_at})",
        }
        if too_old and self.knobs.get("gone_as_http"):
            return web.json_response(gone, status=410)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self.watches.add(task)
        try:
            if too_old:
                await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                return resp
            if text in ("", "0"):
                cursor = self.store.version
                for item in self.store.items(plural, ns, selector):
                    await resp.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
            else:
                cursor = int(text)
            deadline = time.monotonic() + timeout
            last_bookmark = time.monotonic()
            interval = float(self.knobs.get("bookmark_interval", 0) or 0)
            while time.monotonic() < deadline:
                for change in self.store.since(cursor, plural, ns, selector):
                    await resp.write(json.dumps({"type": change.kind, "object": change.obj}).encode() + b"\n")
                    cursor = change.version
                if bookmarks and interval and time.monotonic() - last_bookmark >= interval:
                    cursor = max(cursor, self.store.version)
                    mark = {
                        "kind": plural[:-1].capitalize(),
                        "apiVersion": "tekton.dev/v1",
                        "metadata": {"resourceVersion": str(cursor)},
                    }
                    await resp.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                    last_bookmark = time.monotonic()
                wait = min(deadline - time.monotonic(), interval or 0.25, 0.25)
                async with self.store.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.store.changed.wait(), max(wait, 0.01))
            return resp
        except asyncio.CancelledError:
            if request.transport is not None:
                request.transport.abort()  # a dropped connection, as a network failure shows it
            raise
        finally:
            self.watches.discard(task)

    async def pod_log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        container = request.query.get("container", "")
        follow = request.query.get("follow") in ("1", "true", "True")
        stamps = request.query.get("timestamps") in ("1", "true", "True")
        pod = self.store.get("pods", ns, name)
        if pod is None:
            return status_error(404, "NotFound", f'pods "{name}" not found')
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container not in names:
            return status_error(400, "BadRequest", f"container {container} is not valid for pod {name}")
        key = (ns, name, container)
        if key not in self.logs.lines and key not in self.logs.ended:
            return status_error(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: PodInitializing',
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = 0
        while True:
            lines = self.logs.lines.get(key, [])
            for ns_time, text in lines[sent:]:
                prefix = _stamp(ns_time) + " " if stamps else ""
                await resp.write((prefix + text + "\n").encode())
            sent = len(lines)
            if not follow or key in self.logs.ended or self.store.get("pods", ns, name) is None:
                return resp
            async with self.logs.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.logs.changed.wait(), 1.0)

    async def review(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.reviews.append(body)
        attrs = body["spec"]["resourceAttributes"]
        resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
        denied = (attrs["verb"], resource) in self.knobs.get("deny", set())
        return web.json_response({**body, "status": {"allowed": not denied}}, status=201)
