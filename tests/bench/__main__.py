"""``python -m tests.bench`` (``make bench``): run the benchmarks, print the table, write the JSON results."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tests.bench import ci, figures, pushes
from tests.bench.figures import FULL, QUICK, Bench
from tests.bench.report import Row, machine, table, write_results
from tests.bench.stack import BenchStack
from tests.support.procs import ROOT


FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10")
STACKED: dict[str, Callable[[Bench, BenchStack], Awaitable[list[Row]]]] = {
    "1": figures.trigger_throughput,
    "2": figures.trigger_latency,
    "3": figures.events_fanout,
    "5": figures.logs_streaming,
    "6": figures.memory,
    "9": ci.ci_logs,
}
TITLES = {
    "1": "trigger throughput",
    "2": "trigger latency at a steady rate",
    "3": "/events fan-out",
    "4": "/events backfill",
    "5": "/logs streaming",
    "6": "memory",
    "7": "provider RPC",
    "8": "CI API queries",
    "9": "CI API log subscription (CBOR)",
    "10": "push -> pending on current Tangled (workflows loaded over git)",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a seconds-long smoke version (what make test runs)"
    )
    parser.add_argument("--runs", type=int, help="repetitions per measurement (default 3; 1 with --quick)")
    parser.add_argument(
        "--only", default=",".join(FIGURES), help="comma-separated figures to run (default: all)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="results directory")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (process and worker logs)"
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a floor is missed")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    return args


def progress(message: str) -> None:
    """Progress goes to stderr; the table to stdout."""
    print(message, file=sys.stderr, flush=True)


async def run(bench: Bench, only: list[str]) -> list[Row]:
    """Every selected figure, in an order that shares one stack where possible."""
    rows: list[Row] = []
    if "7" in only:
        progress(f"figure 7: {TITLES['7']}")
        rows += await figures.provider_rpc(bench)
    if "4" in only:
        progress(f"figure 4: {TITLES['4']}")
        rows += await figures.events_backfill(bench)
    if "8" in only:
        progress(f"figure 8: {TITLES['8']}")
        rows += await ci.ci_queries(bench)
    if "10" in only:
        progress(f"figure 10: {TITLES['10']}")
        rows += await pushes.push_latency(bench)
    stacked = [f for f in ("1", "2", "3", "5", "9", "6") if f in only]
    if stacked:
        stack = BenchStack(bench.workdir / "stack")
        await stack.start()
        try:
            for figure in stacked:
                progress(f"figure {figure}: {TITLES[figure]}")
                rows += await STACKED[figure](bench, stack)
        finally:
            await stack.stop()
    return sorted(rows, key=lambda r: int(r.figure))


def main(argv: list[str]) -> int:
    """Run, report, write the results; the exit status."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.runs is not None:
        sizes = replace(sizes, runs=max(1, args.runs))
    only = args.only.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="tack-bench-"))
    started = time.time()
    about = machine()
    progress(
        f"tack benchmarks ({'quick' if args.quick else 'full'}, {sizes.runs} runs each); scratch {workdir}"
    )
    try:
        rows = asyncio.run(run(Bench(sizes, workdir, progress), only))
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = table(rows)
    missed = [r for r in rows if r.met is False]
    document: dict[str, Any] = {
        "suite": "tack make bench",
        "command": "python -m tests.bench " + " ".join(argv),
        "quick": args.quick,
        "figures": only,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "sizes": asdict(sizes),
        "machine": about,
        "load_average_at_end": list(os.getloadavg()),
        "notes": [
            "Values are medians over the runs; per-run values are in tack_runs / limit_runs.",
            "ratio = tack / limit, both measured in the same run on the same machine; for throughput higher is"
            " better, for latency and memory lower is better.",
            "A workflow's statuses are published at least 1 s apart by design (the appview orders them by"
            " whole seconds), so trigger -> terminal status takes >= 2 s; figure 1 is a completion rate with"
            " many workflows in flight, not a latency.",
        ],
        "rows": [r.as_json() for r in rows],
        "table": text,
    }
    latest, copy = write_results(args.out, document)
    print(text)
    print()
    print("ratio = tack / limit (medians of each run). Statuses of one workflow are >= 1 s apart by design:")
    print("figure 1 is a completion rate with many workflows in flight, not a latency.")
    if missed:
        print("floors missed: " + "; ".join(f"{r.figure} {r.metric}" for r in missed))
    print(f"results: {latest} (copy: {copy.name}); took {document['duration_s']:.0f} s")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
