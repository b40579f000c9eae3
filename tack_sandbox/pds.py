"""SimulatedPds: a loopback stand-in for an account's PDS, answering the reads a spindle makes.

Faithful to the atproto lexicons and the reference PDS, minimal otherwise:

- ``com.atproto.repo.getRecord?repo&collection&rkey`` → ``{uri, cid, value}``;
  400 ``RecordNotFound`` for a record it does not hold.
- ``com.atproto.repo.listRecords?repo&collection[&limit][&cursor][&reverse]`` →
  ``{cursor?, records: [{uri, cid, value}]}``: by record key, newest first
  (oldest first with ``reverse``), ``limit`` 1 to 100 (default 50), strictly after
  ``cursor``; every page with records carries the last key as its cursor, so the
  last page is an empty one; a repository it does not host is 400
  ``InvalidRequest`` "Could not find repo: …".
- ``com.atproto.sync.getBlob?did&cid`` → the blob's bytes as uploaded, with its
  MIME type; 400 ``BlobNotFound`` for one it does not hold.

Missing or malformed parameters are 400 ``InvalidRequest``. Records are given
with :meth:`SimulatedPds.put_record` and blobs with :meth:`SimulatedPds.upload_blob`
(what ``com.atproto.repo.putRecord`` and ``uploadBlob`` would store).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from aiohttp import web

from tack_sandbox._loopback import JsonObject, LoopbackServer
from tack_sandbox.jetstream import record_cid


_RAW_SHA256 = bytes((0x01, 0x55, 0x12, 0x20))


def blob_cid(data: bytes) -> str:
    """The CID of a blob as a PDS computes it: CIDv1, ``raw`` codec, sha2-256, base32 (``bafkrei…``)."""
    return "b" + base64.b32encode(_RAW_SHA256 + hashlib.sha256(data).digest()).decode().lower().rstrip("=")


def blob_ref(data: bytes, mime_type: str) -> JsonObject:
    """The blob reference a record embeds for ``data`` once uploaded (``uploadBlob``'s ``blob``)."""
    return {"$type": "blob", "ref": {"$link": blob_cid(data)}, "mimeType": mime_type, "size": len(data)}


def _invalid(message: str, error: str = "InvalidRequest") -> web.Response:
    return web.json_response({"error": error, "message": message}, status=400)


class SimulatedPds(LoopbackServer):
    """A PDS hosting the repositories given to :meth:`host` (or that have a record)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.records: dict[tuple[str, str, str], JsonObject] = {}
        self.blobs: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.hosted: set[str] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/xrpc/com.atproto.repo.getRecord", self._get_record),
            web.get("/xrpc/com.atproto.repo.listRecords", self._list_records),
            web.get("/xrpc/com.atproto.sync.getBlob", self._get_blob),
        ]

    @property
    def url(self) -> str:
        """``http://host:port``, the ``#atproto_pds`` endpoint of the accounts it hosts."""
        return f"http://{self.hostname}"

    def host(self, did: str) -> None:
        """Host ``did``'s repository (listRecords answers for it even while it is empty)."""
        self.hosted.add(did)

    def put_record(self, did: str, collection: str, rkey: str, value: JsonObject) -> str:
        """Create or replace a record (``$type`` set to ``collection``); returns its AT-URI."""
        self.hosted.add(did)
        self.records[(did, collection, rkey)] = {"$type": collection, **value}
        return f"at://{did}/{collection}/{rkey}"

    def upload_blob(self, did: str, data: bytes, mime_type: str) -> JsonObject:
        """Store a blob; returns the blob reference a record embeds (``uploadBlob``'s ``blob``)."""
        self.hosted.add(did)
        ref = blob_ref(data, mime_type)
        self.blobs[(did, ref["ref"]["$link"])] = (data, mime_type)
        return ref

    def _params(self, request: web.Request, path: str, *required: str) -> dict[str, str] | web.Response:
        query = dict(request.query)
        self.requests.append((path, query))
        for name in required:
            if not query.get(name):
                return _invalid(f'Error: Params must have the property "{name}"')
        return query

    async def _get_record(self, request: web.Request) -> web.Response:
        query = self._params(request, "getRecord", "repo", "collection", "rkey")
        if isinstance(query, web.Response):
            return query
        key = (query["repo"], query["collection"], query["rkey"])
        uri = "at://{}/{}/{}".format(*key)
        value = self.records.get(key)
        if value is None:
            return _invalid(f"Could not locate record: {uri}", "RecordNotFound")
        return web.json_response({"uri": uri, "cid": record_cid(value), "value": value})

    async def _list_records(self, request: web.Request) -> web.Response:
        query = self._params(request, "listRecords", "repo", "collection")
        if isinstance(query, web.Response):
            return query
        repo, collection = query["repo"], query["collection"]
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return _invalid("Error: Params/limit must be an integer")
        if not 1 <= limit <= 100:
            return _invalid(
                f"Error: Params/limit can not be {'less than 1' if limit < 1 else 'greater than 100'}"
            )
        if query.get("reverse", "false") not in ("true", "false"):
            return _invalid("Error: Params/reverse must be a boolean")
        reverse = query.get("reverse") == "true"
        if repo not in self.hosted:
            return _invalid(f"Could not find repo: {repo}")
        keys = sorted((k for d, c, k in self.records if d == repo and c == collection), reverse=not reverse)
        cursor = query.get("cursor")
        if cursor is not None:
            keys = [k for k in keys if (k > cursor if reverse else k < cursor)]
        page = keys[:limit]
        records = []
        for rkey in page:
            value = self.records[(repo, collection, rkey)]
            records.append(
                {"uri": f"at://{repo}/{collection}/{rkey}", "cid": record_cid(value), "value": value}
            )
        body: dict[str, Any] = {"records": records}
        if page:
            body["cursor"] = page[-1]
        return web.json_response(body)

    async def _get_blob(self, request: web.Request) -> web.Response:
        query = self._params(request, "getBlob", "did", "cid")
        if isinstance(query, web.Response):
            return query
        found = self.blobs.get((query["did"], query["cid"]))
        if found is None:
            return _invalid("Blob not found", "BlobNotFound")
        data, mime_type = found
        return web.Response(
            body=data,
            content_type=mime_type,
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )
