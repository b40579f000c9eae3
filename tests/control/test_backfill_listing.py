"""Listing a collection from a PDS: the fake PDS pages as the reference PDS does, and tack's pager trusts none of it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tack_control.identity.listing import ListingError, RecordPager
from tack_control.identity.pds import PdsReader
from tack_control.identity.resolver import DidResolver
from tack_control.ingest.registry import REPO
from tack_control.netguard import Fetcher
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account


DID = "did:plc:wshs7t2ige3rnslshcvnkjbp"


def page(records: list[str], cursor: str | None, did: str = DID, collection: str = REPO) -> bytes:
    """A listRecords answer listing ``records`` (record keys) with ``cursor``."""
    body: dict[str, Any] = {
        "records": [
            {"uri": f"at://{did}/{collection}/{k}", "cid": "bafy", "value": {"$type": collection, "k": k}}
            for k in records
        ]
    }
    if cursor is not None:
        body["cursor"] = cursor
    return json.dumps(body).encode()


async def list_raw(pds: FakePds, **params: str) -> tuple[int, Any]:
    """GET listRecords on the fake with ``params``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{pds.url}/xrpc/com.atproto.repo.listRecords", params=params) as resp,
    ):
        return resp.status, await resp.json()


async def test_the_fake_pds_pages_newest_key_first_and_ends_with_an_empty_page(pds: FakePds) -> None:
    """Keys descend, the cursor is the last key of every non-empty page, and only the empty page has none."""
    for k in ("a", "b", "c", "d", "e"):
        pds.put(DID, REPO, k, {"knot": "k"})
    first = await list_raw(pds, repo=DID, collection=REPO, limit="2")
    assert first[0] == 200 and [r["uri"][-1] for r in first[1]["records"]] == ["e", "d"]
    assert first[1]["cursor"] == "d"
    second = await list_raw(pds, repo=DID, collection=REPO, limit="2", cursor="d")
    third = await list_raw(pds, repo=DID, collection=REPO, limit="2", cursor="b")
    assert [r["uri"][-1] for r in second[1]["records"]] == ["c", "b"]
    assert [r["uri"][-1] for r in third[1]["records"]] == ["a"] and third[1]["cursor"] == "a"
    last = await list_raw(pds, repo=DID, collection=REPO, limit="2", cursor="a")
    assert last == (200, {"records": []})
    backwards = await list_raw(pds, repo=DID, collection=REPO, limit="3", reverse="true", cursor="b")
    assert [r["uri"][-1] for r in backwards[1]["records"]] == ["c", "d", "e"]
    assert first[1]["records"][0]["value"] == {"$type": REPO, "knot": "k"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"collection": REPO}, 'Error: Params must have the property "repo"'),
        (
            {"repo": DID, "collection": REPO, "limit": "101"},
            "Error: Params/limit can not be greater than 100",
        ),
        ({"repo": DID, "collection": REPO, "limit": "0"}, "Error: Params/limit can not be less than 1"),
        ({"repo": DID, "collection": REPO, "limit": "ten"}, "Error: Params/limit must be an integer"),
        ({"repo": DID, "collection": REPO, "reverse": "yes"}, "Error: Params/reverse must be a boolean"),
        ({"repo": "did:plc:nobody", "collection": REPO}, "Could not find repo: did:plc:nobody"),
    ],
)
async def test_the_fake_pds_refuses_what_the_lexicon_refuses(
    pds: FakePds, params: dict[str, str], message: str
) -> None:
    """Bad parameters and unknown repositories are 400 InvalidRequest with the reference PDS's messages."""
    pds.host(DID)
    assert await list_raw(pds, **params) == (400, {"error": "InvalidRequest", "message": message})


def test_the_pager_follows_cursors_until_an_empty_page() -> None:
    """Each page's cursor is asked for next; an empty page (or one without a cursor) ends the listing."""
    pager = RecordPager(DID, REPO)
    assert pager.params() == {"repo": DID, "collection": REPO, "limit": "100"}
    pager.feed(200, page(["b", "a"], "a"))
    assert pager.params() == {"repo": DID, "collection": REPO, "limit": "100", "cursor": "a"}
    pager.feed(200, page([], None))
    assert pager.params() is None and sorted(pager.records) == ["a", "b"]
    no_cursor = RecordPager(DID, REPO)
    no_cursor.feed(200, page(["x"], None))
    assert no_cursor.done and list(no_cursor.records) == ["x"]


@pytest.mark.parametrize(
    ("pages", "reason", "words"),
    [
        ([page(["b"], "b"), page(["a"], "b")], "too_many", "repeated the cursor"),
        ([page([str(i)], str(i)) for i in range(9, 6, -1)], "too_many", "more than 3 pages"),
        ([page(["a", "b", "c", "d", "e"], "e")], "too_many", "more than 4 records"),
        ([page(["a"], None, did="did:plc:someoneelse")], "invalid", "not a record of"),
        ([page(["a"], None, collection="sh.tangled.repo.pull")], "invalid", "not a record of"),
        ([page(["b"], "b"), page(["b"], None)], "invalid", "twice"),
        ([page(["bad key"], None)], "invalid", "invalid key"),
        ([b'{"cursor": "x"}'], "invalid", "without a records list"),
        ([b"<html>"], "invalid", "without a records list"),
        ([page(["a"], "a")[:-1] + b', "cursor": 7}'], "invalid", "cursor"),
    ],
)
def test_the_pager_refuses_answers_that_would_not_end_or_break_the_lexicon(
    pages: list[bytes], reason: str, words: str
) -> None:
    """Repeated cursors, too many pages or records, foreign or duplicate records: the listing fails, with why."""
    pager = RecordPager(DID, REPO, max_records=4, max_pages=3)
    for body in pages[:-1]:
        pager.feed(200, body)
    with pytest.raises(ListingError) as caught:
        pager.feed(200, pages[-1])
    assert caught.value.reason == reason and words in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, {"error": "InvalidRequest", "message": "Could not find repo: x"}, "not_found"),
        (400, {"error": "RepoDeactivated", "message": "Repo has been deactivated"}, "not_found"),
        (
            400,
            {"error": "InvalidRequest", "message": "Error: Params/limit can not be greater than 100"},
            "unavailable",
        ),
        (500, {"error": "InternalServerError", "message": "Internal Server Error"}, "unavailable"),
        (502, None, "unavailable"),
    ],
)
def test_an_error_answer_is_not_found_only_when_the_pds_says_the_repo_is_not_there(
    status: int, body: Any, reason: str
) -> None:
    """A repository the PDS does not serve is ``not_found``; every other error status is ``unavailable``."""
    pager = RecordPager(DID, REPO)
    with pytest.raises(ListingError) as caught:
        pager.feed(status, b"" if body is None else json.dumps(body).encode())
    assert caught.value.reason == reason and f"HTTP {status}" in str(caught.value)


def test_a_record_of_another_type_or_not_an_object_is_kept_as_unreadable() -> None:
    """A listed record whose value is not an object of the collection's $type is present but unreadable (None)."""
    body = {
        "records": [
            {"uri": f"at://{DID}/{REPO}/a", "cid": "c", "value": {"$type": "app.bsky.feed.post"}},
            {"uri": f"at://{DID}/{REPO}/b", "cid": "c", "value": "text"},
            {"uri": f"at://{DID}/{REPO}/c", "cid": "c", "value": {"$type": REPO, "knot": "k"}},
        ]
    }
    pager = RecordPager(DID, REPO)
    pager.feed(200, json.dumps(body).encode())
    assert pager.records == {"a": None, "b": None, "c": {"$type": REPO, "knot": "k"}}


async def test_list_records_reads_every_page_from_the_pds_the_did_document_names(
    plc: FakePlc, pds: FakePds, fetcher: Fetcher
) -> None:
    """250 records come back whole in pages of 100: three pages and the empty one, asked at the DID's PDS."""
    account = plc.publish(Account(pds=pds.url))
    for i in range(250):
        pds.put(account.did, REPO, f"r{i:04d}", {"knot": "k"})
    reader = PdsReader(DidResolver(fetcher, plc.url, dev=True), fetcher)
    records = await reader.list_records(account.did, REPO)
    assert len(records) == 250 and records["r0042"] == {"$type": REPO, "knot": "k"}
    assert [c.get("cursor") for c in pds.list_calls] == [None, "r0150", "r0050", "r0000"]
    assert {c["limit"] for c in pds.list_calls} == {"100"}


async def test_list_records_fails_clearly_for_unknown_dids_missing_pdses_and_private_addresses(
    plc: FakePlc, pds: FakePds, fetcher: Fetcher
) -> None:
    """No document, no PDS in it, a PDS that does not host the repo, or one at a private address: ListingError."""
    resolver = DidResolver(fetcher, plc.url, dev=True)
    reader = PdsReader(resolver, fetcher)
    with pytest.raises(ListingError) as unknown:
        await reader.list_records(Account().did, REPO)
    assert unknown.value.reason == "not_found"
    stranger = plc.publish(Account(pds=pds.url))
    with pytest.raises(ListingError) as not_hosted:
        await reader.list_records(stranger.did, REPO)
    assert not_hosted.value.reason == "not_found" and "Could not find repo" in str(not_hosted.value)
    pds.host(stranger.did)
    assert await reader.list_records(stranger.did, REPO) == {}
    private = plc.publish(Account(pds=f"https://127.0.0.1:{pds.port}"))
    strict = Fetcher(dev=False, timeout_s=1.0)
    try:
        with pytest.raises(ListingError) as refused:
            await PdsReader(resolver, strict).list_records(private.did, REPO)
    finally:
        await strict.close()
    assert refused.value.reason == "unavailable" and "not a public address" in str(refused.value)
