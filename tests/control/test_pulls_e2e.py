"""Current Tangled pull requests end to end: a pull record on Jetstream → tack fetches the patch from the
author's PDS → the last commit of the series → workflows loaded from the knot at that commit → they run.

Real processes (the control plane, the stub provider), a current-protocol knot on loopback serving a real
repository over git smart HTTP, a fake PDS holding real gzipped ``git format-patch`` series of that
repository, a PLC directory holding every DID's document.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tack_sandbox.gitrepos import git
from tack_sandbox.pds import blob_cid
from tack_sandbox.pulls import PULL_NSID, PULL_STATUS_NSID, PullStatus, format_patch, pull_uri
from tests.fakes.atproto import FakePds
from tests.support.atproto import plc_did
from tests.support.current import World, make_world, until, workflow
from tests.support.pulls import pull_of, status_of
from tests.support.stack import OWNER, metric, stub_runs


pytestmark = pytest.mark.e2e

PR = 'when:\n  - event: ["pull_request"]\n    branch: ["main"]\n'
ON_CLOSE = 'when:\n  - event: ["pull_request"]\n    branch: ["main"]\n    types: ["closed"]\n'
WORKFLOWS = {
    ".tangled/workflows/ci.yml": workflow(PR),
    ".tangled/workflows/on-close.yml": workflow(ON_CLOSE),
    "src/main.c": "int main(void) { return 0; }\n",
}


@dataclass
class Pulls:
    """The world (its fake PDS holds everyone's records and patches) and a collaborator of the owner's repository."""

    world: World
    collaborator: str = ""
    rkeys: int = 0

    @property
    def pds(self) -> FakePds:
        return self.world.pds

    @property
    def repo_path(self) -> Path:
        assert self.world.knot.git is not None
        return self.world.knot.git.repo_path(self.world.repo_did)

    def rkey(self) -> str:
        self.rkeys += 1
        return f"3mr7m2f6ger{self.rkeys:02d}"

    def account(self) -> str:
        """A new account whose PDS is the fake PDS; its DID."""
        return self.world.account().did

    async def push_feature(self, text: str, branch: str = "feature") -> str:
        """A commit on ``branch`` (started from main) pushed to the knot's repository; its SHA."""
        pushed = await self.world.knot.push(
            self.world.repo_did, {"src/feature.c": text}, branch=branch, base="main"
        )
        return pushed.new_sha

    def write(self, author: str, rkey: str, record: dict[str, Any], operation: str = "create") -> None:
        """``author`` writes a pull record: in their PDS, and on Jetstream."""
        self.pds.put(author, PULL_NSID, rkey, record)
        self.world.stack.jetstream.commit(author, PULL_NSID, rkey, operation, record)

    async def open(self, author: str, blobs: list[bytes] | None = None, **extra: Any) -> tuple[str, str]:
        """``author`` opens a pull request of ``feature`` into ``main``; (AT-URI, rkey)."""
        key = self.rkey()
        uploads = blobs if blobs is not None else [await format_patch(self.repo_path, "main", "feature")]
        for blob in uploads:
            self.pds.upload(author, blob)
        self.write(
            author,
            key,
            pull_of(self.world.repo_did, uploads, **extra),
        )
        return pull_uri(author, key), key

    def status(self, actor: str, uri: str, status: PullStatus) -> None:
        """``actor`` writes a status record for the pull on Jetstream."""
        self.world.stack.jetstream.commit(
            actor, PULL_STATUS_NSID, self.rkey(), "create", status_of(uri, status)
        )

    def query(self, sql: str, *args: Any) -> list[Any]:
        with sqlite3.connect(self.world.stack.cp.db_path) as conn:
            return conn.execute(sql, args).fetchall()

    def events(self) -> list[tuple[str, str, str, str, str]]:
        """(uri, action, state, outcome, reason) of every pull event tack kept, oldest first."""
        return self.query("SELECT uri, action, state, outcome, reason FROM pull_events ORDER BY id")

    def decided(self) -> int:
        return len([e for e in self.events() if e[2] != "queued"])

    def runs(self) -> list[tuple[str, str, list[str]]]:
        """(commit, action, workflow names) of every pull request pipeline, oldest first."""
        out = []
        for rkey, kind, sha, _, _ in self.world.pipelines():
            if kind == "pull_request":
                [record] = self.query("SELECT record FROM pipelines WHERE rkey=?", rkey)[0]
                out.append(
                    (
                        sha,
                        json.loads(record)["triggerMetadata"]["pullRequest"]["action"],
                        sorted(self.world.workflows(rkey)),
                    )
                )
        return out


@pytest.fixture
async def pulls(tmp_path: Path) -> AsyncIterator[Pulls]:
    """The owner's repository (with pull request workflows on main) and a collaborator named by the owner."""
    world = await make_world(tmp_path, control_env={"TACK_JETSTREAM_REWIND": "600"})
    try:
        p = Pulls(world)
        p.collaborator = p.account()
        world.add_collaborator(p.collaborator, "3mcollab00001")
        await world.knot.push(world.repo_did, WORKFLOWS)
        await until(lambda: [s for _, s, _ in world.pushes()] == ["done"], "the push to main is decided")
        await until(lambda: world.collaborators() == {p.collaborator}, "the collaborator is known")
        yield p
    finally:
        await world.stop()


async def test_a_collaborators_pull_runs_at_its_head_then_again_per_round_and_status(pulls: Pulls) -> None:
    """opened runs ci.yml at the branch head; a new round at the new head; replays run nothing; close runs
    the types: [closed] workflow, reopen the default set, each once."""
    head = await pulls.push_feature("int feature;\n")
    uri, key = await pulls.open(pulls.collaborator)
    await until(lambda: len(pulls.runs()) == 1, "the pull request runs")
    assert pulls.runs() == [(head, "opened", ["ci.yml"])]
    [(rkey, *_)] = [p for p in pulls.world.pipelines() if p[1] == "pull_request"]
    await until(lambda: pulls.world.workflows(rkey)["ci.yml"][0] == "success", "ci.yml succeeds")

    second = await pulls.push_feature("int feature = 2;\n")
    record = pulls.pds.records[(pulls.collaborator, PULL_NSID, key)]
    blob = await format_patch(pulls.repo_path, "main", "feature")
    pulls.pds.upload(pulls.collaborator, blob)
    new_round = pull_of(pulls.world.repo_did, [blob])["rounds"]
    pulls.write(pulls.collaborator, key, {**record, "rounds": [*record["rounds"], *new_round]}, "update")
    await until(lambda: len(pulls.runs()) == 2, "the new round runs")
    assert pulls.runs()[1] == (second, "synchronize", ["ci.yml"])

    # Jetstream delivers everything again (a reconnect rewinds the cursor past both events).
    await pulls.world.stack.jetstream.drop_connections()
    await pulls.world.stack.jetstream.wait_connected(1, timeout=10)
    await until(lambda: pulls.decided() >= 4, "the replayed events are decided")
    assert [(a, s, o) for u, a, s, o, _ in pulls.events()] == [
        ("opened", "done", "pipeline"),
        ("synchronize", "done", "pipeline"),
        ("opened", "skipped", "duplicate"),
        ("synchronize", "skipped", "duplicate"),
    ]

    pulls.status(pulls.collaborator, uri, "closed")
    await until(lambda: len(pulls.runs()) == 3, "closing runs the closed workflow")
    pulls.status(OWNER, uri, "open")
    await until(lambda: len(pulls.runs()) == 4, "reopening runs the default set")
    assert pulls.runs()[2:] == [(second, "closed", ["on-close.yml"]), (second, "reopened", ["ci.yml"])]
    await until(lambda: stub_runs(pulls.world.stack) == 4, "the stub ran each workflow")
    await asyncio.sleep(1.0)
    assert len(pulls.runs()) == 4 and stub_runs(pulls.world.stack) == 4
    assert await metric(pulls.world.stack, 'tack_pull_events_total{outcome="pipeline"}') == 4
    assert await metric(pulls.world.stack, 'tack_pull_events_total{outcome="duplicate"}') == 2


async def test_outsiders_and_forks_pulls_run_nothing(pulls: Pulls) -> None:
    """A branch pull by someone without push rights and a collaborator's fork pull are kept, skipped with the reason."""
    await pulls.push_feature("int feature;\n")
    outsider = pulls.account()
    await pulls.open(outsider)
    await pulls.open(pulls.collaborator, source_repo=plc_did())
    await until(lambda: pulls.decided() == 2, "both are decided")
    assert [(s, o, r) for _, _, s, o, r in pulls.events()] == [
        ("skipped", "not_authorized", f"{outsider} has no push rights on {pulls.world.repo_did}"),
        (
            "skipped",
            "not_branch",
            "a fork's pull request or a pasted patch: it runs only by Run CI in Tangled",
        ),
    ]
    await asyncio.sleep(1.0)
    assert pulls.runs() == [] and stub_runs(pulls.world.stack) == 0
    assert pulls.pds.hits["getBlob"] == 0


async def test_unusable_patches_and_a_stalled_pds_are_logged_rejections_and_tack_keeps_serving(
    pulls: Pulls,
) -> None:
    """CID mismatch, gzip bomb, truncated gzip, a series without From line: each rejected with its reason,
    counted and logged; a PDS that stalls is timed out and retried; a good pull after all of them runs."""
    head = await pulls.push_feature("int feature;\n")
    good = await format_patch(pulls.repo_path, "main", "feature")
    series = gzip.decompress(await format_patch(pulls.repo_path, "main", "feature"))
    bomb = gzip.compress(series + b"\0" * (65 << 20), mtime=0)
    plain = gzip.compress((await git("diff", "main", "feature", cwd=pulls.repo_path)).encode(), mtime=0)
    replaced = gzip.compress(series, mtime=1)  # the same series, other bytes than the good pull's
    mismatch_uri, _ = await pulls.open(pulls.collaborator, blobs=[replaced])
    pulls.pds.blob_replaced[blob_cid(replaced)] = gzip.compress(b"not the uploaded bytes")
    for blob in (bomb, good[: len(good) // 2], plain):
        await pulls.open(pulls.collaborator, blobs=[blob])
    staller = pulls.account()
    pulls.world.add_collaborator(staller, "3mcollab00002")
    await until(lambda: staller in pulls.world.collaborators(), "the second collaborator is known")
    pulls.pds.blob_stalling.add(staller)
    await pulls.open(staller, blobs=[good])
    async with aiohttp.ClientSession() as session:
        await until(lambda: pulls.decided() == 4, "the four bad patches are rejected")
        assert [(s, o) for _, _, s, o, _ in pulls.events()[:4]] == [
            ("rejected", "cid_mismatch"),
            ("rejected", "patch_too_large"),
            ("rejected", "truncated"),
            ("rejected", "no_commits"),
        ]
        async with session.get(pulls.world.stack.cp.http + "/readyz") as resp:
            assert resp.status == 200  # while the PDS stalls
    await pulls.open(pulls.collaborator)
    await until(lambda: len(pulls.runs()) == 1, "a good pull still runs", timeout=30)
    assert pulls.runs() == [(head, "opened", ["ci.yml"])]
    _, _, state, outcome, reason = pulls.events()[4]
    assert (state, outcome) == ("queued", "timeout") and "no complete answer within 10s" in reason
    assert all(reason for *_, reason in pulls.events()[:4])
    log = pulls.world.stack.cp.output()
    for outcome in ("cid_mismatch", "patch_too_large", "truncated", "no_commits"):
        assert await metric(pulls.world.stack, f'tack_pull_events_total{{outcome="{outcome}"}}') == 1
        assert f'"outcome": "{outcome}"' in log
    assert mismatch_uri in log and "pull request event will be retried" in log


async def test_a_pull_opened_while_tack_was_down_runs_once_when_it_returns(pulls: Pulls) -> None:
    """tack stopped, a pull opened meanwhile on Jetstream, tack started: the replayed event runs, once."""
    head = await pulls.push_feature("int feature;\n")
    assert pulls.world.stack.cp.terminate() == 0
    await pulls.open(pulls.collaborator)
    await pulls.world.stack.cp.start_ready()
    await until(lambda: len(pulls.runs()) == 1, "the pull opened while tack was down runs")
    assert pulls.runs() == [(head, "opened", ["ci.yml"])]
    await until(lambda: stub_runs(pulls.world.stack) == 1, "the stub runs it")
    pulls.world.stack.cp.kill9()  # and once more, killed: everything is replayed again
    await pulls.world.stack.cp.start_ready()
    await until(lambda: pulls.decided() == 2, "the replayed event is decided")
    assert [(a, s, o) for _, a, s, o, _ in pulls.events()] == [
        ("opened", "done", "pipeline"),
        ("opened", "skipped", "duplicate"),
    ]
    await asyncio.sleep(1.0)
    assert len(pulls.runs()) == 1 and stub_runs(pulls.world.stack) == 1
