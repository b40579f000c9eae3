"""Loading workflows from a knot over real git smart HTTP (tack_control.ingest.gitfetch, gitcli, addresses)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tack_control.ingest import gitfetch
from tack_control.ingest.addresses import Endpoint
from tack_control.ingest.gitcli import GitFetchError, classify, parse_git_version
from tack_control.ingest.gitfetch import (
    FetchLimits,
    WorkflowFetcher,
    ls_remote_refs,
    parse_ls_remote,
)
from tack_sandbox import gitrepos
from tack_sandbox.gitserver import GitServer


DID = "did:plc:gitfetchtest000000000000"
FAST = FetchLimits(deadline_s=30, stall_s=5)
"""Roomy enough for a loaded CI machine; the stall test sets its own short stall time."""
WORKFLOWS: dict[str, gitrepos.FileContent] = {
    ".tangled/workflows/ci.yml": "engine: tack\nwhen:\n  - event: push\n    branch: main\n",
    ".tangled/workflows/B.yaml": "engine: tack\n",
    ".tangled/workflows/run.sh": gitrepos.Executable(b"#!/bin/sh\n"),
    ".tangled/workflows/link.yml": gitrepos.Symlink("ci.yml"),
    ".tangled/workflows/sub/nested.yml": "engine: tack\n",
    ".tangled/other.yml": "not a workflow\n",
    "README.md": "hello\n",
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitServer]:
    async with GitServer(tmp_path / "knot") as srv:
        yield srv


@pytest.fixture
def fetcher(tmp_path: Path) -> WorkflowFetcher:
    return WorkflowFetcher(tmp_path / "cache", dev=True, limits=FAST)


async def repo_with(
    server: GitServer,
    files: Mapping[str, gitrepos.FileContent],
    fmt: gitrepos.ObjectFormat = "sha1",
    did: str = DID,
) -> gitrepos.Push:
    repo = await gitrepos.create_repository(server.repo_path(did), object_format=fmt)
    return await gitrepos.commit(repo, files)


async def object_formats() -> list[gitrepos.ObjectFormat]:
    return ["sha1", "sha256"] if await gitrepos.sha256_supported() else ["sha1"]


def counted(operation: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("tack_git_fetches_total", {"operation": operation, "outcome": outcome})
        or 0.0
    )


async def failure(coro: object) -> GitFetchError:
    assert asyncio.iscoroutine(coro)
    with pytest.raises(GitFetchError) as info:
        await coro
    return info.value


# --- loading -------------------------------------------------------------------------------------


async def test_loads_the_workflow_files_of_sha1_and_sha256_repositories(
    server: GitServer, fetcher: WorkflowFetcher
) -> None:
    """The regular files directly in .tangled/workflows come back in bytewise name order, for both object formats."""
    for fmt in await object_formats():
        did = f"{DID}{fmt}"
        push = await repo_with(server, WORKFLOWS, fmt, did)
        assert len(push.new_sha) == (64 if fmt == "sha256" else 40)
        before = counted("workflows", "ok")
        result = await fetcher.fetch(server.hostname, did, push.new_sha)
        assert [(f.name, f.text) for f in result.files] == [
            ("B.yaml", "engine: tack\n"),
            ("ci.yml", WORKFLOWS[".tangled/workflows/ci.yml"]),
            ("run.sh", "#!/bin/sh\n"),
        ]
        assert dict(result.skipped) == {
            "link.yml": "a symbolic link (not followed)",
            "sub": "a directory (workflows are the files directly in .tangled/workflows)",
        }
        assert result.timings.total > 0 and result.timings.bytes_fetched > 0
        assert counted("workflows", "ok") == before + 1


async def test_only_the_workflow_blobs_are_downloaded(server: GitServer, fetcher: WorkflowFetcher) -> None:
    """A 4 MB file elsewhere in the repository is never sent: the whole load is two small upload-pack requests."""
    push = await repo_with(
        server,
        {**WORKFLOWS, "src/big.bin": os.urandom(4 << 20), ".tangled/big.bin": os.urandom(1 << 20)},
    )
    server.reset_stats()
    await fetcher.fetch(server.hostname, DID, push.new_sha)
    assert server.count("git-upload-pack", "POST") == 2
    assert server.bytes_sent < 20_000


async def test_a_commit_without_workflows_gives_no_files(server: GitServer, fetcher: WorkflowFetcher) -> None:
    """No .tangled/workflows directory (or a file in its place) is an empty result, not an error; nothing else is fetched."""
    push = await repo_with(server, {"README.md": "x", ".tangled/workflows.yml": "x"})
    server.reset_stats()
    result = await fetcher.fetch(server.hostname, DID, push.new_sha)
    assert result.files == () and result.skipped == ()
    assert server.count("git-upload-pack", "POST") == 1


async def test_a_second_push_reuses_the_cache(
    server: GitServer, fetcher: WorkflowFetcher, tmp_path: Path
) -> None:
    """The next push of the same repository loads in the same cache directory, fetching only what changed."""
    first = await repo_with(server, WORKFLOWS)
    await fetcher.fetch(server.hostname, DID, first.new_sha)
    second = await gitrepos.commit(
        server.repo_path(DID),
        {".tangled/workflows/ci.yml": "engine: tack\n# v2\n", ".tangled/workflows/B.yaml": None},
    )
    server.reset_stats()
    result = await fetcher.fetch(server.hostname, DID, second.new_sha)
    assert [(f.name, f.text) for f in result.files] == [
        ("ci.yml", "engine: tack\n# v2\n"),
        ("run.sh", "#!/bin/sh\n"),
    ]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert server.count("git-upload-pack", "POST") == 2
    # The same commit again needs no request at all; unchanged files are not fetched twice.
    server.reset_stats()
    again = await fetcher.fetch(server.hostname, DID, second.new_sha)
    assert again.files == result.files
    assert server.requests == []
    third = await gitrepos.commit(server.repo_path(DID), {"README.md": "only the readme changed"})
    server.reset_stats()
    assert (await fetcher.fetch(server.hostname, DID, third.new_sha)).files == result.files
    assert server.count("git-upload-pack", "POST") == 1


async def test_fetches_of_one_repository_are_serialized(server: GitServer, fetcher: WorkflowFetcher) -> None:
    """Concurrent loads of one repository wait for each other; loads of different repositories overlap."""
    one = await repo_with(server, WORKFLOWS, did=f"{DID}one")
    two = await repo_with(server, WORKFLOWS, did=f"{DID}two")
    server.response_delay = 0.3
    await asyncio.gather(
        fetcher.fetch(server.hostname, f"{DID}one", one.new_sha),
        fetcher.fetch(server.hostname, f"{DID}one", one.new_sha),
        fetcher.fetch(server.hostname, f"{DID}one", one.new_sha),
        fetcher.fetch(server.hostname, f"{DID}two", two.new_sha),
    )
    assert server.max_concurrent_fetches[f"{DID}one"] == 1
    assert server.count("git-upload-pack", "POST") == 4  # the 2nd and 3rd load of `one` found it all cached
    overlapping = [r for r in server.requests if r.service == "git-upload-pack"]
    assert {r.repo for r in overlapping} == {f"{DID}one", f"{DID}two"}


async def test_a_damaged_cache_heals(server: GitServer, fetcher: WorkflowFetcher, tmp_path: Path) -> None:
    """A cache repository whose objects were lost or whose config is garbage is rebuilt on the next load."""
    push = await repo_with(server, WORKFLOWS)
    await fetcher.fetch(server.hostname, DID, push.new_sha)
    (cached,) = (tmp_path / "cache").iterdir()
    for pack in (cached / "objects" / "pack").iterdir():
        pack.unlink()
    assert len((await fetcher.fetch(server.hostname, DID, push.new_sha)).files) == 3
    (cached / "config").write_text("[[[ not a config\n")
    assert len((await fetcher.fetch(server.hostname, DID, push.new_sha)).files) == 3


async def test_the_cache_is_bounded(server: GitServer, tmp_path: Path) -> None:
    """Past the cache size limit, the least recently used repositories are removed."""
    fetcher = WorkflowFetcher(
        tmp_path / "cache", dev=True, limits=FetchLimits(stall_s=5, max_cache_bytes=1, trim_interval_s=0)
    )
    pushes = [await repo_with(server, WORKFLOWS, did=f"{DID}{i}") for i in range(3)]
    for i, push in enumerate(pushes):
        await fetcher.fetch(server.hostname, f"{DID}{i}", push.new_sha)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        fetcher.repo_dir(f"http://{server.hostname}/{DID}2", pushes[2].new_sha).name
    ]


async def test_a_cache_repository_with_many_packs_starts_afresh(server: GitServer, tmp_path: Path) -> None:
    """Each load adds packs and git does not repack here: past the pack limit the repository is rebuilt."""
    fetcher = WorkflowFetcher(tmp_path / "cache", dev=True, limits=FetchLimits(stall_s=5, max_repo_packs=3))
    push = await repo_with(server, WORKFLOWS)
    counts = []
    for i in range(4):
        push = await gitrepos.commit(
            server.repo_path(DID), {".tangled/workflows/ci.yml": f"engine: tack # {i}\n"}
        )
        await fetcher.fetch(server.hostname, DID, push.new_sha)
        (cached,) = (tmp_path / "cache").iterdir()
        counts.append(len(list((cached / "objects" / "pack").glob("*.pack"))))
    assert counts == [2, 4, 2, 4]


# --- limits and failures -----------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_50_mb_workflow_file_fails_on_the_bytes_limit_quickly(
    server: GitServer, fetcher: WorkflowFetcher
) -> None:
    """An incompressible 50 MB workflow file stops the transfer at the byte limit (git killed), with a clear error."""
    push = await repo_with(server, {".tangled/workflows/huge.yml": os.urandom(50 << 20)})
    before = counted("workflows", "too_many_bytes")
    started = time.monotonic()
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert error.reason == "too_many_bytes"
    assert f"more than {FAST.max_fetch_bytes} bytes" in str(error)
    assert time.monotonic() - started < 20
    assert counted("workflows", "too_many_bytes") == before + 1


@pytest.mark.e2e
async def test_a_50_mb_workflow_file_that_compresses_fails_on_the_file_size_limit(
    server: GitServer, fetcher: WorkflowFetcher
) -> None:
    """A 50 MB file that compresses to little is refused by its size before it is read, naming the file and limit."""
    push = await repo_with(server, {".tangled/workflows/zeros.yml": bytes(50 << 20), **WORKFLOWS})
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert error.reason == "file_too_large"
    assert str(error) == (
        f".tangled/workflows/zeros.yml is {50 << 20} bytes; the limit per workflow file is {FAST.max_file_bytes}"
    )


@pytest.mark.e2e
async def test_ten_thousand_files_fail_fast_before_any_content_is_fetched(
    server: GitServer, fetcher: WorkflowFetcher
) -> None:
    """10,000 entries under .tangled/workflows fail on the file-count limit, without fetching a single file."""
    files: dict[str, gitrepos.FileContent] = {
        f".tangled/workflows/w{i:05}.yml": "engine: tack\n" for i in range(10_000)
    }
    push = await repo_with(server, files)
    server.reset_stats()
    started = time.monotonic()
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert error.reason == "too_many_files"
    assert str(error) == f".tangled/workflows has more than {FAST.max_files} entries (limit)"
    assert time.monotonic() - started < 5
    assert server.count("git-upload-pack", "POST") == 1


async def test_the_total_size_is_bounded(server: GitServer, tmp_path: Path) -> None:
    """Files within the per-file limit but over the total limit are refused as their sizes stream in."""
    fetcher = WorkflowFetcher(tmp_path / "cache", dev=True, limits=FetchLimits(stall_s=5, max_total_bytes=40))
    push = await repo_with(server, WORKFLOWS)
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert (error.reason, str(error)) == (
        "total_too_large",
        "the workflow files add up to more than 40 bytes (the limit)",
    )


@pytest.mark.e2e
async def test_a_knot_that_stalls_mid_pack_fails_within_the_stall_time(
    server: GitServer, tmp_path: Path
) -> None:
    """A knot that stops sending in the middle of the pack is abandoned after the stall time, not the deadline."""
    fetcher = WorkflowFetcher(tmp_path / "cache", dev=True, limits=FetchLimits(deadline_s=30, stall_s=1))
    push = await repo_with(server, {**WORKFLOWS, ".tangled/workflows/pad.yml": os.urandom(60_000)})
    server.stall_after_bytes = 2000
    started = time.monotonic()
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert error.reason == "stalled"
    assert time.monotonic() - started < 15


async def test_the_deadline_bounds_a_slow_knot(server: GitServer, tmp_path: Path) -> None:
    """A knot slower than the overall deadline fails with `timeout` at the deadline."""
    fetcher = WorkflowFetcher(tmp_path / "cache", dev=True, limits=FetchLimits(deadline_s=1, stall_s=30))
    push = await repo_with(server, WORKFLOWS)
    server.response_delay = 5
    started = time.monotonic()
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert error.reason == "timeout"
    assert time.monotonic() - started < 3


async def test_a_knot_resolving_to_a_private_address_is_refused_without_dev(
    server: GitServer, tmp_path: Path
) -> None:
    """Without dev, a knot name that resolves to loopback is refused before any connection is made."""
    fetcher = WorkflowFetcher(tmp_path / "cache", dev=False, limits=FAST)
    push = await repo_with(server, WORKFLOWS)
    for knot in (
        f"localhost:{server.port}",
        f"127.0.0.1:{server.port}",
        "[::1]:443",
        "10.1.2.3",
        "169.254.169.254",
    ):
        started = time.monotonic()
        error = await failure(fetcher.fetch(knot, DID, push.new_sha))
        assert error.reason == "forbidden_address", knot
        assert "refused (set TACK_DEV to allow)" in str(error)
        assert time.monotonic() - started < 2
    assert server.requests == []
    refs_error = await failure(ls_remote_refs(f"localhost:{server.port}", DID, limits=FAST))
    assert refs_error.reason == "forbidden_address"


async def test_connections_are_pinned_to_the_vetted_address(
    server: GitServer, fetcher: WorkflowFetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git connects to the address tack vetted, not to what DNS says: a name DNS cannot resolve still works."""
    push = await repo_with(server, WORKFLOWS)

    async def vetted(host: str, port: int, *, dev: bool) -> Endpoint:
        return Endpoint(host, port, "127.0.0.1")

    monkeypatch.setattr(gitfetch, "vet_host", vetted)
    knot = f"knot.example:{server.port}"  # .example never resolves
    result = await fetcher.fetch(knot, DID, push.new_sha)
    assert len(result.files) == 3
    refs = await ls_remote_refs(knot, DID, dev=True, limits=FAST)
    assert refs.refs == {"refs/heads/main": push.new_sha}


async def test_unknown_commits_repositories_and_http_failures(
    server: GitServer, fetcher: WorkflowFetcher
) -> None:
    """An unknown commit or repository is `not_found`; a refusing knot is `http_error`; nothing is followed off-host."""
    push = await repo_with(server, WORKFLOWS)
    assert (await failure(fetcher.fetch(server.hostname, DID, "1" * 40))).reason == "not_found"
    assert (
        await failure(fetcher.fetch(server.hostname, "did:plc:nobody", push.new_sha))
    ).reason == "not_found"
    sha256 = "2" * 64
    assert (await failure(fetcher.fetch(server.hostname, DID, sha256))).reason in (
        "object_format",
        "not_found",
    )
    server.refuse_status = 503
    error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
    assert error.reason == "http_error" and "503" in str(error)
    server.refuse_status = None
    async with GitServer(server.root) as elsewhere:
        server.redirect_to = f"http://{elsewhere.hostname}"
        error = await failure(fetcher.fetch(server.hostname, DID, push.new_sha))
        assert error.reason == "http_error"
        assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("knot", "repo_did", "sha", "reason"),
    [
        ("knot.example", "not-a-did", "a" * 40, "invalid_request"),
        ("knot.example", "did:plc:x/../../etc", "a" * 40, "invalid_request"),
        ("knot.example", DID, "A" * 40, "invalid_request"),
        ("knot.example", DID, "a" * 41, "invalid_request"),
        ("knot.example", DID, "0" * 40, "invalid_request"),
        ("knot example", DID, "a" * 40, "invalid_host"),
        ("knot.example/path", DID, "a" * 40, "invalid_host"),
        ("knot.invalid", DID, "a" * 40, "dns"),
    ],
)
async def test_bad_requests_are_refused_before_git_runs(
    fetcher: WorkflowFetcher, knot: str, repo_did: str, sha: str, reason: str
) -> None:
    """Malformed repo DIDs, SHAs (incl. all zeros) and knot hosts, and unresolvable names, fail with their reason."""
    assert (await failure(fetcher.fetch(knot, repo_did, sha))).reason == reason


# --- refs ------------------------------------------------------------------------------------------


async def test_ls_remote_refs_lists_branches_and_peeled_tags(server: GitServer) -> None:
    """Branches and tags at their commits (annotated tags peeled), the default branch, for both object formats."""
    for fmt in await object_formats():
        did = f"{DID}{fmt}"
        main = await repo_with(server, WORKFLOWS, fmt, did)
        repo = server.repo_path(did)
        feature = await gitrepos.commit(repo, {"f": "x"}, branch="feature")
        await gitrepos.tag(repo, "v1", main.new_sha)
        await gitrepos.tag(repo, "v2", feature.new_sha, message="annotated")
        refs = await ls_remote_refs(server.hostname, did, dev=True, limits=FAST)
        assert refs.head == "refs/heads/main"
        assert refs.refs == {
            "refs/heads/main": main.new_sha,
            "refs/heads/feature": feature.new_sha,
            "refs/tags/v1": main.new_sha,
            "refs/tags/v2": feature.new_sha,
        }


async def test_ls_remote_refs_failures_are_clear(server: GitServer) -> None:
    """An unknown repository is `not_found` and counted under the `refs` operation."""
    before = counted("refs", "not_found")
    error = await failure(ls_remote_refs(server.hostname, "did:plc:nobody", dev=True, limits=FAST))
    assert error.reason == "not_found"
    assert counted("refs", "not_found") == before + 1


def test_parse_ls_remote_ignores_other_refs() -> None:
    """Only heads and tags are kept; HEAD's symref names the default branch; a peeled line replaces its tag."""
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    text = (
        f"ref: refs/heads/trunk\tHEAD\n{a}\tHEAD\n{a}\trefs/heads/trunk\n{b}\trefs/tags/v1\n{c}\trefs/tags/v1^{{}}\n"
        f"{a}\trefs/pull/1/head\n{a}\trefs/notes/commits\ngarbage\n"
    )
    refs = parse_ls_remote(text)
    assert refs.head == "refs/heads/trunk"
    assert refs.refs == {"refs/heads/trunk": a, "refs/tags/v1": c}


# --- helpers ---------------------------------------------------------------------


def test_git_version_parsing_and_error_classification() -> None:
    """git's version line is parsed; stderr texts map to bounded reasons."""
    assert parse_git_version("git version 2.39.5\n") == (2, 39, 5)
    assert parse_git_version("git version 2.45.1.windows.1") == (2, 45, 1)
    assert parse_git_version("git version 3.0") == (3, 0, 0)
    assert parse_git_version("hg 6") is None
    assert classify("error: RPC failed; curl 28 Operation too slow.")[0] == "stalled"
    assert classify("fatal: unable to access 'x': Failed to connect to h port 1")[0] == "unreachable"
    assert classify("fatal: remote error: upload-pack: not our ref abc")[0] == "not_found"
    assert classify("fatal: mismatched algorithms: client sha1; server sha256")[0] == "object_format"
    assert classify("something else entirely")[0] == "git_failed"
