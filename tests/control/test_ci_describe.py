"""sh.tangled.ci.describeWorkflowDefinition over HTTP, with real registry rows and a loader fake (tack_control.web.ci.handlers).

The loader fake follows the git loader's contract (``ingest.minting.LoadWorkflows``):
``(knot, repo DID, sha)`` → the files of ``.tangled/workflows`` at that commit,
``LoadFailed`` (transient or not) when they cannot be read.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Sequence

import pytest

from tack_common.sqlite import Transaction
from tack_control.ingest.minting import LoadFailed
from tack_control.ingest.registry import REPO, Registry
from tack_control.ingest.verify import ForkRefused
from tests.fakes.ci_appview import DESCRIBE, CiAppview
from tests.support.ci import KNOT, PipelineMaker, ci_app, serve, sha
from tests.support.samples import HOST, OWNER, apply, commit


REPO_DID = "did:plc:repoaaaaaaaaaaaaaaaaaaaaaa"
FORK_DID = "did:plc:forkfffffffffffffffffffffff"
FORK_KNOT = "forks.example.com"
NEW_FORK_DID = "did:plc:newfork7777777777777777777"
NEW_FORK_KNOT = "knot.forks.example.net"
AWAY_DID = "did:plc:away2222222222222222222222"
FILES = {
    (KNOT, REPO_DID, sha(1)): [("b.yml", "engine: nixery\n"), ("a.yml", "engine: dummy\n")],
    (KNOT, REPO_DID, sha(2)): [],
    (FORK_KNOT, FORK_DID, sha(3)): [("a.yml", "engine: dummy\n")],
    (NEW_FORK_KNOT, NEW_FORK_DID, sha(4)): [("a.yml", "engine: dummy\n")],
}


class Loader:
    """Workflow files by (knot, repo, sha); counts calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, knot: str, repo_did: str, commit_sha: str) -> Sequence[tuple[str, str]]:
        self.calls.append((knot, repo_did, commit_sha))
        if commit_sha == sha(8):
            raise LoadFailed("knot unreachable", transient=True)
        key = (knot, repo_did, commit_sha)
        if key not in FILES:
            raise LoadFailed(f"no commit {commit_sha}")
        return FILES[key]


class ForkVetter:
    """The fork vetting contract (``ingest.verify.ForkKnot``): the knot of a fork, ForkRefused when it cannot be vetted."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, repo_did: str) -> str:
        self.asked.append(repo_did)
        if repo_did == NEW_FORK_DID:
            return NEW_FORK_KNOT
        if repo_did == AWAY_DID:
            raise ForkRefused(f"{repo_did}: the PLC directory did not answer", transient=True)
        raise ForkRefused(f"{repo_did}: no DID document", transient=False)


@pytest.fixture
def vetter() -> ForkVetter:
    """The fork vetting fake."""
    return ForkVetter()


@pytest.fixture
def loader() -> Loader:
    """The loader fake."""
    return Loader()


@pytest.fixture
def verified(conn: sqlite3.Connection, registry: Registry) -> Registry:
    """REPO_DID registered here by the owner and verified against its knot, as Jetstream and the verifier leave it."""
    record = {"$type": REPO, "name": "hello", "knot": KNOT, "spindle": HOST, "repoDid": REPO_DID}
    apply(registry, commit(OWNER, REPO, "r1", record=record))
    [pending] = registry.pending(now_ns=1 << 62)
    with Transaction(conn):
        registry.settle(conn, pending, verified=True)
    assert registry.by_repo_did(REPO_DID) is not None
    return registry


@pytest.fixture
async def client(
    conn: sqlite3.Connection, verified: Registry, loader: Loader, vetter: ForkVetter
) -> AsyncIterator[CiAppview]:
    """A lexicon-following client of the CI API with the loader and fork vetting fakes."""
    async with serve(ci_app(conn, verified, loader, fork_knot=vetter)) as url, CiAppview(url) as appview:
        yield appview


async def test_the_definition_is_derived_with_the_stock_hash_and_names(
    client: CiAppview, loader: Loader
) -> None:
    """derived true, the stock fingerprint and the names in tree order; asked again, answered from memory."""
    status, body = await client.describe(REPO_DID, sha(1))
    assert status == 200
    assert body == {
        "derived": True,
        "hash": "sha256:263e3059ad551044d0d941dbf12006af90b6908b9deccf68f54ff7c14e15d282",
        "workflows": ["a.yml", "b.yml"],
    }
    assert await client.describe(REPO_DID, sha(1).upper()) == (200, body)
    assert loader.calls == [(KNOT, REPO_DID, sha(1))]


async def test_a_commit_without_workflows_has_the_empty_hash_and_no_names(client: CiAppview) -> None:
    """No workflow files: the hash of nothing, and no workflows key (as stock spindles answer)."""
    status, body = await client.describe(REPO_DID, sha(2))
    assert (status, body) == (
        200,
        {"derived": True, "hash": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    )


async def test_a_fork_is_read_from_its_own_knot(
    conn: sqlite3.Connection, client: CiAppview, loader: Loader
) -> None:
    """sourceRepo: the fork's files, from the knot a pull request pipeline recorded for it."""
    maker = PipelineMaker.on(conn)
    spec = maker.spec("pull_request", REPO_DID, sha(3), [("a.yml", "x: 1\n")], source_repo=FORK_DID)
    maker.create(dataclasses.replace(spec, source_knot=FORK_KNOT))
    status, body = await client.describe(REPO_DID, sha(3), source_repo=FORK_DID)
    assert status == 200 and body["workflows"] == ["a.yml"]
    assert loader.calls[-1] == (FORK_KNOT, FORK_DID, sha(3))
    same = await client.describe(REPO_DID, sha(1), source_repo=REPO_DID)
    assert same[0] == 200 and loader.calls[-1] == (KNOT, REPO_DID, sha(1))


async def test_a_fork_that_never_ran_here_is_vetted_and_read_from_its_knot(
    client: CiAppview, loader: Loader, vetter: ForkVetter
) -> None:
    """A fork's pull request before its first Run CI: the fork is vetted (its DID names its knot) and read there,
    so the appview can compare its definitions with the target's."""
    status, body = await client.describe(REPO_DID, sha(4), source_repo=NEW_FORK_DID)
    assert (status, body) == (
        200,
        {
            "derived": True,
            "hash": "sha256:e4fbf9b4c33a12135e75ccfdd28d7f499b95399203299c3524c1db9796973b80",
            "workflows": ["a.yml"],
        },
    )
    assert vetter.asked == [NEW_FORK_DID]
    assert loader.calls == [(NEW_FORK_KNOT, NEW_FORK_DID, sha(4))]


@pytest.mark.parametrize(
    ("params", "status", "error", "starts"),
    [
        ([("sha", sha(1))], 400, "InvalidRequest", "repo:"),
        ([("repo", "hello"), ("sha", sha(1))], 400, "InvalidRequest", "repo:"),
        ([("repo", REPO_DID)], 400, "InvalidRequest", "sha:"),
        ([("repo", REPO_DID), ("sha", "a" * 64)], 400, "InvalidRequest", "sha:"),
        ([("repo", REPO_DID), ("sha", "g" * 40)], 400, "InvalidRequest", "sha:"),
        ([("repo", REPO_DID), ("sha", sha(1)), ("sourceRepo", "x")], 400, "InvalidRequest", "sourceRepo:"),
        ([("repo", "did:plc:unknown00000000000000"), ("sha", sha(1))], 400, "RepoNotFound", "repository"),
        (
            [("repo", REPO_DID), ("sha", sha(1)), ("sourceRepo", "did:plc:nowhere")],
            400,
            "RepoNotFound",
            "sourceRepo did:plc:nowhere: no DID document",
        ),
        (
            [("repo", REPO_DID), ("sha", sha(1)), ("sourceRepo", AWAY_DID)],
            502,
            "UpstreamFailure",
            f"sourceRepo {AWAY_DID}: the PLC",
        ),
        ([("repo", REPO_DID), ("sha", sha(9))], 400, "InvalidRequest", "sha:"),
        ([("repo", REPO_DID), ("sha", sha(8))], 502, "UpstreamFailure", "reading"),
    ],
)
async def test_refusals_name_the_parameter_or_the_cause(
    client: CiAppview, params: list[tuple[str, str]], status: int, error: str, starts: str
) -> None:
    """Bad parameters, unknown repositories, unreadable commits and an unreachable knot each answer their error."""
    got, body = await client.call(DESCRIBE, params)
    assert (got, body["error"]) == (status, error)
    assert body["message"].startswith(starts)


async def test_without_a_loader_the_method_says_it_cannot_read_workflows(
    conn: sqlite3.Connection, verified: Registry
) -> None:
    """Until the git loader is wired, 503 with the reason (never a made-up hash)."""
    async with serve(ci_app(conn, verified, None)) as url, CiAppview(url) as client:
        status, body = await client.call(DESCRIBE, [("repo", REPO_DID), ("sha", sha(1))])
    assert (status, body["error"]) == (503, "Unavailable")
