"""The benchmark suite in its seconds-long form, so ``make bench`` cannot rot.

No floors here (the machine is shared): every figure must run and report sane numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import ROOT


pytestmark = pytest.mark.bench


FIGURES = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}


@pytest.mark.timeout(600)
def test_quick_bench_runs_every_figure_and_reports_sane_numbers(tmp_path: Path) -> None:
    """``python -m tests.bench --quick`` completes, prints the table and writes JSON with positive figures and limits."""
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "ratio = tack / limit" in done.stdout
    latest = json.loads((out / "latest.json").read_text())
    copies = list(out.glob("bench-*.json"))
    assert len(copies) == 1 and json.loads(copies[0].read_text()) == latest
    machine = latest["machine"]
    assert machine["cpus"] >= 1 and machine["python"] and machine["libraries"]["aiohttp"]
    rows = latest["rows"]
    assert {row["figure"] for row in rows} == FIGURES
    for row in rows:
        values = row["tack_runs"] + row["limit_runs"]
        assert values and all(math.isfinite(v) for v in values), row
        assert row["limit_runs"], f"figure {row['figure']} has no limit: {row['metric']}"
        if row["unit"] == "MB" and row["metric"] != "control plane RSS, idle":
            # RSS differences: finite and plausible; they may be ~0 at smoke sizes.
            assert all(-50 < v < 500 for v in values), row
        else:
            assert all(v > 0 for v in values), row
            assert row["ratio"] > 0, row
