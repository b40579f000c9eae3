"""``GET /events``: the spindle's status stream, as Tangled's appview consumes it.

``cursor`` is Unix nanoseconds: absent, 0 or unparsable means live only;
otherwise everything created after it is sent (the whole backlog, in pages),
then live events. The cursor is rewound by a small margin first: the appview
keeps its own clock as the cursor, and a duplicate is a no-op for it (it
ignores rkeys it has seen) while a miss would be lost. A cursor ahead of the
newest event (a client whose clock runs ahead of tack's) starts at the newest
event, so that events created later are sent however far ahead it was.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from tack_control.web import keys
from tack_control.web.sender import CLOSE_TIMEOUT, Sender, serve


_INT64 = re.compile(r"^[+-]?[0-9]{1,19}$")


def start_cursor(raw: str | None, head: int, rewind_ns: int) -> int:
    """Where a subscriber starts, from its ``cursor`` parameter: ``min(cursor - rewind, head)``.

    Parsed as Go's ``strconv.ParseInt`` would (ASCII digits, int64): anything
    else, 0 or a negative number means live only (``head``, the newest event).
    """
    cursor = int(raw) if raw is not None and _INT64.fullmatch(raw) else 0
    if not 0 < cursor < 2**63:
        return head
    return max(0, min(cursor - rewind_ns, head))


def make_handler(ping_interval: float, send_timeout: float, rewind_ns: int) -> Handler:
    """The /events handler with these timings."""

    async def handler(request: web.Request) -> web.StreamResponse:
        events = request.app[keys.EVENTS]
        cursor = start_cursor(request.query.get("cursor"), events.head(), rewind_ns)
        ws = web.WebSocketResponse(
            autoping=True, max_msg_size=64 << 10, compress=False, timeout=CLOSE_TIMEOUT
        )
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="/events is a WebSocket endpoint\n")

        async def pump(ws: web.WebSocketResponse) -> None:
            sender = Sender(ws, "events", send_timeout, request)
            position = cursor
            while not ws.closed:
                batch = events.after(position, 500)
                if batch:
                    await sender.send_all(frame for _, frame in batch)
                    position = batch[-1][0]
                    continue
                if not await events.changed.wait(ping_interval):
                    await ws.ping()

        return await serve(request, ws, "events", pump)

    return handler
