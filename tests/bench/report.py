"""Benchmark results: per-run values, medians, ratios to the limit, floors, the table and the JSON file."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import sqlite3
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


Better = Literal["higher", "lower"]
LIBRARIES = ("aiohttp", "websockets", "grpcio", "protobuf", "prometheus-client", "PyYAML")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Floor:
    """What a figure must reach: ``value`` bounds tack's median (``min``/``max``) or the ratio (``ratio``)."""

    kind: Literal["min", "max", "ratio"]
    value: float

    def met(self, tack: float, ratio: float | None) -> bool:
        """Whether the figure reaches the floor."""
        if self.kind == "min":
            return tack >= self.value
        if self.kind == "max":
            return tack <= self.value
        return ratio is not None and ratio >= self.value

    def text(self, unit: str) -> str:
        """How the floor reads in the table."""
        if self.kind == "ratio":
            return f"ratio >= {self.value:g}"
        return f"{'>=' if self.kind == 'min' else '<='} {self.value:g} {unit}"


@dataclass
class Row:
    """One figure: tack's value per run, the limit's per run (if any), and what it must reach."""

    figure: str
    metric: str
    unit: str
    better: Better
    tack_runs: list[float]
    limit_runs: list[float] = field(default_factory=list)
    floors: list[Floor] = field(default_factory=list)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tack(self) -> float:
        """Median of tack's runs."""
        return statistics.median(self.tack_runs)

    @property
    def limit(self) -> float | None:
        """Median of the limit's runs, if measured."""
        return statistics.median(self.limit_runs) if self.limit_runs else None

    @property
    def ratio(self) -> float | None:
        """tack / limit (medians)."""
        limit = self.limit
        if limit is None or limit == 0:
            return None
        return self.tack / limit

    @property
    def met(self) -> bool | None:
        """Whether every floor is met (None when the figure has none)."""
        if not self.floors:
            return None
        return all(f.met(self.tack, self.ratio) for f in self.floors)

    def as_json(self) -> dict[str, Any]:
        """The row with its medians, ratio and verdict."""
        out = asdict(self)
        out["floors"] = [{"kind": f.kind, "value": f.value, "text": f.text(self.unit)} for f in self.floors]
        out.update(tack=self.tack, limit=self.limit, ratio=self.ratio, floor_met=self.met)
        return out


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> str:
    """The results as a fixed-width text table (medians; ratio = tack / limit)."""
    header = ("fig", "metric", "unit", "tack", "limit", "ratio", "floor", "ok")
    lines = [header]
    for row in rows:
        verdict = {None: "", True: "yes", False: "NO"}[row.met]
        ratio = row.ratio
        lines.append(
            (
                row.figure,
                row.metric,
                row.unit,
                _num(row.tack),
                _num(row.limit),
                "-" if ratio is None else f"{ratio:.2f}",
                "; ".join(f.text(row.unit) for f in row.floors),
                verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {3, 4, 5}
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """The machine, Python and library versions the numbers were measured with."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gb": _mem_total_gb(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": versions,
        "load_average_at_start": list(os.getloadavg()),
    }


def write_results(out_dir: Path, document: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``latest.json`` and a timestamped copy into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    latest, copy = out_dir / "latest.json", out_dir / f"bench-{stamp}.json"
    copy.write_text(text)
    latest.write_text(text)
    return latest, copy
