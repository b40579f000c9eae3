"""``GET /events``: the spindle's status stream, as Tangled's appview consumes it.

``cursor`` is Unix nanoseconds: absent, 0 or unparsable means live only;
otherwise everything created after it is sent (the whole backlog, in pages),
then live events. The cursor is rewound by a small margin first: the appview
keeps its own clock as the cursor, and a duplicate is a no-op for it (it
ignores rkeys it has seen) while a miss would be lost.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from tack_control import wsutil
from tack_control.eventlog import EventLog


EVENTS = web.AppKey("events", EventLog)


def start_cursor(raw: str | None, head: int, rewind_ns: int) -> int:
    """Where a subscriber starts, from its ``cursor`` parameter."""
    try:
        cursor = int(raw) if raw is not None else 0
    except ValueError:
        cursor = 0
    if cursor <= 0:
        return head
    return max(0, cursor - rewind_ns)


def make_handler(ping_interval: float, send_timeout: float, rewind_ns: int) -> Handler:
    """The /events handler with these timings."""

    async def handler(request: web.Request) -> web.StreamResponse:
        events = request.app[EVENTS]
        cursor = start_cursor(request.query.get("cursor"), events.head(), rewind_ns)
        ws = web.WebSocketResponse(autoping=True, max_msg_size=64 << 10, compress=False)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="/events is a WebSocket endpoint\n")

        async def pump(ws: web.WebSocketResponse) -> None:
            sender = wsutil.Sender(ws, "events", send_timeout)
            position = cursor
            while not ws.closed:
                batch = events.after(position, 500)
                if batch:
                    for created, frame in batch:
                        await sender.send(frame)
                        position = created
                    continue
                if not await events.changed.wait(ping_interval):
                    await ws.ping()

        return await wsutil.serve(request, ws, "events", pump)

    return handler
