"""sh.tangled.ci.queryPipelines and getPipeline over HTTP, read by a lexicon-following client (tack_control.web.ci).

Pipelines are written through the real engine (Pipelines.create and the
StatusBook) into a real SQLite file; the CI API is served on loopback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from tack_control.engine import pipelines as pipelines_module
from tack_control.ingest.registry import Registry
from tests.fakes.ci_appview import GET, QUERY, CiAppview
from tests.support.ci import KNOT, PipelineMaker, ci_app, serve, sha


REPO_A = "did:plc:repoaaaaaaaaaaaaaaaaaaaaaa"
REPO_B = "did:plc:repobbbbbbbbbbbbbbbbbbbbbb"
REPO_C = "did:web:repo-c.example.com"
FORK = "did:plc:forkfffffffffffffffffffffff"
PULL = "at://did:plc:author0000000000000000000/sh.tangled.repo.pull/3mr7m2f6ger25"


@pytest.fixture
def maker(conn: sqlite3.Connection) -> PipelineMaker:
    """Pipelines written through the engine on the test database."""
    return PipelineMaker.on(conn)


@pytest.fixture
async def client(conn: sqlite3.Connection, registry: Registry) -> AsyncIterator[CiAppview]:
    """A lexicon-following client of the CI API served over the test database."""
    async with serve(ci_app(conn, registry)) as url, CiAppview(url) as appview:
        yield appview


def ids(pipelines: list[dict[str, Any]]) -> list[str]:
    return [str(p["id"]) for p in pipelines]


async def test_pipelines_of_several_repos_kinds_and_commits_are_listed_newest_first(
    maker: PipelineMaker, client: CiAppview
) -> None:
    """Each repo lists only its pipelines, newest first; kinds and commits filter; every object validates."""
    made = {
        "a-push": maker.make("push", REPO_A, sha(1)),
        "b-push": maker.make("push", REPO_B, sha(1)),
        "a-pull": maker.make("pull_request", REPO_A, sha(2), source_repo=FORK, pull=PULL),
        "c-manual": maker.make("manual", REPO_C, sha(3), inputs=[("configuration", "release")]),
        "a-manual": maker.make("manual", REPO_A, sha(1), names=("lint.yml", "build.yml")),
    }
    page = await client.query_pipelines(REPO_A)
    assert ids(page["pipelines"]) == [made["a-manual"], made["a-pull"], made["a-push"]]
    assert page["total"] == 3 and "cursor" not in page
    assert ids((await client.query_pipelines(REPO_B))["pipelines"]) == [made["b-push"]]
    assert ids((await client.query_pipelines(REPO_C))["pipelines"]) == [made["c-manual"]]
    kinds = await client.query_pipelines(REPO_A, kinds=("push", "pull_request"))
    assert ids(kinds["pipelines"]) == [made["a-pull"], made["a-push"]] and kinds["total"] == 2
    only_manual = await client.query_pipelines(REPO_A, kinds=("manual",))
    assert ids(only_manual["pipelines"]) == [made["a-manual"]] and only_manual["total"] == 1
    by_commit = await client.query_pipelines(REPO_A, commits=(sha(2), sha(3)))
    assert ids(by_commit["pipelines"]) == [made["a-pull"]] and by_commit["total"] == 1
    pull = (await client.query_pipelines(REPO_A, kinds=("pull_request",)))["pipelines"][0]
    assert pull["sourceRepo"] == FORK and pull["commit"] == sha(2)
    assert pull["trigger"] == {
        "$type": "sh.tangled.ci.trigger#pullRequest",
        "targetBranch": "main",
        "sourceSha": sha(2),
        "sourceBranch": "feature",
        "sourceRepo": FORK,
        "pull": PULL,
        "action": "opened",
    }
    manual = (await client.query_pipelines(REPO_C))["pipelines"][0]
    assert manual["trigger"]["inputs"] == [{"key": "configuration", "value": "release"}]
    assert [w["name"] for w in page["pipelines"][0]["workflows"]] == ["lint.yml", "build.yml"]  # record order
    assert {w["status"] for w in page["pipelines"][0]["workflows"]} == {"pending"}


async def test_an_unknown_repository_answers_an_empty_list_not_null(client: CiAppview) -> None:
    """A repo with no pipelines: 200 with pipelines [] and total 0, no cursor."""
    page = await client.query_pipelines("did:plc:nobody000000000000000000")
    assert page == {"pipelines": [], "total": 0}


async def test_paging_over_1000_pipelines_returns_each_exactly_once_in_order(
    maker: PipelineMaker, client: CiAppview
) -> None:
    """1,000 pipelines (interleaved with another repo's) page out newest first, each once, total on every page."""
    specs = []
    for i in range(1000):
        specs.append(maker.spec("push", REPO_A, sha(i), [("build.yml", "engine: tack\n")]))
        if i % 3 == 0:
            specs.append(maker.spec("manual", REPO_B, sha(i), [("build.yml", "engine: tack\n")]))
    made = [s.rkey for s in specs if s.repo_did == REPO_A]
    maker.create(*specs)
    cursor, seen, pages = None, [], 0
    while True:
        page = await client.query_pipelines(REPO_A, limit=37, cursor=cursor)
        assert page["total"] == 1000
        seen += ids(page["pipelines"])
        pages += 1
        cursor = page.get("cursor")
        if cursor is None:
            break
    assert seen == made[::-1]
    assert pages == 28
    assert len(await client.query_all(REPO_A, limit=250)) == 1000
    assert len(await client.query_all(REPO_A)) == 1000


async def test_pipelines_created_in_one_clock_tick_or_after_the_clock_went_back_page_exactly_once(
    conn: sqlite3.Connection, client: CiAppview, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock stuck on one nanosecond, then set back, then a restart: every pipeline still pages out once, in order."""
    stuck = 1_784_698_509_603_192_451
    clock = {"ns": stuck}
    monkeypatch.setattr(pipelines_module, "time", SimpleNamespace(time_ns=lambda: clock["ns"]))
    maker = PipelineMaker.on(conn)
    made = [maker.make("push", REPO_A, sha(i)) for i in range(120)]
    clock["ns"] = stuck - 10**12  # NTP stepped the clock back
    made += [maker.make("manual", REPO_A, sha(i)) for i in range(40)]
    restarted = PipelineMaker.on(conn)  # a new engine reads where the last one stopped
    made += [restarted.make("pull_request", REPO_A, sha(i)) for i in range(40)]
    for limit in (1, 7, 50):
        assert ids(await client.query_all(REPO_A, limit=limit)) == made[::-1]
    with_commits = await client.query_all(REPO_A, commits=(sha(3), sha(4), sha(5)), limit=1)
    assert ids(with_commits) == [
        made[165],
        made[164],
        made[163],
    ]  # the newest of each: the restarted engine's


async def test_commits_with_30_shas_return_the_newest_pipeline_of_each(
    maker: PipelineMaker, client: CiAppview
) -> None:
    """30 commits with 1-3 pipelines each (and others not asked for): one pipeline per commit, the newest."""
    newest: dict[str, str] = {}
    for round_ in range(3):
        for i in range(40):
            if round_ <= i % 3:
                kind = ("push", "pull_request", "manual")[(i + round_) % 3]
                newest[sha(i)] = maker.make(kind, REPO_A, sha(i))
        maker.make("push", REPO_B, sha(round_))
    asked = tuple(sha(i) for i in range(5, 35))
    page = await client.query_pipelines(REPO_A, commits=asked)
    assert page["total"] == 30 and "cursor" not in page
    assert sorted(p["commit"] for p in page["pipelines"]) == sorted(asked)
    assert {p["commit"]: p["id"] for p in page["pipelines"]} == {c: newest[c] for c in asked}
    assert ids(page["pipelines"]) == sorted(ids(page["pipelines"]), reverse=True)
    paged = await client.query_all(REPO_A, commits=asked, limit=7)
    assert ids(paged) == ids(page["pipelines"])
    pushes = await client.query_pipelines(REPO_A, commits=asked, kinds=("push",))
    assert all(p["trigger"]["$type"].endswith("#push") for p in pushes["pipelines"])
    assert pushes["total"] == len(pushes["pipelines"]) == len({p["commit"] for p in pushes["pipelines"]})
    upper = await client.query_pipelines(REPO_A, commits=(sha(7).upper(),))
    assert ids(upper["pipelines"]) == [newest[sha(7)]]


async def test_a_full_last_page_has_no_cursor(maker: PipelineMaker, client: CiAppview) -> None:
    """A cursor is given only when more pipelines follow."""
    for i in range(4):
        maker.make("push", REPO_A, sha(i))
    first = await client.query_pipelines(REPO_A, limit=2)
    assert len(first["pipelines"]) == 2 and first["cursor"]
    second = await client.query_pipelines(REPO_A, limit=2, cursor=first["cursor"])
    assert len(second["pipelines"]) == 2 and "cursor" not in second


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ([], "repo"),
        ([("repo", "")], "repo"),
        ([("repo", "alice.example.com")], "repo"),
        ([("repo", REPO_A), ("repo", REPO_B)], "repo"),
        ([("repo", REPO_A), ("commits", "main")], "commits"),
        ([("repo", REPO_A), ("commits", "a" * 39)], "commits"),
        ([("repo", REPO_A), *(("commits", sha(i)) for i in range(101))], "commits"),
        ([("repo", REPO_A), ("kinds", "tag")], "kinds"),
        ([("repo", REPO_A), ("limit", "0")], "limit"),
        ([("repo", REPO_A), ("limit", "251")], "limit"),
        ([("repo", REPO_A), ("limit", "ten")], "limit"),
        ([("repo", REPO_A), ("limit", "-5")], "limit"),
        ([("repo", REPO_A), ("cursor", "yesterday")], "cursor"),
        ([("repo", REPO_A), ("cursor", "99999999999999999999")], "cursor"),
    ],
)
async def test_bad_query_parameters_are_400_invalid_request_naming_the_parameter(
    client: CiAppview, query: list[tuple[str, str]], param: str
) -> None:
    """Each parameter the lexicon does not allow is refused with InvalidRequest, its message naming it."""
    status, body = await client.call(QUERY, query)
    assert status == 400
    assert body["error"] == "InvalidRequest"
    assert body["message"].startswith(f"{param}:")


async def test_get_pipeline_answers_the_bare_pipeline_the_query_lists(
    maker: PipelineMaker, client: CiAppview
) -> None:
    """getPipeline's object is the same one queryPipelines lists."""
    rkey = maker.make("pull_request", REPO_A, sha(9), source_repo=FORK)
    listed = (await client.query_pipelines(REPO_A))["pipelines"][0]
    assert await client.get_pipeline(rkey) == listed


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ([("pipeline", "3mr7m2f6ger22")], 400, "PipelineNotFound"),
        ([], 400, "InvalidRequest"),
        ([("pipeline", "not-a-tid")], 400, "InvalidRequest"),
        ([("pipeline", "3MR7M2F6GER22")], 400, "InvalidRequest"),
    ],
)
async def test_get_pipeline_refuses_unknown_and_malformed_ids(
    client: CiAppview, query: list[tuple[str, str]], status: int, error: str
) -> None:
    """An unknown TID is the lexicon's PipelineNotFound; a missing or malformed one is InvalidRequest."""
    got, body = await client.call(GET, query)
    assert (got, body["error"]) == (status, error)
    assert body["message"]


async def test_two_knots_pipelines_with_one_rkey_resolve_to_the_newest(
    maker: PipelineMaker, client: CiAppview
) -> None:
    """Legacy knots may reuse an rkey: getPipeline answers the pipeline created last, every time."""
    rkey = "3mr7m2f6ger22"
    maker.create(
        maker.spec("push", REPO_A, sha(1), [("old.yml", "x: 1\n")], knot=KNOT, rkey=rkey, origin="knot")
    )
    maker.create(
        maker.spec(
            "push",
            REPO_B,
            sha(2),
            [("new.yml", "x: 1\n")],
            knot="other.example.com",
            rkey=rkey,
            origin="knot",
        )
    )
    for _ in range(2):
        got = await client.get_pipeline(rkey)
        assert (got["repo"], got["commit"], got["workflows"][0]["name"]) == (REPO_B, sha(2), "new.yml")


async def test_a_pipeline_of_a_repository_known_only_by_name_is_not_listed_but_can_be_read(
    maker: PipelineMaker, client: CiAppview
) -> None:
    """A 2025-protocol pipeline without a repo DID is in no repo's list; getPipeline answers it without repo."""
    (rkey,) = maker.create(maker.spec("push", "", sha(4), [("build.yml", "x: 1\n")], origin="knot"))
    got = await client.get_pipeline(rkey)
    assert "repo" not in got and got["commit"] == sha(4)
    assert got["workflows"][0]["status"] == "failed" and "tack:" in got["workflows"][0]["error"]


async def test_wrong_verb_is_405_json(client: CiAppview) -> None:
    """A CI method called with POST answers 405 in JSON, like tack's other XRPC methods."""
    async with client.session.post(f"{client.base_url}/xrpc/{QUERY}?repo={REPO_A}") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"] == "InvalidRequest"
