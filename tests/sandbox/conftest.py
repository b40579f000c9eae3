"""Fixtures of the simulator tests: a simulated knot and Jetstream on loopback, an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tack_sandbox.jetstream import SimulatedJetstream
from tack_sandbox.knot import SimulatedKnot


@pytest.fixture
async def knot() -> AsyncIterator[SimulatedKnot]:
    async with SimulatedKnot() as sim:
        yield sim


@pytest.fixture
async def jetstream() -> AsyncIterator[SimulatedJetstream]:
    async with SimulatedJetstream() as sim:
        yield sim


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
