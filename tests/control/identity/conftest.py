"""Fixtures of the identity tests: a fake PLC directory and a fake PDS on loopback, and a development fetcher."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tack_control.identity.fetch import FetchPolicy, SafeFetcher
from tests.fakes.atproto import FakePds, FakePlc


@pytest.fixture
async def plc() -> AsyncIterator[FakePlc]:
    """A fake PLC directory on loopback."""
    fake = FakePlc()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def pds() -> AsyncIterator[FakePds]:
    """A fake PDS on loopback."""
    fake = FakePds()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fetcher() -> AsyncIterator[SafeFetcher]:
    """A fetcher with TACK_DEV's policy (http and loopback allowed), 1 s per fetch."""
    f = SafeFetcher(FetchPolicy.for_dev(True, timeout_s=1.0))
    yield f
    await f.close()
