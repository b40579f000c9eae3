"""A fake PLC directory and a fake PDS on loopback, answering as the real ones do.

PLC directory: ``GET /<did>`` → the DID document as ``application/did+ld+json``,
404 ``{"message": "DID not registered: …"}`` for unknown DIDs, 410 for
tombstoned ones; ``GET /_health``. PDS: ``com.atproto.repo.getRecord`` →
``{uri, cid, value}`` or 400 ``RecordNotFound``; ``/.well-known/did.json``
for a did:web served by it. Both count requests per path and can be made
slow or oversized.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from aiohttp import web

from tests.support.atproto import Account


class _Loopback:
    """An aiohttp app on 127.0.0.1 with a random port; ``delay_s`` slows every answer, ``pad_bytes`` inflates documents."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.hits: Counter[str] = Counter()
        self.delay_s = 0.0
        self.pad_bytes = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, path: str, status: int, body: dict[str, Any], content_type: str) -> web.Response:
        self.hits[path] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.pad_bytes:
            body = {**body, "padding": "x" * self.pad_bytes}
        return web.Response(status=status, text=json.dumps(body), content_type=content_type, charset="utf-8")


class FakePlc(_Loopback):
    """A PLC directory holding the documents of the accounts it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, Account] = {}
        self.tombstoned: set[str] = set()
        self.app.router.add_get("/_health", self._health)
        self.app.router.add_get("/{did}", self._document)

    def publish(self, account: Account) -> Account:
        """Serve ``account``'s current document (re-read on every request, so a rotation shows at once)."""
        self.accounts[account.did] = account
        return account

    async def _health(self, request: web.Request) -> web.Response:
        return await self._answer("/_health", 200, {"version": "fake-plc"}, "application/json")

    async def _document(self, request: web.Request) -> web.Response:
        did = request.match_info["did"]
        if did in self.tombstoned:
            return await self._answer(did, 410, {"message": f"DID not available: {did}"}, "application/json")
        account = self.accounts.get(did)
        if account is None:
            return await self._answer(did, 404, {"message": f"DID not registered: {did}"}, "application/json")
        return await self._answer(did, 200, account.document(), "application/did+ld+json")


class FakePds(_Loopback):
    """A PDS serving records (``records[(did, collection, rkey)] = value``) and, optionally, a did:web document."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.did_json: dict[str, Any] | None = None
        self.app.router.add_get("/xrpc/com.atproto.repo.getRecord", self._get_record)
        self.app.router.add_get("/.well-known/did.json", self._did_json)

    async def _get_record(self, request: web.Request) -> web.Response:
        path = "getRecord"
        repo, collection, rkey = (request.query.get(k, "") for k in ("repo", "collection", "rkey"))
        if not (repo and collection and rkey):
            return await self._answer(
                path,
                400,
                {"error": "InvalidRequest", "message": "Error: Params must have the property"},
                "application/json",
            )
        value = self.records.get((repo, collection, rkey))
        if value is None:
            message = f"Could not locate record: at://{repo}/{collection}/{rkey}"
            return await self._answer(
                path, 400, {"error": "RecordNotFound", "message": message}, "application/json"
            )
        body = {
            "uri": f"at://{repo}/{collection}/{rkey}",
            "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
            "value": value,
        }
        return await self._answer(path, 200, body, "application/json")

    async def _did_json(self, request: web.Request) -> web.Response:
        if self.did_json is None:
            return await self._answer("did.json", 404, {"error": "NotFound"}, "application/json")
        return await self._answer("did.json", 200, self.did_json, "application/json")
