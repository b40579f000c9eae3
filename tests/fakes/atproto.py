"""A fake PLC directory and a fake PDS on loopback, answering as the real ones do.

PLC directory: ``GET /<did>`` → the DID document as ``application/did+ld+json``,
404 ``{"message": "DID not registered: …"}`` for unknown DIDs, 410 for
tombstoned ones; ``GET /_health``. PDS: ``com.atproto.repo.getRecord`` →
``{uri, cid, value}`` or 400 ``RecordNotFound``; ``com.atproto.repo.listRecords``
as the reference PDS pages it (below); ``com.atproto.sync.getBlob`` (below);
``/.well-known/did.json`` for a did:web served by it. Both count requests per
path and can be made slow or oversized.

getBlob, as the lexicon and the reference PDS answer it: ``did`` and ``cid``
required (400 ``InvalidRequest``); a repository the PDS does not host is 400
``RepoNotFound``, a blob it does not hold for that DID 400 ``BlobNotFound``;
otherwise 200 with the original bytes, ``Content-Type`` the blob's MIME type,
``Content-Length``, ``X-Content-Type-Options: nosniff`` and a sandboxing
``Content-Security-Policy``. Knobs per DID: ``blob_failing[did] = status``
(an XRPC error with that status), ``blob_stalling`` (headers never come),
``blob_stalling_body`` (headers and half the body, then silence),
``blob_redirects[did] = url`` (a 302 there); per CID ``blob_replaced[cid] =
bytes`` serves other bytes than were uploaded.

listRecords, faithfully: ``repo`` and ``collection`` required, ``limit`` an
integer from 1 to 100 (default 50), ``reverse`` a boolean, all else 400
``InvalidRequest``; a repository the PDS does not host is 400 ``InvalidRequest``
"Could not find repo: …"; records by record key, descending (ascending with
``reverse``), strictly after ``cursor``; the answer's ``cursor`` is the last
record's key whenever the page has records, so the last page is always an
empty one. A PDS can also be made to misbehave per DID: fail with an HTTP
status, stall, page forever, or hold a page (computed when asked) until the
test releases it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tack_sandbox.pds import blob_cid
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


CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


@dataclass
class Gate:
    """A listRecords page held back: ``reached`` is set when the page was computed, :meth:`release` sends it."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Let the held page (and every later one) go."""
        self.opened.set()


class FakePds(_Loopback):
    """A PDS serving records (``records[(did, collection, rkey)] = value``) and, optionally, a did:web document.

    A repository is hosted when it has a record or was given to :meth:`host`.
    Misbehaviour per DID: ``failing[did] = status``, ``stalling`` (no answer
    ever), ``endless`` (a new record and cursor on every page), :meth:`hold`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.hosted: set[str] = set()
        self.did_json: dict[str, Any] | None = None
        self.failing: dict[str, int] = {}
        self.stalling: set[str] = set()
        self.endless: set[str] = set()
        self.gates: dict[tuple[str, str], Gate] = {}
        self.list_calls: list[dict[str, str]] = []
        self.blobs: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blob_failing: dict[str, int] = {}
        self.blob_stalling: set[str] = set()
        self.blob_stalling_body: set[str] = set()
        self.blob_redirects: dict[str, str] = {}
        self.blob_replaced: dict[str, bytes] = {}
        self._stopped = asyncio.Event()
        self.app.router.add_get("/xrpc/com.atproto.repo.getRecord", self._get_record)
        self.app.router.add_get("/xrpc/com.atproto.sync.getBlob", self._get_blob)
        self.app.router.add_get("/xrpc/com.atproto.repo.listRecords", self._list_records)
        self.app.router.add_get("/.well-known/did.json", self._did_json)

    async def stop(self) -> None:
        self._stopped.set()
        for gate in self.gates.values():
            gate.release()
        await super().stop()

    def host(self, did: str) -> None:
        """Host ``did``'s repository even while it has no records."""
        self.hosted.add(did)

    def put(self, did: str, collection: str, rkey: str, value: dict[str, Any]) -> None:
        """Create or update a record (``$type`` set to the collection)."""
        self.records[(did, collection, rkey)] = {"$type": collection, **value}

    def delete(self, did: str, collection: str, rkey: str) -> None:
        """Delete a record."""
        self.records.pop((did, collection, rkey), None)

    def upload(self, did: str, data: bytes, mime_type: str = "application/gzip") -> str:
        """Store a blob of ``did``'s (as ``com.atproto.repo.uploadBlob`` would) and return its CID."""
        cid = blob_cid(data)
        self.blobs[(did, cid)] = (data, mime_type)
        self.host(did)
        return cid

    def hold(self, did: str, collection: str) -> Gate:
        """Hold listRecords pages of ``did``'s ``collection`` until the returned gate is released."""
        gate = self.gates[(did, collection)] = Gate()
        return gate

    async def _list_records(self, request: web.Request) -> web.Response:
        path = "listRecords"
        self.list_calls.append(dict(request.query))
        query = request.query
        for name in ("repo", "collection"):
            if not query.get(name):
                return await self._invalid(path, f'Error: Params must have the property "{name}"')
        repo, collection = query["repo"], query["collection"]
        limit = 50
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                return await self._invalid(path, "Error: Params/limit must be an integer")
            if limit < 1:
                return await self._invalid(path, "Error: Params/limit can not be less than 1")
            if limit > 100:
                return await self._invalid(path, "Error: Params/limit can not be greater than 100")
        reverse_text = query.get("reverse", "false")
        if reverse_text not in ("true", "false"):
            return await self._invalid(path, "Error: Params/reverse must be a boolean")
        reverse = reverse_text == "true"
        cursor = query.get("cursor")
        if repo in self.failing:
            error = {"error": "InternalServerError", "message": "Internal Server Error"}
            return await self._answer(path, self.failing[repo], error, "application/json")
        if repo in self.stalling:
            await self._stopped.wait()
            return await self._answer(path, 503, {}, "application/json")
        if repo in self.endless:
            n = int(cursor or "9" * 12) - 1
            record = {"uri": f"at://{repo}/{collection}/{n:012d}", "cid": CID, "value": {"$type": collection}}
            return await self._answer(
                path, 200, {"cursor": f"{n:012d}", "records": [record]}, "application/json"
            )
        if repo not in self.hosted and not any(did == repo for did, _, _ in self.records):
            return await self._invalid(path, f"Could not find repo: {repo}")
        keys = sorted(
            (rkey for did, coll, rkey in self.records if did == repo and coll == collection),
            reverse=not reverse,
        )
        if cursor is not None:
            keys = [k for k in keys if (k > cursor if reverse else k < cursor)]
        page = [
            {"uri": f"at://{repo}/{collection}/{k}", "cid": CID, "value": self.records[(repo, collection, k)]}
            for k in keys[:limit]
        ]
        body: dict[str, Any] = {"records": page}
        if page:
            body["cursor"] = keys[: len(page)][-1]
        gate = self.gates.get((repo, collection))
        if gate is not None and not gate.opened.is_set():
            gate.reached.set()
            await gate.opened.wait()
        return await self._answer(path, 200, body, "application/json")

    async def _invalid(self, path: str, message: str) -> web.Response:
        return await self._answer(
            path, 400, {"error": "InvalidRequest", "message": message}, "application/json"
        )

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
        body = {"uri": f"at://{repo}/{collection}/{rkey}", "cid": CID, "value": value}
        return await self._answer(path, 200, body, "application/json")

    async def _get_blob(self, request: web.Request) -> web.StreamResponse:
        path = "getBlob"
        for name in ("did", "cid"):
            if not request.query.get(name):
                return await self._invalid(path, f'Error: Params must have the property "{name}"')
        did, cid = request.query["did"], request.query["cid"]
        if did in self.blob_failing:
            error = {"error": "InternalServerError", "message": "Internal Server Error"}
            return await self._answer(path, self.blob_failing[did], error, "application/json")
        if did in self.blob_stalling:
            self.hits[path] += 1
            await self._stopped.wait()
            return web.Response(status=503)
        if did in self.blob_redirects:
            self.hits[path] += 1
            raise web.HTTPFound(self.blob_redirects[did] + "?" + request.query_string)
        if did not in self.hosted and not any(d == did for d, _, _ in self.records):
            error = {"error": "RepoNotFound", "message": f"Could not find repo for DID: {did}"}
            return await self._answer(path, 400, error, "application/json")
        found = self.blobs.get((did, cid))
        if found is None:
            return await self._answer(
                path, 400, {"error": "BlobNotFound", "message": "Blob not found"}, "application/json"
            )
        self.hits[path] += 1
        data = self.blob_replaced.get(cid, found[0])
        response = web.StreamResponse(
            headers={
                "Content-Type": found[1],
                "Content-Length": str(len(data)),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            }
        )
        await response.prepare(request)
        if did in self.blob_stalling_body:
            await response.write(data[: len(data) // 2])
            await self._stopped.wait()
            return response
        await response.write(data)
        await response.write_eof()
        return response

    async def _did_json(self, request: web.Request) -> web.Response:
        if self.did_json is None:
            return await self._answer("did.json", 404, {"error": "NotFound"}, "application/json")
        return await self._answer("did.json", 200, self.did_json, "application/json")
