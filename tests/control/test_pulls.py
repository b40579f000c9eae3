"""Pull requests, decided by the worker against a fake PDS on loopback: what runs, what is skipped, what is
rejected and why, once per (pull, occasion, commit), with real format-patch series of a real repository."""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tack_common.sqlite import Transaction
from tack_control.engine.db import get_meta
from tack_control.engine.eventlog import EventLog
from tack_control.engine.pipelines import Pipelines
from tack_control.engine.statuses import StatusBook
from tack_control.identity.pds import PdsReader
from tack_control.identity.resolver import DidResolver
from tack_control.ingest.jetstream import CURSOR_KEY, JetstreamIngest
from tack_control.ingest.knotapi import KnotApi
from tack_control.ingest.minting import LoadFailed, Minter
from tack_control.ingest.pulls import PullIntake, PullWorker
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Registry
from tack_control.netguard import Fetcher
from tack_sandbox.gitrepos import commit as git_commit, create_repository, git
from tack_sandbox.pulls import PULL_NSID, PULL_STATUS_NSID, PullStatus, format_patch, pull_uri
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account
from tests.support.pulls import pull_of, status_of
from tests.support.samples import HOST, OWNER, apply, commit, member_record, repo_record


REPO_DID = "did:plc:repo2ige3rnslshcvnkjbpaaa"
COLLAB = "did:plc:collab2ige3rnslshcvnkjbp"
OUTSIDER = "did:plc:outsider3rnslshcvnkjbp"
MEMBER_DID = "did:plc:member2ige3rnslshcvnkjbp"
KNOT = "127.0.0.1:9"  # nothing listens: the default branch is "" and no test reaches a knot
PR_WORKFLOWS = {
    "ci.yml": 'when:\n  - event: ["pull_request"]\n    branch: ["main"]\nengine: tack\ntack:\n  stub: {}\n',
    "on-close.yml": (
        'when:\n  - event: ["pull_request"]\n    branch: ["main"]\n    types: ["closed"]\n'
        "engine: tack\ntack:\n  stub: {}\n"
    ),
}


@dataclass
class Series:
    """A real repository with a ``feature`` branch of two commits on ``main``."""

    repo: Path
    shas: list[str]

    async def blob(self) -> bytes:
        """The gzipped format-patch series of ``feature`` against ``main``."""
        return await format_patch(self.repo, "main", "feature")

    async def add_commit(self, text: str) -> str:
        """One more commit on ``feature``; its SHA."""
        pushed = await git_commit(self.repo, {"a.txt": text}, branch="feature")
        self.shas.append(pushed.new_sha)
        return pushed.new_sha


@dataclass
class Loads:
    """The worker's workflow loader: the files it answers, the commits it was asked for, failures to raise."""

    files: dict[str, str] = field(default_factory=lambda: dict(PR_WORKFLOWS))
    asked: list[str] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    async def __call__(self, knot: str, repo_did: str, sha: str) -> Sequence[tuple[str, str]]:
        self.asked.append(sha)
        if self.failures:
            raise self.failures.pop(0)
        return sorted(self.files.items())


@dataclass
class Pulls:
    """A registry with the owner's verified repository and a collaborator, the intake and the worker."""

    conn: sqlite3.Connection
    registry: Registry
    intake: PullIntake
    worker: PullWorker
    pds: FakePds
    plc: FakePlc
    loads: Loads
    series: Series
    rkeys: int = 0

    def event(
        self, did: str, collection: str, operation: str, record: dict[str, Any] | None, rkey: str
    ) -> str:
        """Offer a Jetstream event to the intake, as the Jetstream follower does; the outcome label."""
        with Transaction(self.conn) as tx:
            return self.intake.accept(tx, commit(did, collection, rkey, operation, record))

    async def open(
        self,
        author: str = COLLAB,
        *,
        blobs: Sequence[bytes] | None = None,
        rkey: str | None = None,
        **extra: Any,
    ) -> str:
        """``author`` opens a branch pull request (its blobs uploaded to their PDS); returns its AT-URI."""
        key = rkey or self.rkey()
        uploads = list(blobs) if blobs is not None else [await self.series.blob()]
        for blob in uploads:
            self.pds.upload(author, blob)
        record = pull_of(REPO_DID, uploads, **extra)
        self.pds.put(author, PULL_NSID, key, record)
        self.event(author, PULL_NSID, "create", record, key)
        return pull_uri(author, key)

    async def new_round(self, author: str, rkey: str, blob: bytes) -> None:
        """``author`` adds a round to their pull request."""
        self.pds.upload(author, blob)
        record = self.pds.records[(author, PULL_NSID, rkey)]
        record = {
            **record,
            "rounds": [
                *record["rounds"],
                pull_of(REPO_DID, [blob])["rounds"][0],
            ],
        }
        self.pds.put(author, PULL_NSID, rkey, record)
        self.event(author, PULL_NSID, "update", record, rkey)

    def status(self, actor: str, uri: str, status: PullStatus, rkey: str | None = None) -> str:
        """``actor`` writes a status record for the pull; returns its rkey."""
        key = rkey or self.rkey()
        self.event(actor, PULL_STATUS_NSID, "create", status_of(uri, status), key)
        return key

    def rkey(self) -> str:
        self.rkeys += 1
        return f"3mr7m2f6ger{self.rkeys:02d}"

    async def decide(self) -> None:
        """Decide every queued event now, retries included."""
        self.conn.execute("UPDATE pull_events SET next_attempt_ns=0 WHERE state='queued'")
        self.conn.commit()
        await self.worker.work_due()

    def events(self) -> list[tuple[str, str, str, str, int]]:
        """(action, state, outcome, reason, attempts) of every event, oldest first."""
        return self.conn.execute(
            "SELECT action, state, outcome, reason, attempts FROM pull_events ORDER BY id"
        ).fetchall()

    def pipelines(self) -> list[tuple[str, dict[str, Any], list[str]]]:
        """(commit, pullRequest trigger, workflow names) of every pipeline, oldest first."""
        out = []
        for rkey, sha, record in self.conn.execute(
            "SELECT rkey, commit_sha, record FROM pipelines ORDER BY created_ns"
        ).fetchall():
            names = [
                r[0]
                for r in self.conn.execute("SELECT name FROM workflows WHERE rkey=? ORDER BY name", (rkey,))
            ]
            out.append((sha, json.loads(record)["triggerMetadata"]["pullRequest"], names))
        return out


async def make_series(root: Path) -> Series:
    repo = await create_repository(root / "repo.git")
    await git_commit(
        repo, {"a.txt": "one\n", **{f".tangled/workflows/{n}": t for n, t in PR_WORKFLOWS.items()}}
    )
    shas = [
        (await git_commit(repo, {"a.txt": text}, branch="feature", base="main")).new_sha
        for text in ("two\n", "three\n")
    ]
    return Series(repo, shas)


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("tack_pull_events_total", {"outcome": outcome}) or 0.0


@pytest.fixture
async def pulls(tmp_path: Path, conn: sqlite3.Connection, plc: FakePlc, pds: FakePds) -> AsyncIterator[Pulls]:
    """The owner's repository registered and verified here, COLLAB a collaborator on it, everyone's PDS the fake."""
    registry = Registry(conn, HOST, OWNER)
    apply(registry, commit(OWNER, MEMBER, "m1", record=member_record(MEMBER_DID)))
    apply(registry, commit(OWNER, REPO, "r1", record=repo_record(knot=KNOT, repo_did=REPO_DID)))
    with Transaction(conn) as tx:
        registry.settle(tx, registry.pending(time.time_ns())[0], True)
    collaborator = {"subject": COLLAB, "repo": REPO_DID, "createdAt": "2026-07-01T00:00:00Z"}
    apply(registry, commit(OWNER, COLLABORATOR, "c1", record=collaborator))
    for did in (OWNER, COLLAB, OUTSIDER, MEMBER_DID):
        plc.publish(Account(did=did, pds=pds.url))
    fetcher = Fetcher(dev=True, timeout_s=1.0)
    resolver = DidResolver(fetcher, plc.url, dev=True)
    events = EventLog(conn)
    book = StatusBook(conn, events)
    loads = Loads()
    worker = PullWorker(
        registry,
        book,
        Pipelines(book, events),
        Minter(KnotApi(fetcher.get_json, dev=True), ["stub"], None),
        loads,
        resolver,
        PdsReader(resolver, fetcher),
        fetcher,
        lambda: None,
        max_attempts=3,
    )
    yield Pulls(conn, registry, PullIntake(registry), worker, pds, plc, loads, await make_series(tmp_path))
    await fetcher.close()


async def test_a_collaborators_branch_pull_runs_at_the_last_commit_of_the_series(pulls: Pulls) -> None:
    """opened: the pipeline is at the source branch head (the last patch's commit), with the stock trigger plus ``pull``."""
    before = counted("pipeline")
    uri = await pulls.open()
    await pulls.decide()
    [(sha, trigger, names)] = pulls.pipelines()
    assert sha == pulls.series.shas[-1]
    assert trigger == {
        "action": "opened",
        "pull": uri,
        "sourceBranch": "feature",
        "sourceSha": pulls.series.shas[-1],
        "targetBranch": "main",
    }
    assert names == ["ci.yml"]  # on-close.yml waits for types: [closed]
    assert pulls.loads.asked == [sha]
    assert pulls.events() == [("opened", "done", "pipeline", "", 0)]
    assert counted("pipeline") == before + 1


async def test_replays_and_edits_run_once_and_a_new_round_runs_again(pulls: Pulls) -> None:
    """The same create again, and an edit adding no round, run nothing; a new round runs at its new commit."""
    uri = await pulls.open(rkey="3mr7m2f6gerpr")
    record = pulls.pds.records[(COLLAB, PULL_NSID, "3mr7m2f6gerpr")]
    pulls.event(COLLAB, PULL_NSID, "create", record, "3mr7m2f6gerpr")  # a Jetstream replay
    pulls.event(COLLAB, PULL_NSID, "update", {**record, "title": "Better title"}, "3mr7m2f6gerpr")
    await pulls.decide()
    assert [(s, o) for _, s, o, _, _ in pulls.events()] == [
        ("done", "pipeline"),
        ("skipped", "duplicate"),
        ("skipped", "duplicate"),
    ]
    new_sha = await pulls.series.add_commit("four\n")
    await pulls.new_round(COLLAB, "3mr7m2f6gerpr", await pulls.series.blob())
    await pulls.decide()
    shas = [(sha, trigger["action"]) for sha, trigger, _ in pulls.pipelines()]
    assert shas == [(pulls.series.shas[1], "opened"), (new_sha, "synchronize")]
    runs = pulls.conn.execute("SELECT occasion, sha FROM pull_runs WHERE uri=? ORDER BY received_ns", (uri,))
    assert runs.fetchall() == [("round 1", pulls.series.shas[1]), ("round 2", new_sha)]


async def test_status_changes_follow_types_and_each_status_record_runs_once(pulls: Pulls) -> None:
    """closed runs the types: [closed] workflow, reopened the default set; a replayed status runs nothing, a new one runs."""
    uri = await pulls.open()
    await pulls.decide()
    closed = pulls.status(COLLAB, uri, "closed")
    pulls.status(OWNER, uri, "open")
    pulls.status(COLLAB, uri, "closed", rkey=closed)  # replayed
    pulls.status(COLLAB, uri, "closed")  # closed again, later
    await pulls.decide()
    assert [(t["action"], names) for _, t, names in pulls.pipelines()] == [
        ("opened", ["ci.yml"]),
        ("closed", ["on-close.yml"]),
        ("reopened", ["ci.yml"]),
        ("closed", ["on-close.yml"]),
    ]
    assert [o for _, _, o, _, _ in pulls.events()] == [
        "pipeline",
        "pipeline",
        "pipeline",
        "duplicate",
        "pipeline",
    ]
    assert pulls.pds.hits["getRecord"] == 4  # each status event reads the pull from its author's PDS


async def test_merged_with_no_workflow_for_it_runs_nothing_and_is_remembered(pulls: Pulls) -> None:
    """merged matches no workflow here: the event is done with the reason, and its replay is a duplicate."""
    uri = await pulls.open()
    key = pulls.status(OWNER, uri, "merged")
    pulls.status(OWNER, uri, "merged", rkey=key)
    await pulls.decide()
    assert [(a, s, o, r) for a, s, o, r, _ in pulls.events()][1:] == [
        ("merged", "done", "no_workflows", "no workflow matched"),
        (
            "merged",
            "skipped",
            "duplicate",
            f"already decided for {pulls.series.shas[-1]} (status {OWNER}/{key})",
        ),
    ]


async def test_intake_keeps_what_may_concern_this_spindle_only(pulls: Pulls) -> None:
    """Pulls into other repositories, 2025-style records, deletes, status updates and strangers' statuses are not kept."""
    blob = await pulls.series.blob()
    ours = pull_of(REPO_DID, [blob])
    elsewhere = pull_of("did:plc:elsewhere3rnslshcvnkjbp", [blob], source_branch="f")
    legacy = {**ours, "target": {"repo": f"at://{OWNER}/sh.tangled.repo/hello", "branch": "main"}}
    uri = pull_uri(OUTSIDER, "3mr7m2f6gerzz")
    assert pulls.event(OUTSIDER, PULL_NSID, "create", ours, "3mr7m2f6gerzz") == "pull_queued"
    assert (
        pulls.event(OUTSIDER, PULL_NSID, "create", {"target": "nonsense"}, "3mr7m2f6geryy")
        == "pull_elsewhere"
    )
    assert pulls.event(COLLAB, PULL_NSID, "create", elsewhere, "3mr7m2f6gerxx") == "pull_elsewhere"
    assert pulls.event(COLLAB, PULL_NSID, "create", legacy, "3mr7m2f6gerww") == "pull_elsewhere"
    assert pulls.event(COLLAB, PULL_NSID, "delete", None, "3mr7m2f6gerxx") == "pull_ignored"
    # A status needs writer and pull author who may push somewhere here.
    assert pulls.event(OUTSIDER, PULL_STATUS_NSID, "create", status_of(uri, "open"), "s1") == "pull_elsewhere"
    own = pull_uri(COLLAB, "3mr7m2f6gerxx")
    assert pulls.event(OWNER, PULL_STATUS_NSID, "create", status_of(uri, "closed"), "s2") == "pull_elsewhere"
    assert (
        pulls.event(MEMBER_DID, PULL_STATUS_NSID, "create", status_of(own, "closed"), "s3")
        == "pull_elsewhere"
    )
    assert pulls.event(OWNER, PULL_STATUS_NSID, "update", status_of(own, "closed"), "s4") == "pull_ignored"
    draft = {**status_of(own, "open"), "status": "sh.tangled.repo.pull.status.draft"}
    assert pulls.event(OWNER, PULL_STATUS_NSID, "create", draft, "s5") == "pull_ignored"
    assert pulls.event(OWNER, PULL_STATUS_NSID, "create", status_of(own, "closed"), "s6") == "pull_queued"
    assert [a for a, *_ in pulls.events()] == ["opened", "closed"]


async def test_outsiders_and_forks_run_nothing_and_cost_no_fetch(pulls: Pulls) -> None:
    """An outsider's branch pull, a collaborator's fork pull and a pasted patch are skipped with the reason."""
    await pulls.open(OUTSIDER)
    await pulls.open(source_repo="did:plc:fork2ige3rnslshcvnkjbpaa")
    blob = await pulls.series.blob()
    pulls.pds.upload(COLLAB, blob)
    pasted = pull_of(REPO_DID, [blob], source_branch=None)
    pulls.event(COLLAB, PULL_NSID, "create", pasted, "3mr7m2f6gerpp")
    uri = await pulls.open()
    pulls.status(OUTSIDER, uri, "closed")  # not kept: the outsider may push nowhere here
    await pulls.decide()
    assert [(s, o, r) for _, s, o, r, _ in pulls.events()][:3] == [
        ("skipped", "not_authorized", f"{OUTSIDER} has no push rights on {REPO_DID}"),
        (
            "skipped",
            "not_branch",
            "a fork's pull request or a pasted patch: it runs only by Run CI in Tangled",
        ),
        (
            "skipped",
            "not_branch",
            "a fork's pull request or a pasted patch: it runs only by Run CI in Tangled",
        ),
    ]
    assert len(pulls.pipelines()) == 1
    assert pulls.pds.hits["getBlob"] == 1  # only the collaborator's branch pull fetched its patch


async def test_a_status_by_someone_without_push_rights_on_the_target_runs_nothing(pulls: Pulls) -> None:
    """A member who owns another repository here may write statuses, but not run a pull on a repository of others."""
    apply(
        pulls.registry,
        commit(
            MEMBER_DID,
            REPO,
            "r2",
            record=repo_record("tool", KNOT, repo_did="did:plc:tool2ige3rnslshcvnkjbpaa"),
        ),
    )
    with Transaction(pulls.conn) as tx:
        pulls.registry.settle(tx, pulls.registry.pending(time.time_ns())[0], True)
    uri = await pulls.open()
    pulls.status(MEMBER_DID, uri, "open")
    await pulls.decide()
    assert pulls.events()[1][1:3] == ("skipped", "not_authorized")


def bomb() -> bytes:
    """A gzip stream expanding to more than tack's 64 MiB limit, starting like a real series."""
    header = b"From " + b"a" * 40 + b" Mon Sep 17 00:00:00 2001\n"
    return gzip.compress(header + b"\0" * (65 << 20), compresslevel=9, mtime=0)


async def plain_diff(series: Series) -> bytes:
    return gzip.compress((await git("diff", "main", "feature", cwd=series.repo)).encode(), mtime=0)


@pytest.mark.parametrize(
    "case",
    ["cid_mismatch", "patch_too_large", "truncated", "no_commits", "bad_gzip", "bad_mime", "blob_too_large"],
)
async def test_unusable_patches_are_rejected_with_the_reason(pulls: Pulls, case: str) -> None:
    """Each unusable patch is a rejection: kept with its outcome and reason, counted, logged; nothing runs."""
    good = await pulls.series.blob()
    blobs = {
        "cid_mismatch": good,
        "patch_too_large": bomb(),
        "truncated": good[: len(good) // 2],
        "no_commits": await plain_diff(pulls.series),
        "bad_gzip": gzip.decompress(await format_patch(pulls.series.repo, "main", "feature")),
        "bad_mime": good,
        "blob_too_large": b"\x1f\x8b" + b"x" * (16 << 20),
    }
    before = counted(case)
    uri = await pulls.open(blobs=[blobs[case]])
    if case == "cid_mismatch":
        pulls.pds.blob_replaced[next(c for d, c in pulls.pds.blobs if d == COLLAB)] = gzip.compress(
            b"other bytes"
        )
    if case == "bad_mime":
        author, rkey = uri.removeprefix("at://").split("/")[0], uri.rsplit("/", 1)[1]
        record = pulls.pds.records[(author, PULL_NSID, rkey)]
        record["rounds"][0]["patchBlob"]["mimeType"] = "text/x-patch"
        pulls.conn.execute("UPDATE pull_events SET record=?", (json.dumps(record),))
        pulls.conn.commit()
    await pulls.decide()
    [(_, state, outcome, reason, _)] = pulls.events()
    assert (state, outcome) == ("rejected", case)
    assert reason
    assert counted(case) == before + 1
    assert pulls.pipelines() == [] and pulls.loads.asked == []


async def test_a_stalled_pds_is_retried_then_rejected(pulls: Pulls) -> None:
    """A PDS that never answers (or stops mid-body) times out, is retried with the reason kept, then rejected."""
    pulls.pds.blob_stalling.add(COLLAB)
    await pulls.open()
    await pulls.decide()
    [(_, state, outcome, reason, attempts)] = pulls.events()
    assert (state, outcome, attempts) == ("queued", "timeout", 1)
    assert "no complete answer within 1s" in reason
    pulls.pds.blob_stalling.clear()
    pulls.pds.blob_stalling_body.add(COLLAB)
    await pulls.decide()
    assert pulls.events()[0][1:3] == ("queued", "timeout")
    await pulls.decide()
    [(_, state, outcome, reason, attempts)] = pulls.events()
    assert (state, outcome) == ("rejected", "timeout") and reason.startswith("gave up after 3 attempts")


async def test_a_failing_pds_is_retried_and_the_pull_runs_once_it_answers(pulls: Pulls) -> None:
    """HTTP 500 from the PDS is retried; when the PDS answers again the pull runs."""
    pulls.pds.blob_failing[COLLAB] = 500
    await pulls.open()
    await pulls.decide()
    assert pulls.events()[0][1:3] == ("queued", "pds_error")
    del pulls.pds.blob_failing[COLLAB]
    await pulls.decide()
    assert pulls.events()[0][1:3] == ("done", "pipeline")


async def test_redirects_are_not_followed_and_missing_blobs_are_rejected(pulls: Pulls) -> None:
    """A PDS redirecting getBlob elsewhere, or without the blob, is a rejection; the redirect target is never asked."""
    elsewhere = FakePds()
    await elsewhere.start()
    try:
        pulls.pds.blob_redirects[COLLAB] = elsewhere.url + "/xrpc/com.atproto.sync.getBlob"
        await pulls.open()
        await pulls.decide()
        assert pulls.events()[0][1:3] == ("rejected", "redirected")
        assert elsewhere.hits["getBlob"] == 0
    finally:
        await elsewhere.stop()
    pulls.pds.blob_redirects.clear()
    never_uploaded = pull_of(REPO_DID, [b"never uploaded"])
    pulls.event(COLLAB, PULL_NSID, "create", never_uploaded, pulls.rkey())
    await pulls.decide()
    [_, (_, state, outcome, reason, _)] = pulls.events()
    assert (state, outcome) == ("rejected", "no_blob") and "BlobNotFound" in reason


async def test_an_author_whose_pds_is_at_a_private_address_is_refused_without_tack_dev(
    pulls: Pulls, plc: FakePlc
) -> None:
    """Without TACK_DEV neither blob nor pull record is fetched from a loopback or private PDS, by address or name."""
    strict = Fetcher(dev=False, timeout_s=1.0)
    lenient = Fetcher(dev=True, timeout_s=1.0)
    pulls.worker.fetcher = strict
    try:
        for pds in (
            f"https://127.0.0.1:{pulls.pds.port}",
            f"https://localhost:{pulls.pds.port}",
            "https://10.1.2.3",
        ):
            plc.publish(Account(did=COLLAB, pds=pds))
            pulls.worker.resolver = DidResolver(lenient, plc.url, dev=True)  # a fresh cache: this document
            uri = await pulls.open()
            await pulls.decide()
        pulls.worker.pds = PdsReader(pulls.worker.resolver, strict)
        pulls.status(OWNER, uri, "open")  # the pull record itself is not read either
        await pulls.decide()
    finally:
        await strict.close()
        await lenient.close()
    assert [(s, o) for _, s, o, _, _ in pulls.events()] == [("rejected", "forbidden_address")] * 4
    assert pulls.pds.hits["getBlob"] == 0 and pulls.pds.hits["getRecord"] == 0


async def test_a_failure_after_deciding_loses_nothing_and_runs_once(pulls: Pulls) -> None:
    """A crash (any error) before the pipeline is written leaves the event queued: it runs on the next attempt, once."""
    pulls.loads.failures.append(RuntimeError("bug"))
    await pulls.open()
    await pulls.decide()
    assert pulls.events()[0][1:3] == ("queued", "internal_error")
    assert pulls.conn.execute("SELECT COUNT(*) FROM pull_runs").fetchone()[0] == 0
    await pulls.decide()
    assert pulls.events()[0][1:3] == ("done", "pipeline")
    assert len(pulls.pipelines()) == 1


async def test_a_knot_that_stays_down_gives_a_pipeline_showing_why(pulls: Pulls) -> None:
    """Workflows that cannot be loaded are retried, then the pipeline is made with one failed workflow saying why."""
    pulls.loads.failures.extend(LoadFailed("knot unreachable", transient=True) for _ in range(3))
    await pulls.open()
    for _ in range(3):
        await pulls.decide()
    assert pulls.events()[0][1:3] == ("done", "load_failed")
    [(_, trigger, names)] = pulls.pipelines()
    assert names == ["workflows"] and trigger["action"] == "opened"
    error = pulls.conn.execute("SELECT error FROM workflows").fetchone()[0]
    assert "could not load .tangled/workflows: knot unreachable" in error


async def test_a_status_for_a_pull_that_is_gone_is_rejected(pulls: Pulls) -> None:
    """A status whose pull record no longer exists in its author's PDS is rejected with the reason."""
    uri = await pulls.open()
    pulls.pds.delete(COLLAB, PULL_NSID, uri.rsplit("/", 1)[1])
    pulls.status(COLLAB, uri, "open")
    await pulls.decide()
    assert pulls.events()[1][1:3] == ("rejected", "pull_not_found")


async def test_jetstream_hands_pull_records_from_non_members_to_the_intake_with_the_cursor(
    pulls: Pulls,
) -> None:
    """A pull by someone who is no member passes the member filter, is queued and saves the cursor with it."""
    woken: list[int] = []
    ingest = JetstreamIngest(
        "ws://unused",
        pulls.registry,
        pulls.worker.book,
        lambda: None,
        pulls=pulls.intake,
        on_pull=lambda: woken.append(1),
    )
    record = pull_of(REPO_DID, [await pulls.series.blob()])
    t = 1_784_698_509_603_192
    frame: dict[str, Any] = {
        "did": COLLAB,
        "time_us": t,
        "kind": "commit",
        "commit": {
            "rev": "3m",
            "operation": "create",
            "collection": PULL_NSID,
            "rkey": "3mr7m2f6ger99",
            "record": record,
        },
    }
    assert not pulls.registry.wanted(COLLAB)
    assert ingest.handle(json.dumps(frame)) == ("pull_queued", None)
    assert get_meta(pulls.conn, CURSOR_KEY) == str(t + 1) and woken == [1]
    other = {**frame, "time_us": t + 5, "did": OUTSIDER}
    other["commit"] = {
        **frame["commit"],
        "record": {**record, "target": {"repo": "did:plc:elsewhere3rnslshcvnkjbp", "branch": "main"}},
    }
    assert ingest.handle(json.dumps(other)) == ("pull_elsewhere", t + 6)
    bad_status = {
        **frame,
        "time_us": t + 9,
        "did": OWNER,
        "commit": {
            "rev": "3m",
            "operation": "create",
            "collection": PULL_STATUS_NSID,
            "rkey": "s1",
            "record": {"pull": 7},
        },
    }
    assert ingest.handle(json.dumps(bad_status)) == ("bad_record", t + 10)
    assert [a for a, *_ in pulls.events()] == ["opened"]
