"""``python -m tests.chaos``: ``make chaos`` and ``make soak``."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from tests.chaos.harness import ChaosRun


def main() -> int:
    """Run the harness and print its figures; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to drive load and faults")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (printed by every run)")
    parser.add_argument(
        "--min-faults", type=int, default=5, help="keep injecting until each kind reached this"
    )
    parser.add_argument("--soak", action="store_true", help="steady load; report memory and fds over time")
    parser.add_argument("--no-buildkite", action="store_true", help="leave the Buildkite provider out")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"chaos: seed {seed} (replay with --seed {seed})", flush=True)
    with tempfile.TemporaryDirectory(prefix="tack-chaos-") as tmp:
        run = ChaosRun(
            Path(tmp),
            seed,
            args.seconds,
            min_faults=0 if args.soak else args.min_faults,
            soak=args.soak,
            buildkite=not args.no_buildkite,
        )
        figures = asyncio.run(run.run())
    print(figures.table())
    if args.soak:
        print(soak_report(figures.samples))
    return 1 if figures.violations else 0


def soak_report(samples: list[dict[str, float]]) -> str:
    """Memory and fd counts over time, and their growth after warm-up (the first quarter)."""
    if not samples:
        return "no samples"
    keys = sorted(k for k in samples[0] if k != "t")
    lines = ["  t(s)  " + "  ".join(f"{k:>14}" for k in keys)]
    step = max(1, len(samples) // 20)
    lines += [f"{s['t']:6.0f}  " + "  ".join(f"{s.get(k, 0):14.1f}" for k in keys) for s in samples[::step]]
    warm = samples[len(samples) // 4]
    last = samples[-1]
    lines.append(
        "growth after warm-up: " + ", ".join(f"{k} {last.get(k, 0) - warm.get(k, 0):+.1f}" for k in keys)
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
