"""``POST /webhooks/{provider}``: forwarded verbatim to the provider's HandleWebhook.

Providers stay private sidecars; this is their one public door. The body is
read with a size limit (413 before forwarding when over it); the provider
authenticates the request and decides the answer.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler

from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.web import keys


log = logging.getLogger(__name__)


def _answer(provider: str, status: int, tag: str, message: str) -> web.Response:
    metrics.WEBHOOKS.labels(provider, str(status)).inc()
    return web.json_response({"error": tag, "message": message}, status=status)


def make_handler(max_bytes: int, timeout: float = 10.0, body_timeout: float = 10.0) -> Handler:
    """The webhook handler, refusing bodies over ``max_bytes`` or slower than ``body_timeout`` seconds."""

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["provider"]
        provider = request.app[keys.PROVIDERS].get(name)
        label = name if provider is not None else "unknown"
        if provider is None:
            return _answer(label, 404, "NotFound", f"no provider named {name!r}")
        if request.content_length is not None and request.content_length > max_bytes:
            metrics.HTTP_REJECTED.labels("webhook_too_large").inc()
            return _answer(label, 413, "TooLarge", f"webhook bodies are limited to {max_bytes} bytes")
        body = bytearray()
        try:
            # A body trickled in slowly (slow-loris) must not hold a handler for ever.
            async with asyncio.timeout(body_timeout):
                async for chunk in request.content.iter_chunked(64 << 10):
                    body += chunk
                    if len(body) > max_bytes:
                        metrics.HTTP_REJECTED.labels("webhook_too_large").inc()
                        return _answer(
                            label, 413, "TooLarge", f"webhook bodies are limited to {max_bytes} bytes"
                        )
        except TimeoutError:
            metrics.HTTP_REJECTED.labels("webhook_body_timeout").inc()
            return _answer(label, 408, "Timeout", f"the webhook body did not arrive within {body_timeout:g}s")
        peer = request.remote or ""
        forwarded = pb.HandleWebhookRequest(
            method=request.method,
            path=request.path_qs,
            headers=[pb.Header(name=k, value=v) for k, v in request.headers.items()],
            body=bytes(body),
            remote_addr=peer,
        )
        try:
            reply = await provider.stub.HandleWebhook(forwarded, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            log.warning("webhook not delivered", extra={"provider": name, "code": exc.code().name})
            return _answer(label, 503, "Unavailable", f"provider {name!r} could not take the webhook now")
        metrics.WEBHOOKS.labels(label, str(reply.http_status)).inc()
        status = reply.http_status if 100 <= reply.http_status <= 599 else 502
        return web.Response(
            status=status, body=reply.body, content_type=reply.content_type or "application/json"
        )

    return handler
