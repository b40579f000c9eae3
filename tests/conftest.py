"""Fixtures shared by the end-to-end test modules; each module provides its own ``stack``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.appview import AppviewClient
from tests.support.stack import Stack


@pytest.fixture
async def appview(stack: Stack) -> AsyncIterator[AppviewClient]:
    """An appview-like client of the module's stack, already following /events."""
    client = AppviewClient(stack.cp.http)
    await client.connect_events()
    try:
        yield client
    finally:
        await client.close()
