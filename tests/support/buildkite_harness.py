"""The Buildkite provider as a real process against the fake Buildkite, for tests.

The fake runs in the test's event loop; its webhooks go to a small relay that
forwards them to the provider's HandleWebhook over gRPC, as the control plane's
``/webhooks/{provider}`` does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from tack_common.client import provider_stub
from tack_common.pb import provider_pb2 as pb
from tests.fakes.buildkite import DEFAULT_TOKEN, FakeBuildkite
from tests.support.procs import ProviderProcess


WEBHOOK_SECRET = "bk-webhook-secret-for-tests"
FAST_ENV = {
    "TACK_BUILDKITE_POLL_INTERVAL": "1",
    "TACK_BUILDKITE_LOG_POLL_INTERVAL": "0.1",
    "TACK_BUILDKITE_API_BUDGET": "100000",
    "TACK_BUILDKITE_CREATE_TIMEOUT": "2",
}


class BuildkiteProcess(ProviderProcess):
    """``python -m tack_provider_buildkite`` on free ports, talking to ``api_url``."""

    def __init__(self, workdir: Path, api_url: str, extra_env: Mapping[str, str] | None = None) -> None:
        env = {
            "TACK_BUILDKITE_TOKEN": DEFAULT_TOKEN,
            "TACK_BUILDKITE_ORG": "acme",
            "TACK_BUILDKITE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TACK_BUILDKITE_API_URL": api_url,
            **FAST_ENV,
            **(extra_env or {}),
        }
        super().__init__(workdir, "tack_provider_buildkite", "TACK_BUILDKITE", "buildkite", env)


class WebhookRelay:
    """``POST /webhooks/buildkite`` on loopback, forwarded verbatim to the provider's HandleWebhook."""

    def __init__(self, provider_address: str) -> None:
        self.provider_address = provider_address
        self.answers: list[tuple[int, bytes]] = []
        self._runner: web.AppRunner | None = None
        self._channel: grpc.aio.Channel | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Where the fake should send webhooks."""
        return f"http://127.0.0.1:{self.port}/webhooks/buildkite"

    async def start(self) -> None:
        """Listen on a free port."""
        self._channel = grpc.aio.insecure_channel(self.provider_address)
        app = web.Application()
        app.router.add_post("/webhooks/buildkite", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._channel is not None
        forwarded = pb.HandleWebhookRequest(
            method=request.method,
            path=request.path_qs,
            headers=[pb.Header(name=k, value=v) for k, v in request.headers.items()],
            body=await request.read(),
            remote_addr=request.remote or "",
        )
        try:
            reply = await provider_stub(self._channel).HandleWebhook(forwarded, timeout=5)
        except grpc.aio.AioRpcError:
            self.answers.append((503, b""))
            return web.json_response({"error": "Unavailable"}, status=503)
        self.answers.append((reply.http_status, reply.body))
        return web.Response(status=reply.http_status, body=reply.body, content_type="application/json")


async def fake_buildkite(pipelines: Mapping[str, Any], **knobs: Any) -> FakeBuildkite:
    """A started fake with generous rate limits and the given pipelines and knobs."""
    fake = FakeBuildkite(pipelines=pipelines)
    fake.knobs.update({"rate_limit_user": 100_000, "rate_limit_org": 100_000, **knobs})
    await fake.start()
    return fake


def buildkite_workflow(name: str, pipeline: str, **config: Any) -> pb.Workflow:
    """A workflow routed to the Buildkite provider."""
    return pb.Workflow(
        name=name,
        engine="tack",
        raw="engine: tack\n",
        config_json=json.dumps({"pipeline": pipeline, **config}),
    )


async def drive_long_builds(fake: FakeBuildkite, pipeline: str) -> None:
    """Keep every new build of ``pipeline`` running forever: its first job starts and prints a line."""
    started: set[str] = set()
    while True:
        for build in fake.builds:
            if build.pipeline == pipeline and build.id not in started and build.state == "scheduled":
                started.add(build.id)
                fake.advance(build, to="running", log_append="working on it\n")
        await asyncio.sleep(0.02)
