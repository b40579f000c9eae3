"""Loading ``.tangled/workflows`` over loopback: tack's ``WorkflowFetcher`` against bare ``git fetch``.

The limit for the "push → pending" benchmark: whatever tack does, a push cannot become ``pending``
sooner than git can fetch the same commit's trees and workflow files from the knot. ``measure``
times both, cold (an empty cache directory each time) and warm (the repository cached, a new commit
pushed before each run, as pushes arrive), against the sandbox git server (``git http-backend``).

    python -m tests.bench.gitfetch [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tack_control.ingest.gitcli import base_env
from tack_control.ingest.gitfetch import FetchLimits, WorkflowFetcher
from tack_sandbox import gitrepos
from tack_sandbox.gitserver import GitServer
from tests.bench.report import percentile


REPO_DID = "did:plc:benchgitfetch00000000000"
BUILD_YML = "engine: tack\nwhen:\n  - event: push\n    branch: main\ntack: {stub: {}}\n"
FILES: dict[str, gitrepos.FileContent] = {
    ".tangled/workflows/build.yml": BUILD_YML,
    ".tangled/workflows/lint.yml": "engine: tack\ntack: {stub: {}}\n",
    "src/main.c": "int main(void) { return 0; }\n" * 200,
    "README.md": "bench\n",
}


@dataclass(frozen=True)
class Stats:
    """p50 and p99 of a series of durations, in milliseconds."""

    p50_ms: float
    p99_ms: float
    runs: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        """The stats of ``seconds``."""
        ms = [s * 1000 for s in seconds]
        return cls(round(percentile(ms, 50), 1), round(percentile(ms, 99), 1), len(ms))


async def bare_git_fetch(url: str, directory: Path, sha: str, blobs: list[str]) -> float:
    """Seconds for git alone to fetch ``sha``'s trees and then ``blobs`` into ``directory`` (the limit)."""
    env = base_env(directory.parent)

    async def git(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec("git", *args, env=env)
        if await proc.wait() != 0:
            raise RuntimeError(f"git {' '.join(args)} failed")

    started = time.monotonic()
    if not directory.exists():
        await git("init", "--quiet", "--bare", "--template=", str(directory))
        await git("--git-dir", str(directory), "remote", "add", "origin", url)
    fetch = ["--git-dir", str(directory), "fetch", "--quiet", "--filter=blob:none", "--no-tags"]
    await git(*fetch, "--depth=1", "--no-write-fetch-head", "origin", sha)
    await git(*fetch, "--no-write-fetch-head", "origin", *blobs)
    return time.monotonic() - started


async def workflow_blobs(repo: Path, sha: str) -> list[str]:
    """The blob ids of the workflow files at ``sha`` (read on the server side, outside the timing)."""
    listing = await gitrepos.git("ls-tree", sha, ".tangled/workflows/", cwd=repo)
    return [line.split()[2] for line in listing.splitlines()]


async def measure(runs: int = 50) -> dict[str, Stats]:
    """tack's load and bare git, cold and warm, over ``runs`` runs each."""
    results: dict[str, list[float]] = {"tack_cold": [], "git_cold": [], "tack_warm": [], "git_warm": []}
    with tempfile.TemporaryDirectory(prefix="tack-bench-git-") as tmp:
        root = Path(tmp)
        async with GitServer(root / "knot") as server:
            repo = await gitrepos.create_repository(server.repo_path(REPO_DID))
            push = await gitrepos.commit(repo, FILES)
            blobs = await workflow_blobs(repo, push.new_sha)
            limits = FetchLimits()
            for i in range(runs):
                fetcher = WorkflowFetcher(root / f"cold-{i}", dev=True, limits=limits)
                results["tack_cold"].append(
                    (await fetcher.fetch(server.hostname, REPO_DID, push.new_sha)).timings.total
                )
                results["git_cold"].append(
                    await bare_git_fetch(server.url(REPO_DID), root / f"git-cold-{i}", push.new_sha, blobs)
                )
                shutil.rmtree(root / f"cold-{i}")
                shutil.rmtree(root / f"git-cold-{i}")
            warm = WorkflowFetcher(root / "warm", dev=True, limits=limits)
            await warm.fetch(server.hostname, REPO_DID, push.new_sha)
            await bare_git_fetch(server.url(REPO_DID), root / "git-warm", push.new_sha, blobs)
            for i in range(runs):
                push = await gitrepos.commit(repo, {".tangled/workflows/build.yml": f"{BUILD_YML}# {i}\n"})
                blobs = await workflow_blobs(repo, push.new_sha)
                results["tack_warm"].append(
                    (await warm.fetch(server.hostname, REPO_DID, push.new_sha)).timings.total
                )
                results["git_warm"].append(
                    await bare_git_fetch(server.url(REPO_DID), root / "git-warm", push.new_sha, blobs)
                )
    return {name: Stats.of(series) for name, series in results.items()}


def main() -> None:
    """Print the stats as JSON."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.gitfetch", description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    stats = asyncio.run(measure(args.runs))
    print(json.dumps({"cpus": os.cpu_count(), **{k: vars(v) for k, v in stats.items()}}, indent=2))


if __name__ == "__main__":
    main()
