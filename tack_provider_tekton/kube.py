"""The provider's only door to the cluster: the few Kubernetes calls it makes, through ``kubernetes_asyncio``.

The library loads the configuration (in-cluster token and CA, re-read as they rotate; or a kubeconfig
with any authentication it supports), builds URLs and signs requests. Answers are read here as raw
JSON (``_preload_content=False``) so every body is bounded and every status code is ours to judge;
the watch and log streams are split into lines by :mod:`tack_provider_tekton.watchwire`.
Each call is counted in ``tack_tekton_api_requests_total{operation, code}`` (docs/tekton-api.md §1).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s, config as k8s_config

from tack_provider_tekton import metrics
from tack_provider_tekton.config import Settings
from tack_provider_tekton.watchwire import Event, Lines, decode


GROUP, VERSION = "tekton.dev", "v1"
MAX_BODY_BYTES = 32 << 20
JSON = dict[str, Any]


class KubeError(Exception):
    """The API server answered with an error status."""

    def __init__(self, operation: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{operation}: HTTP {status} {reason}: {message}"[:1000])
        self.operation = operation
        self.status = status
        self.reason = reason
        self.message = message


class Unreachable(Exception):
    """No answer from the API server (connection refused or reset, timeout, TLS failure)."""


async def _read(resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise Unreachable(f"answer larger than {limit} bytes")
    return bytes(body)


def _status_error(operation: str, status: int, body: bytes) -> KubeError:
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        return KubeError(operation, status, str(decoded.get("reason", "")), str(decoded.get("message", "")))
    return KubeError(operation, status, "", body[:300].decode("utf-8", "replace"))


class Kube:
    """The Kubernetes API as the provider uses it, in one namespace."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._api: k8s.ApiClient | None = None

    async def open(self) -> None:
        """Load the configuration (kubeconfig or in-cluster) and make the client."""
        configuration = k8s.Configuration()
        if self.settings.kubeconfig is not None:
            await k8s_config.load_kube_config(
                config_file=self.settings.kubeconfig, client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        self._api = k8s.ApiClient(configuration)

    async def close(self) -> None:
        """Close the client's connections."""
        if self._api is not None:
            await self._api.close()
            self._api = None

    @property
    def api(self) -> k8s.ApiClient:
        """The open client."""
        if self._api is None:
            raise RuntimeError("Kube.open() was not called")
        return self._api

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.settings.request_timeout)

    def _stream_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, sock_connect=self.settings.request_timeout, sock_read=self.settings.watch_timeout + 30
        )

    @contextlib.asynccontextmanager
    async def _call(
        self, operation: str, make: Callable[[], Any], ok: tuple[int, ...] = (200, 201)
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; yield the response when its status is in ``ok``, else raise KubeError."""
        try:
            resp: aiohttp.ClientResponse = await make()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            metrics.API_REQUESTS.labels(operation, "error").inc()
            raise Unreachable(f"{operation}: {type(exc).__name__}: {exc}") from None
        try:
            metrics.API_REQUESTS.labels(operation, str(resp.status)).inc()
            if resp.status not in ok:
                try:
                    body = await _read(resp, 1 << 16)
                except (aiohttp.ClientError, TimeoutError, OSError, Unreachable):
                    body = b""
                raise _status_error(operation, resp.status, body)
            yield resp
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{operation}: {type(exc).__name__}: {exc}") from None
        finally:
            resp.release()

    async def _json(self, operation: str, make: Callable[[], Any]) -> JSON:
        async with self._call(operation, make) as resp:
            decoded = json.loads(await _read(resp))
        if not isinstance(decoded, dict):
            raise KubeError(operation, 200, "", "the answer is not a JSON object")
        return decoded

    def _custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    async def create_pipeline_run(self, body: Mapping[str, Any]) -> JSON:
        """Create a PipelineRun (409 AlreadyExists raises KubeError)."""
        return await self._json(
            "create_pipelinerun",
            lambda: self._custom().create_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                "pipelineruns",
                dict(body),
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )

    async def get_pipeline_run(self, name: str) -> JSON:
        """One PipelineRun."""
        return await self._json(
            "get_pipelinerun",
            lambda: self._custom().get_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                "pipelineruns",
                name,
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )

    async def list_pipeline_runs(self, selector: str) -> JSON:
        """Every PipelineRun matching ``selector``, with the list's resourceVersion."""
        return await self._json(
            "list_pipelineruns",
            lambda: self._custom().list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                "pipelineruns",
                label_selector=selector,
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )

    async def watch_pipeline_runs(self, selector: str, version: str) -> AsyncGenerator[Event, None]:
        """Events after ``version`` until the server ends the watch (``TACK_TEKTON_WATCH_TIMEOUT``).

        A 410 answered as the HTTP status comes out as a ``GONE`` event, like the in-stream form.
        """
        make = lambda: self._custom().list_namespaced_custom_object(  # noqa: E731
            GROUP,
            VERSION,
            self.namespace,
            "pipelineruns",
            label_selector=selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=int(self.settings.watch_timeout),
            _preload_content=False,
            _request_timeout=self._stream_timeout(),
        )
        try:
            async with self._call("watch_pipelineruns", make) as resp:
                lines = Lines()
                async for chunk in resp.content.iter_any():
                    for line in lines.feed(chunk):
                        event = decode(line)
                        if event is not None:
                            yield event
                tail = decode(lines.flush())
                if tail is not None:
                    yield tail
        except KubeError as exc:
            if exc.status != 410:
                raise
            yield Event("GONE", {"code": 410, "message": exc.message}, None, 410)

    async def patch_pipeline_run_status(self, name: str, value: str) -> JSON:
        """Set ``spec.status`` (a JSON merge patch: nothing else changes)."""
        return await self._json(
            "patch_pipelinerun",
            lambda: self._custom().patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                "pipelineruns",
                name,
                {"spec": {"status": value}},
                # The runtime takes it (the stubs leave it out); custom resources accept no strategic merge.
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )

    async def list_task_runs(self, pipeline_run: str) -> list[JSON]:
        """The TaskRuns of one PipelineRun."""
        answer = await self._json(
            "list_taskruns",
            lambda: self._custom().list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                "taskruns",
                label_selector=f"tekton.dev/pipelineRun={pipeline_run}",
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )
        items = answer.get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    async def get_pipeline(self, name: str) -> JSON:
        """One Pipeline (the access check asks for one that may not exist)."""
        return await self._json(
            "get_pipeline",
            lambda: self._custom().get_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                "pipelines",
                name,
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )

    async def get_pod(self, name: str) -> JSON:
        """One pod."""
        return await self._json(
            "get_pod",
            lambda: k8s.CoreV1Api(self.api).read_namespaced_pod(
                name, self.namespace, _preload_content=False, _request_timeout=self._timeout()
            ),
        )

    async def pod_log(self, pod: str, container: str, *, follow: bool) -> AsyncGenerator[bytes, None]:
        """A container's log with timestamps, in chunks; with ``follow``, until the container ends."""
        make = lambda: k8s.CoreV1Api(self.api).read_namespaced_pod_log(  # noqa: E731
            pod,
            self.namespace,
            container=container,
            follow=follow,
            timestamps=True,
            _preload_content=False,
            _request_timeout=self._stream_timeout() if follow else self._timeout(),
        )
        async with self._call("pod_log", make) as resp:
            async for chunk in resp.content.iter_any():
                metrics.LOG_BYTES.inc(len(chunk))
                yield chunk

    async def allowed(self, verb: str, resource: str, group: str = GROUP, subresource: str = "") -> bool:
        """Whether this client may ``verb`` the resource in the namespace (a SelfSubjectAccessReview)."""
        body = k8s.V1SelfSubjectAccessReview(
            spec=k8s.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s.V1ResourceAttributes(
                    namespace=self.namespace,
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                )
            )
        )
        answer = await self._json(
            "access_review",
            lambda: k8s.AuthorizationV1Api(self.api).create_self_subject_access_review(
                body, _preload_content=False, _request_timeout=self._timeout()
            ),
        )
        status = answer.get("status")
        return isinstance(status, dict) and status.get("allowed") is True
