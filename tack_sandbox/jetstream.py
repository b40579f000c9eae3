"""SimulatedJetstream: a loopback stand-in for Bluesky Jetstream's ``/subscribe`` websocket,
used by the local sandbox and the tests.

It behaves like the Jetstream server as a spindle sees it (docs/tangled-protocol.md §2):
uncompressed JSON text frames, one event per frame; ``wantedCollections``
(NSIDs, or prefixes ending in ``.*``) filter commit events only, while account
and identity events always pass; ``wantedDids`` filter every event; a
``cursor`` (unix microseconds) replays stored events with ``time_us >= cursor``
before going live, a future cursor means live only, and a malformed cursor,
collection or DID is refused with HTTP 400 before the upgrade. Frames the
client sends are ignored (real Jetstream would parse them as option updates).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tack_common.tid import TidClock
from tack_sandbox._loopback import (
    JsonObject,
    LoopbackWebSocketServer,
    discard_incoming,
    go_json,
    parse_go_int64,
)


_NSID_RE = re.compile(
    r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"(\.[a-zA-Z]([a-zA-Z]{0,61}[a-zA-Z])?)$"
)
_DID_RE = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_OPERATIONS = ("create", "update", "delete")


@dataclass(frozen=True)
class _Row:
    time_us: int
    did: str
    collection: str
    frame: str


@dataclass(eq=False)
class _Subscriber:
    collections: frozenset[str] | None
    prefixes: tuple[str, ...]
    dids: frozenset[str]
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    @classmethod
    def from_query(cls, collections: Sequence[str], dids: Sequence[str]) -> _Subscriber:
        full: set[str] = set()
        prefixes: list[str] = []
        for collection in collections:
            if collection.endswith(".*"):
                prefixes.append(collection.removesuffix("*"))
            elif len(collection) <= 317 and _NSID_RE.match(collection):
                full.add(collection)
            else:
                raise ValueError(f"invalid subscriber options: invalid collection: {collection}")
        for did in dids:
            if not (len(did) <= 2048 and _DID_RE.match(did)):
                raise ValueError("invalid subscriber options")
        return cls(frozenset(full) if collections else None, tuple(prefixes), frozenset(dids))

    def wants(self, row: _Row) -> bool:
        if self.dids and row.did not in self.dids:
            return False
        if self.collections is None or row.collection == "" or row.collection in self.collections:
            return True
        return any(row.collection.startswith(prefix) for prefix in self.prefixes)


def _sorted_keys(value: Any) -> Any:
    """Jetstream re-encodes records from CBOR through a Go map, so their keys come out sorted."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def record_cid(record: JsonObject) -> str:
    """A syntactically valid CIDv1 (dag-cbor, sha2-256) derived from the record's JSON."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).digest()
    return "b" + base64.b32encode(bytes([0x01, 0x71, 0x12, 0x20]) + digest).decode().lower().rstrip("=")


class SimulatedJetstream(LoopbackWebSocketServer):
    """A loopback Jetstream with an in-memory event log; ``commit`` and ``publish`` append and broadcast."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, ping_interval: float = 30.0) -> None:
        super().__init__(host=host, port=port, ping_interval=ping_interval)
        self.connect_queries: list[str] = []
        self.connect_cursors: list[str | None] = []
        self._rows: list[_Row] = []
        self._events: list[JsonObject] = []
        self._subscribers: set[_Subscriber] = set()
        self._revs = TidClock()

    def _routes(self) -> list[web.RouteDef]:
        return [web.get("/subscribe", self._subscribe)]

    @property
    def url(self) -> str:
        """``ws://host:port/subscribe``."""
        return f"ws://{self.hostname}/subscribe"

    @property
    def events(self) -> list[JsonObject]:
        """Every event published so far, oldest first."""
        return list(self._events)

    def commit(
        self, did: str, collection: str, rkey: str, operation: str, record: JsonObject | None = None
    ) -> JsonObject:
        """Publish a commit event; ``record`` is required for create/update and forbidden for delete."""
        if operation not in _OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if (record is None) != (operation == "delete"):
            raise ValueError("create/update need a record; delete must not have one")
        commit: JsonObject = {
            "rev": self._revs.next(),
            "operation": operation,
            "collection": collection,
            "rkey": rkey,
        }
        if record is not None:
            commit["record"] = _sorted_keys(record)
            commit["cid"] = record_cid(record)
        return self.publish({"did": did, "kind": "commit", "commit": commit})

    def publish(self, event: JsonObject) -> JsonObject:
        """Publish any event (``commit``, ``account``, ``identity``); assigns ``time_us`` unless given.

        A given ``time_us`` must be later than every stored one.
        """
        did, kind = event.get("did"), event.get("kind")
        if not isinstance(did, str) or not isinstance(kind, str):
            raise ValueError("an event needs string 'did' and 'kind'")
        last = self._rows[-1].time_us if self._rows else 0
        given = event.get("time_us")
        if given is None:
            time_us = max(time.time_ns() // 1000, last + 1)
        elif isinstance(given, int) and given > last:
            time_us = given
        else:
            raise ValueError(f"time_us must be an int greater than {last}")
        stored: JsonObject = {"did": did, "time_us": time_us, "kind": kind}
        stored.update((key, value) for key, value in event.items() if key not in stored)
        commit = stored.get("commit")
        collection = commit.get("collection", "") if kind == "commit" and isinstance(commit, dict) else ""
        row = _Row(time_us, did, str(collection), go_json(stored, sort_keys=False))
        self._rows.append(row)
        self._events.append(stored)
        for subscriber in self._subscribers:
            if subscriber.wants(row):
                subscriber.outbox.put_nowait(row.frame)
        return stored

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        self.connect_queries.append(request.query_string)
        raw_cursor = request.query.get("cursor")
        self.connect_cursors.append(raw_cursor)
        cursor: int | None = None
        if raw_cursor:
            cursor, ok = parse_go_int64(raw_cursor)
            if not ok:
                return web.Response(status=400, text=f"invalid cursor: {raw_cursor}")
            if cursor > time.time_ns() // 1000:
                cursor = None
        try:
            subscriber = _Subscriber.from_query(
                request.query.getall("wantedCollections", []), request.query.getall("wantedDids", [])
            )
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        ws = await self._accept(request)
        if cursor is not None:
            for row in self._rows:
                if row.time_us >= cursor and subscriber.wants(row):
                    subscriber.outbox.put_nowait(row.frame)
        self._subscribers.add(subscriber)
        reader = asyncio.create_task(discard_incoming(ws))
        try:
            await self._pump(ws, subscriber.outbox, reader)
        except ConnectionError:
            pass
        finally:
            self._subscribers.discard(subscriber)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._release(ws)
        return ws

    async def _pump(
        self, ws: web.WebSocketResponse, outbox: asyncio.Queue[str], reader: asyncio.Task[None]
    ) -> None:
        """Send queued frames until the client goes away, pinging every ``ping_interval`` regardless."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval
        while not reader.done():
            getter = asyncio.create_task(outbox.get())
            timeout = max(0.0, next_ping - loop.time())
            await asyncio.wait({getter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                await ws.send_str(getter.result())
                continue
            getter.cancel()
            if not reader.done() and loop.time() >= next_ping:
                await self._ping(ws)
                next_ping += self.ping_interval
