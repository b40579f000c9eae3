"""``GET /logs/{knot}/{rkey}/{workflow}``: a workflow's log as Tangled LogLine frames.

Unknown workflows are answered with HTTP 404 before any upgrade, from tack's
own records. For known ones the provider's Logs stream is opened and the
upgrade waits (bounded) only for its initial metadata, never for a first
line: NOT_FOUND becomes 404, other failures 502/503 with a one-line reason.
Workflows tack failed itself get a synthetic start/data/end log with the
reason. The socket is closed with 1000 when the log ends (the close handshake
is completed: see ``sender.converse``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler
from google.protobuf.message import DecodeError

from tack_common.loglines import synthetic_log
from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.ingest.wire import is_host, is_rkey
from tack_control.web import keys
from tack_control.web.sender import CLOSE_TIMEOUT, Pump, Sender, serve
from tack_control.web.tangled_json import tangled_frames


log = logging.getLogger(__name__)

CLOSE_DONE = b"log stream complete"


def _error(status: int, tag: str, message: str) -> web.Response:
    metrics.LOGS_REQUESTS.labels(str(status)).inc()
    return web.json_response({"error": tag, "message": message}, status=status)


def make_handler(ping_interval: float, send_timeout: float, connect_timeout: float) -> Handler:
    """The /logs handler with these timings."""

    async def handler(request: web.Request) -> web.StreamResponse:
        knot, rkey, name = (request.match_info[k] for k in ("knot", "rkey", "workflow"))
        if not (is_host(knot) and is_rkey(rkey) and name and "/" not in name and name not in (".", "..")):
            return _error(404, "NotFound", "no such workflow")
        conn = request.app[keys.DB]
        row = conn.execute(
            "SELECT provider, dispatch, error FROM workflows WHERE knot=? AND rkey=? AND name=?",
            (knot, rkey, name),
        ).fetchone()
        if row is None:
            return _error(404, "NotFound", "no such workflow")
        provider_name, dispatch, error = row
        ws = web.WebSocketResponse(
            autoping=True, max_msg_size=64 << 10, compress=False, timeout=CLOSE_TIMEOUT
        )
        if not ws.can_prepare(request).ok:
            return _error(400, "NotWebSocket", "/logs is a WebSocket endpoint")
        if dispatch == "failed":
            metrics.LOGS_REQUESTS.labels("synthetic").inc()
            return await serve(request, ws, "logs", _synthetic(request, error, send_timeout), CLOSE_DONE)
        started = time.monotonic()
        while dispatch == "queued":
            # Not yet with its provider (which would not know it): hold the request briefly.
            await asyncio.sleep(0.2)
            if time.monotonic() > started + connect_timeout:
                return _error(503, "Unavailable", f"workflow not yet accepted by provider {provider_name!r}")
            dispatch, error = conn.execute(
                "SELECT dispatch, error FROM workflows WHERE knot=? AND rkey=? AND name=?", (knot, rkey, name)
            ).fetchone()
            if dispatch == "failed":
                return await serve(request, ws, "logs", _synthetic(request, error, send_timeout), CLOSE_DONE)
        provider = request.app[keys.PROVIDERS].get(provider_name)
        if provider is None:
            return _error(503, "Unavailable", f"provider {provider_name!r} is not configured")
        key = pb.WorkflowKey(knot=knot, pipeline_rkey=rkey, workflow=name)
        # wait_for_ready: a provider that is reconnecting (just restarted) answers within the timeout.
        call = provider.logs_serialized(pb.LogsRequest(key=key), wait_for_ready=True)
        try:
            await asyncio.wait_for(call.initial_metadata(), connect_timeout)
            if call.done() and await call.code() != grpc.StatusCode.OK:
                raise _RpcFailed(await call.code(), await call.details())
        except TimeoutError:
            call.cancel()
            return _error(
                504, "Timeout", f"provider {provider_name!r} did not answer within {connect_timeout:g}s"
            )
        except (grpc.aio.AioRpcError, _RpcFailed) as exc:
            call.cancel()
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else exc.code
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc.detail
            if code == grpc.StatusCode.NOT_FOUND:
                return _error(404, "NotFound", f"provider {provider_name!r} has no log for this workflow")
            status = 503 if code == grpc.StatusCode.UNAVAILABLE else 502
            return _error(
                status, "ProviderError", f"provider {provider_name!r}: {code.name}: {(detail or '')[:200]}"
            )
        metrics.LOGS_REQUESTS.labels("streamed").inc()

        async def pump(ws: web.WebSocketResponse) -> None:
            sender = Sender(ws, "logs", send_timeout, request)
            frames = request.app[keys.LOG_FRAMES]
            try:
                async with sender.pinging(ping_interval):
                    async for message in call:
                        await sender.send_framed(frames.get(message))
            except grpc.aio.AioRpcError as exc:
                log.info(
                    "provider log stream ended early",
                    extra={"provider": provider_name, "code": exc.code().name},
                )
            except DecodeError as exc:
                # The viewer keeps what it has; the log ends as if the provider had stopped.
                log.warning(
                    "provider sent a malformed Logs message; log stream ended",
                    extra={"provider": provider_name, "error": str(exc)},
                )
            finally:
                call.cancel()

        return await serve(request, ws, "logs", pump, CLOSE_DONE)

    return handler


class _RpcFailed(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str | None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _synthetic(request: web.Request, error: str, send_timeout: float) -> Pump:
    async def pump(ws: web.WebSocketResponse) -> None:
        sender = Sender(ws, "logs", send_timeout, request)
        lines = synthetic_log("tack", error or "the workflow failed before it started")
        await sender.send_all(tangled_frames(lines))

    return pump
