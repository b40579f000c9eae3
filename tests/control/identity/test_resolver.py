"""DID resolution against a fake PLC directory and a did:web host: caching, limits and refusals."""

from __future__ import annotations

import asyncio

import pytest

from tack_control.identity.resolver import DidResolver, ResolveError
from tack_control.netguard import Fetcher
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account


class Clock:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver_for(plc: FakePlc, fetcher: Fetcher, clock: Clock | None = None, **kw: float) -> DidResolver:
    return DidResolver(fetcher, plc.url, dev=True, clock=clock or Clock(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("curve", ["p256", "k256"])
async def test_plc_document_is_resolved_and_cached_for_the_ttl(
    plc: FakePlc, fetcher: Fetcher, curve: str
) -> None:
    """The PLC's did+ld+json document gives the key; it is fetched once per TTL."""
    account = plc.publish(Account(curve=curve))  # type: ignore[arg-type]
    clock = Clock()
    resolver = resolver_for(plc, fetcher, clock, ttl_s=100)
    doc = await resolver.resolve(account.did)
    assert doc.signing_key is not None and doc.signing_key.multikey() == account.multikey()
    assert doc.pds == account.pds
    await resolver.resolve(account.did)
    clock.now += 99
    await resolver.resolve(account.did)
    assert plc.hits[account.did] == 1
    clock.now += 2
    await resolver.resolve(account.did)
    assert plc.hits[account.did] == 2


async def test_unknown_and_tombstoned_dids_are_not_found_and_remembered(
    plc: FakePlc, fetcher: Fetcher
) -> None:
    """404 and 410 are not_found; the answer is cached for the negative TTL, then asked again."""
    clock = Clock()
    resolver = resolver_for(plc, fetcher, clock, negative_ttl_s=60)
    gone = plc.publish(Account())
    plc.tombstoned.add(gone.did)
    unknown = Account().did
    for did in (unknown, gone.did):
        for _ in range(3):
            with pytest.raises(ResolveError) as caught:
                await resolver.resolve(did)
            assert caught.value.reason == "not_found"
        assert plc.hits[did] == 1
    clock.now += 61
    with pytest.raises(ResolveError):
        await resolver.resolve(unknown)
    assert plc.hits[unknown] == 2


async def test_did_web_with_port_is_fetched_over_http_in_dev_only(pds: FakePds, fetcher: Fetcher) -> None:
    """did:web:127.0.0.1%3A<port> resolves through http://…/.well-known/did.json with TACK_DEV; without it, it is refused unfetched."""
    account = Account(did=f"did:web:127.0.0.1%3A{pds.port}", curve="p256")
    pds.did_json = account.document()
    dev = DidResolver(fetcher, "https://plc.invalid", dev=True)
    doc = await dev.resolve(account.did)
    assert doc.signing_key is not None and doc.signing_key.alg == "ES256"
    production = DidResolver(Fetcher(dev=False), "https://plc.invalid", dev=False)
    with pytest.raises(ResolveError, match="TACK_DEV") as caught:
        await production.resolve(account.did)
    assert caught.value.reason == "bad_did"
    assert pds.hits["did.json"] == 1


async def test_private_address_is_refused_without_dev(plc: FakePlc) -> None:
    """A PLC URL on loopback (by name or address) is refused by the fetcher's address check outside dev mode."""
    account = plc.publish(Account())
    strict = Fetcher(dev=False, timeout_s=2)
    try:
        for plc_url in (
            plc.url.replace("http://127.0.0.1", "https://localhost"),
            plc.url.replace("http:", "https:"),
        ):
            resolver = DidResolver(strict, plc_url)
            with pytest.raises(ResolveError, match=r"private or reserved|not a public address") as caught:
                await resolver.resolve(account.did)
            assert caught.value.reason == "unavailable"
        assert plc.hits[account.did] == 0
    finally:
        await strict.close()


async def test_oversize_and_slow_documents_fail_in_bounded_time(plc: FakePlc, fetcher: Fetcher) -> None:
    """A document over 64 KiB, or one that takes longer than the timeout, is unavailable (not hung on)."""
    big, slow = plc.publish(Account()), plc.publish(Account())
    resolver = resolver_for(plc, fetcher)
    plc.pad_bytes = 70 << 10
    with pytest.raises(ResolveError, match="bytes") as caught:
        await resolver.resolve(big.did)
    assert caught.value.reason == "unavailable"
    plc.pad_bytes = 0
    plc.delay_s = 3
    started = asyncio.get_running_loop().time()
    with pytest.raises(ResolveError, match="no complete answer within 1s"):
        await resolver.resolve(slow.did)
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_document_for_another_did_is_invalid(plc: FakePlc, fetcher: Fetcher) -> None:
    """The PLC answering with someone else's document is refused as invalid."""
    account = plc.publish(Account())
    impostor = Account()
    plc.accounts[impostor.did] = account
    with pytest.raises(ResolveError, match="not the DID") as caught:
        await resolver_for(plc, fetcher).resolve(impostor.did)
    assert caught.value.reason == "invalid"


async def test_refresh_refetches_once_per_interval_and_keeps_a_fresh_document_on_failure(
    plc: FakePlc, fetcher: Fetcher
) -> None:
    """A forced refresh fetches at once, then not again within the interval; a failed refresh leaves the cached document."""
    account = plc.publish(Account())
    clock = Clock()
    resolver = resolver_for(plc, fetcher, clock, refresh_interval_s=30)
    old = await resolver.resolve(account.did)
    account.rotate()
    new = await resolver.refresh(account.did)
    assert new is not None and new.signing_key != old.signing_key
    assert await resolver.refresh(account.did) is None
    assert plc.hits[account.did] == 2
    clock.now += 31
    plc.delay_s = 3
    with pytest.raises(ResolveError):
        await resolver.refresh(account.did)
    plc.delay_s = 0
    assert (await resolver.resolve(account.did)).signing_key == new.signing_key
    assert plc.hits[account.did] == 3


async def test_concurrent_lookups_share_one_fetch_and_the_cache_is_bounded(
    plc: FakePlc, fetcher: Fetcher
) -> None:
    """Ten simultaneous lookups of one DID fetch once; with room for two entries, the oldest is evicted."""
    accounts = [plc.publish(Account()) for _ in range(3)]
    resolver = resolver_for(plc, fetcher, max_entries=2)
    plc.delay_s = 0.1
    docs = await asyncio.gather(*(resolver.resolve(accounts[0].did) for _ in range(10)))
    assert {d.did for d in docs} == {accounts[0].did}
    assert plc.hits[accounts[0].did] == 1
    plc.delay_s = 0
    for account in accounts:
        await resolver.resolve(account.did)
    await resolver.resolve(accounts[2].did)
    await resolver.resolve(accounts[0].did)
    assert plc.hits[accounts[0].did] == 2
    assert plc.hits[accounts[2].did] == 1
