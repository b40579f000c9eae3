"""Reading a record from its owner's PDS, found through the owner's DID document on the PLC."""

from __future__ import annotations

import pytest

from tack_control.identity.pds import PdsReader, RecordError, parse_record_uri
from tack_control.identity.resolver import DidResolver
from tack_control.netguard import Fetcher
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account


REPO = "sh.tangled.repo"


@pytest.fixture
def reader(plc: FakePlc, fetcher: Fetcher) -> PdsReader:
    """A reader resolving through the fake PLC."""
    return PdsReader(DidResolver(fetcher, plc.url, dev=True), fetcher)


def test_record_uris() -> None:
    """at://<did>/<collection>/<rkey> parses; handles, other collections, extra segments and bad rkeys do not."""
    uri = parse_record_uri("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/sh.tangled.repo/hello", REPO)
    assert (uri.did, uri.collection, uri.rkey) == ("did:plc:ewvi7nxzyoun6zhxrhs64oiz", REPO, "hello")
    assert str(uri) == "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/sh.tangled.repo/hello"
    for bad in (
        "at://alice.example.com/sh.tangled.repo/hello",
        "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/sh.tangled.repo.pull/hello",
        "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/sh.tangled.repo/hello/x",
        "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/sh.tangled.repo/..",
        "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/sh.tangled.repo/a b",
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        "https://example.com/x/y",
    ):
        with pytest.raises(RecordError) as caught:
            parse_record_uri(bad, REPO)
        assert caught.value.reason == "bad_uri"


async def test_a_record_is_read_from_the_owners_pds(plc: FakePlc, pds: FakePds, reader: PdsReader) -> None:
    """The owner's #atproto_pds is asked with getRecord; its value comes back."""
    owner = plc.publish(Account(pds=pds.url))
    pds.records[(owner.did, REPO, "hello")] = {"$type": REPO, "knot": "knot.example", "repoDid": "did:plc:r"}
    value = await reader.get_record(parse_record_uri(f"at://{owner.did}/{REPO}/hello", REPO))
    assert value["repoDid"] == "did:plc:r"
    assert pds.hits["getRecord"] == 1


async def test_missing_records_owners_and_failing_pdses(
    plc: FakePlc, pds: FakePds, reader: PdsReader
) -> None:
    """No record or an unknown owner is not_found; a record of another type is not_found; a slow PDS is unavailable."""
    owner = plc.publish(Account(pds=pds.url))
    uri = parse_record_uri(f"at://{owner.did}/{REPO}/nope", REPO)
    with pytest.raises(RecordError, match="does not exist") as caught:
        await reader.get_record(uri)
    assert caught.value.reason == "not_found"
    stranger = parse_record_uri(f"at://{Account().did}/{REPO}/x", REPO)
    with pytest.raises(RecordError) as caught:
        await reader.get_record(stranger)
    assert caught.value.reason == "not_found"
    pds.records[(owner.did, REPO, "odd")] = {"$type": "sh.tangled.string"}
    with pytest.raises(RecordError, match=r"not a sh\.tangled\.repo"):
        await reader.get_record(parse_record_uri(f"at://{owner.did}/{REPO}/odd", REPO))
    pds.records[(owner.did, REPO, "slow")] = {"$type": REPO}
    pds.delay_s = 3
    with pytest.raises(RecordError, match="no complete answer within 1s") as caught:
        await reader.get_record(parse_record_uri(f"at://{owner.did}/{REPO}/slow", REPO))
    assert caught.value.reason == "unavailable"


async def test_an_owner_without_a_pds_is_not_found(
    plc: FakePlc, reader: PdsReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DID document without #atproto_pds: the record cannot be looked up."""
    owner = plc.publish(Account())
    document = owner.document()
    document["service"] = []
    monkeypatch.setattr(owner, "document", lambda: document)
    with pytest.raises(RecordError, match="names no PDS"):
        await reader.get_record(parse_record_uri(f"at://{owner.did}/{REPO}/x", REPO))
