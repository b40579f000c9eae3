"""``POST /webhooks/{provider}``: stored durably, answered 202, forwarded to the provider's HandleWebhook.

Providers stay private sidecars; this is their one public door. The body is
read with a size limit (413 when over it) and a time limit (408), then the
request is stored (``engine/webhooks.py``) and answered ``202`` at once: a
provider that is restarting loses nothing, and senders that do not redeliver
(Buildkite) need not. The provider authenticates the request when it is
forwarded; its answer is counted and logged, no longer returned to the sender.
``503`` means the delivery could not be stored (the database cannot be written).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from tack_common.pb import provider_pb2 as pb
from tack_common.throttle import LogThrottle
from tack_common.timefmt import timestamp_from_ns
from tack_control import metrics
from tack_control.web import keys


log = logging.getLogger(__name__)
_store_failures = LogThrottle()


def _answer(provider: str, status: int, tag: str, message: str) -> web.Response:
    metrics.WEBHOOKS.labels(provider, str(status)).inc()
    return web.json_response({"error": tag, "message": message}, status=status)


def make_handler(max_bytes: int, body_timeout: float = 10.0) -> Handler:
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
        forwarded = pb.HandleWebhookRequest(
            method=request.method,
            path=request.path_qs,
            headers=[pb.Header(name=k, value=v) for k, v in request.headers.items()],
            body=bytes(body),
            remote_addr=request.remote or "",
            received_at=timestamp_from_ns(time.time_ns()),
        )
        try:
            request.app[keys.WEBHOOK_QUEUE].put(name, forwarded)
        except sqlite3.Error as exc:
            held = _store_failures.allow(type(exc).__name__)
            if held is not None:
                log.error(
                    "webhook not stored",
                    extra={"provider": name, "error": str(exc)[:200], "similar_not_logged": held},
                )
            return _answer(label, 503, "Unavailable", "the webhook could not be stored now; send it again")
        metrics.WEBHOOKS.labels(label, "202").inc()
        return web.json_response({"ok": True, "queued": True}, status=202)

    return handler
