"""``sh.tangled.ci.subscribePipelineLogs``: a pipeline's workflow logs on one WebSocket, in binary CBOR frames.

Checked before the upgrade, answered in JSON: a missing or malformed
``pipeline`` or ``workflows`` is 400 ``InvalidRequest``; a pipeline or a named
workflow this spindle does not have is 400 ``PipelineNotFound`` /
``WorkflowNotFound`` (the lexicons' names; lexicon errors are HTTP 400 in
XRPC, and generic atproto clients read 404 as "method not supported").

After the upgrade every requested workflow (all of the pipeline's when none
is named) is followed at once from the start of its log, live, its messages
interleaved on the socket as they come; each workflow's own messages stay in
order, so every data line follows its step's start. A pipeline whose
workflows have not started yet is simply waited for. When every workflow's log
has ended the socket is closed with 1000. If some log could not be delivered
to its end (see :mod:`follow`), an error frame ``LogIncomplete`` naming them is
sent after all the others have ended, and the socket closes with 1011. The
socket is pinged whenever it has been idle for the ping interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from tack_control import metrics
from tack_control.web import keys
from tack_control.web.ci import params, store
from tack_control.web.ci.follow import Follower, Incomplete, Target
from tack_control.web.ci.logcbor import error_message
from tack_control.web.sender import CLOSE_TIMEOUT, Close, Framed, Sender, frame_binaries, serve
from tack_control.web.xrpc import xrpc_error


log = logging.getLogger(__name__)

NSID = "sh.tangled.ci.subscribePipelineLogs"
ENDPOINT = "ci_logs"
CLOSE_DONE = b"log stream complete"
# Messages waiting for the socket; a slow viewer holds its workflows' provider streams back, not tack's memory.
QUEUE_DEPTH = 8


def _error(status: int, tag: str, message: str) -> web.Response:
    metrics.CI_REQUESTS.labels(NSID, str(status)).inc()
    return xrpc_error(status, tag, message)


def _targets(request: web.Request) -> list[Target] | web.Response:
    """The workflows to follow, or the error answered before any upgrade."""
    try:
        rkey = params.pipeline_id(request.query)
        names = params.workflow_names(request.query)
    except params.BadParam as exc:
        return _error(400, exc.tag, str(exc))
    conn = request.app[keys.DB]
    found = store.find(conn, rkey)
    if found is None:
        return _error(400, "PipelineNotFound", f"no pipeline {rkey} on this spindle")
    knot, _ = found
    rows = conn.execute(
        "SELECT id, name FROM workflows WHERE knot=? AND rkey=? ORDER BY id", (knot, rkey)
    ).fetchall()
    known = {name: Target(workflow_id, knot, rkey, name) for workflow_id, name in rows}
    missing = [name for name in names if name not in known]
    if missing:
        return _error(400, "WorkflowNotFound", f"pipeline {rkey} has no workflow {missing[0][:100]!r}")
    return [known[name] for name in names] if names else list(known.values())


def make_handler(
    ping_interval: float, send_timeout: float, connect_timeout: float, resume_window: float
) -> Handler:
    """The subscription handler with these timings."""

    async def handler(request: web.Request) -> web.StreamResponse:
        targets = _targets(request)
        if isinstance(targets, web.Response):
            return targets
        ws = web.WebSocketResponse(
            autoping=True, max_msg_size=64 << 10, compress=False, timeout=CLOSE_TIMEOUT
        )
        if not ws.can_prepare(request).ok:
            return _error(400, "InvalidRequest", f"{NSID} is a WebSocket endpoint")
        metrics.CI_REQUESTS.labels(NSID, "101").inc()
        follower = Follower(
            request.app[keys.DB],
            request.app[keys.PROVIDERS],
            request.app[keys.LOG_FRAMES],
            connect_timeout,
            resume_window,
        )

        async def pump(ws: web.WebSocketResponse) -> Close:
            sender = Sender(ws, ENDPOINT, send_timeout, request)
            out: asyncio.Queue[Framed | Target | Incomplete] = asyncio.Queue(QUEUE_DEPTH)

            async def follow(target: Target) -> None:
                try:
                    await follower.follow(target, out.put)
                except Incomplete as exc:
                    await out.put(Incomplete(f"{target.name}: {exc}"))
                    return
                except Exception as exc:
                    metrics.CI_LOG_FOLLOWS.labels("incomplete").inc()
                    log.exception("following a workflow log failed", extra={"workflow": target.name})
                    await out.put(Incomplete(f"{target.name}: internal error ({type(exc).__name__})"))
                    return
                await out.put(target)

            tasks = [asyncio.create_task(follow(t)) for t in targets]
            remaining, incomplete = len(tasks), []
            try:
                async with sender.pinging(ping_interval):
                    while remaining:
                        item = await out.get()
                        if isinstance(item, Framed):
                            await sender.send_framed(item)
                            continue
                        remaining -= 1
                        if isinstance(item, Incomplete):
                            incomplete.append(str(item))
                    if incomplete:
                        await sender.send_framed(
                            frame_binaries([error_message("LogIncomplete", "; ".join(incomplete))])
                        )
            finally:
                for task in tasks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*tasks, return_exceptions=True)
            # serve() closes the socket with this, after the closing handshake.
            if incomplete:
                return WSCloseCode.INTERNAL_ERROR, b"log incomplete"
            return WSCloseCode.OK, CLOSE_DONE

        return await serve(request, ws, ENDPOINT, pump)

    return handler
