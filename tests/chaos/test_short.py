"""A short chaos run inside `make test`: at least 5 faults of each kind, and no invariant broken."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosRun


pytestmark = pytest.mark.chaos


@pytest.mark.timeout(400)
async def test_short_chaos_run_breaks_no_invariant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under crashes, drops and stalls every workflow ends once, as scripted, and nothing starts twice."""
    seed = random.SystemRandom().randrange(1 << 32)
    figures = await ChaosRun(tmp_path, seed, seconds=30, min_faults=5).run()
    with capsys.disabled():
        print("\n" + figures.table())
    assert figures.violations == [], f"replay with: python -m tests.chaos --seed {seed}"
    assert min(figures.faults.values()) >= 5
    assert figures.workflows > 50
