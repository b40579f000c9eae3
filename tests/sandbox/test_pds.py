"""SimulatedPds: getRecord, listRecords and getBlob as the atproto lexicons and the reference PDS answer them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import libipld
import pytest

from tack_control.ingest.patches import verify_blob
from tack_sandbox.pds import SimulatedPds


DID = "did:plc:tacksandboxowner22222222"
COLLECTION = "sh.tangled.repo"


@pytest.fixture
async def pds() -> AsyncIterator[SimulatedPds]:
    async with SimulatedPds() as sim:
        yield sim


async def get(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET."""
    async with session.get(url, params=params) as resp:
        return resp.status, await resp.json()


async def test_get_record_answers_uri_cid_and_value(
    pds: SimulatedPds, session: aiohttp.ClientSession
) -> None:
    """A stored record comes back with its AT-URI, a CID and its value (with $type); a missing one is RecordNotFound."""
    uri = pds.put_record(DID, COLLECTION, "3abc", {"name": "sample", "knot": "k"})
    url = f"{pds.url}/xrpc/com.atproto.repo.getRecord"
    status, body = await get(session, url, repo=DID, collection=COLLECTION, rkey="3abc")
    assert status == 200
    assert body["uri"] == uri == f"at://{DID}/{COLLECTION}/3abc"
    assert body["value"] == {"$type": COLLECTION, "name": "sample", "knot": "k"}
    assert libipld.decode_cid(body["cid"])["codec"] == 0x71
    status, body = await get(session, url, repo=DID, collection=COLLECTION, rkey="nope")
    assert (status, body["error"]) == (400, "RecordNotFound")
    status, body = await get(session, url, repo=DID, collection=COLLECTION)
    assert (status, body["error"]) == (400, "InvalidRequest")


async def test_list_records_pages_newest_first_and_ends_on_an_empty_page(
    pds: SimulatedPds, session: aiohttp.ClientSession
) -> None:
    """Records by key, descending, `limit` per page, each page's cursor its last key, the last page empty."""
    for key in ("3a", "3b", "3c"):
        pds.put_record(DID, COLLECTION, key, {"knot": key})
    pds.put_record(DID, "sh.tangled.repo.collaborator", "3z", {"subject": DID})
    url = f"{pds.url}/xrpc/com.atproto.repo.listRecords"
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {
            "repo": DID,
            "collection": COLLECTION,
            "limit": "2",
            **({"cursor": cursor} if cursor else {}),
        }
        status, body = await get(session, url, **params)
        assert status == 200
        if not body["records"]:
            assert "cursor" not in body
            break
        seen += [r["uri"].rsplit("/", 1)[1] for r in body["records"]]
        cursor = body["cursor"]
        assert cursor == seen[-1]
    assert seen == ["3c", "3b", "3a"]
    status, body = await get(session, url, repo=DID, collection=COLLECTION, reverse="true")
    assert [r["value"]["knot"] for r in body["records"]] == ["3a", "3b", "3c"]


async def test_list_records_refuses_bad_parameters_and_unknown_repos(
    pds: SimulatedPds, session: aiohttp.ClientSession
) -> None:
    """limit outside 1..100, a non-boolean reverse, a missing collection: InvalidRequest; an unhosted repo: "Could not find repo"."""
    pds.host(DID)
    url = f"{pds.url}/xrpc/com.atproto.repo.listRecords"
    for params in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"reverse": "yes"}):
        status, body = await get(session, url, repo=DID, collection=COLLECTION, **params)
        assert (status, body["error"]) == (400, "InvalidRequest"), params
    status, body = await get(session, url, repo=DID)
    assert (status, body["error"]) == (400, "InvalidRequest")
    status, body = await get(session, url, repo=DID, collection=COLLECTION)
    assert (status, body) == (200, {"records": []})
    status, body = await get(session, url, repo="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", collection=COLLECTION)
    assert status == 400
    assert body["message"].startswith("Could not find repo")


async def test_get_blob_answers_the_uploaded_bytes_under_their_cid(
    pds: SimulatedPds, session: aiohttp.ClientSession
) -> None:
    """An uploaded blob's reference names a raw sha2-256 CID of its bytes; getBlob answers them with the MIME type."""
    data = b"\x1f\x8b" + b"patch" * 100
    blob = pds.upload_blob(DID, data, "application/gzip")
    cid = blob["ref"]["$link"]
    assert blob == {"$type": "blob", "ref": {"$link": cid}, "mimeType": "application/gzip", "size": len(data)}
    decoded = libipld.decode_cid(cid)
    assert (decoded["version"], decoded["codec"], decoded["hash"]["code"]) == (1, 0x55, 0x12)
    assert decoded["hash"]["digest"] == hashlib.sha256(data).digest()
    verify_blob(cid, data)
    url = f"{pds.url}/xrpc/com.atproto.sync.getBlob"
    async with session.get(url, params={"did": DID, "cid": cid}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/gzip"
        assert await resp.read() == data
    status, body = await get(session, url, did=DID, cid=cid.replace("a", "b", 1))
    assert (status, body["error"]) == (400, "BlobNotFound")
    status, body = await get(session, url, did=DID)
    assert (status, body["error"]) == (400, "InvalidRequest")
