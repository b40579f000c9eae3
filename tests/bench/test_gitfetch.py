"""The git-fetch benchmark hook (tests.bench.gitfetch) in its seconds-long form, so it cannot rot."""

from __future__ import annotations

import pytest

from tests.bench.gitfetch import measure


pytestmark = pytest.mark.bench


async def test_measure_reports_tack_and_bare_git_cold_and_warm() -> None:
    """Two runs of each series give positive p50/p99 for tack and the bare-git limit, cold and warm."""
    stats = await measure(runs=2)
    assert set(stats) == {"tack_cold", "git_cold", "tack_warm", "git_warm"}
    for series in stats.values():
        assert series.runs == 2
        assert 0 < series.p50_ms <= series.p99_ms < 30_000
