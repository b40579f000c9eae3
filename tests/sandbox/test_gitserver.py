"""The sandbox knot's git face (tack_sandbox.gitserver) and the repository helpers (tack_sandbox.gitrepos)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tack_sandbox import gitrepos
from tack_sandbox.gitserver import GitServer


DID = "did:plc:gitserverrepo0000000000"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitServer]:
    async with GitServer(tmp_path / "repos") as srv:
        yield srv


async def formats() -> list[gitrepos.ObjectFormat]:
    return ["sha1", "sha256"] if await gitrepos.sha256_supported() else ["sha1"]


async def test_plain_git_clone_works_for_every_object_format(server: GitServer, tmp_path: Path) -> None:
    """A stock `git clone` over the server gets the pushed commit, for SHA-1 and (where git can) SHA-256 repos."""
    for fmt in await formats():
        did = f"{DID}{fmt}"
        repo = await gitrepos.create_repository(server.repo_path(did), object_format=fmt)
        push = await gitrepos.commit(
            repo, {"README": "hello\n", "bin/run": gitrepos.Executable(b"#!/bin/sh\n")}
        )
        assert len(push.new_sha) == (64 if fmt == "sha256" else 40)
        assert push.old_sha == "0" * len(push.new_sha)
        assert push.changed_files == ("README", "bin/run")
        clone = tmp_path / f"clone-{fmt}"
        await gitrepos.git("clone", "-q", server.url(did), str(clone))
        assert (clone / "README").read_text() == "hello\n"
        assert (await gitrepos.git("rev-parse", "HEAD", cwd=clone)).strip() == push.new_sha
    assert server.count("git-upload-pack", "POST") >= 1


async def test_second_commit_reports_old_sha_and_changed_files(server: GitServer) -> None:
    """A second commit on a branch reports the previous tip as old SHA and only the paths it changed."""
    repo = await gitrepos.create_repository(server.repo_path(DID))
    first = await gitrepos.commit(repo, {"a": "1", "b": "2"})
    second = await gitrepos.commit(repo, {"a": "changed", "b": None, "c/d": "new"})
    assert second.old_sha == first.new_sha
    assert second.changed_files == ("a", "b", "c/d")
    assert (await gitrepos.git("ls-tree", "-r", "--name-only", second.new_sha, cwd=repo)).split() == [
        "a",
        "c/d",
    ]
    replaced = await gitrepos.commit(repo, {"only": "x"}, replace=True)
    assert (await gitrepos.git("ls-tree", "-r", "--name-only", replaced.new_sha, cwd=repo)).split() == [
        "only"
    ]


async def test_protocol_v2_and_gzip_request_bodies(server: GitServer) -> None:
    """The Git-Protocol header reaches upload-pack (v2 answers) and a gzip-encoded request body is inflated."""
    repo = await gitrepos.create_repository(server.repo_path(DID))
    push = await gitrepos.commit(repo, {"f": "x"})
    v2 = {"Git-Protocol": "version=2"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url(DID)}/info/refs?service=git-upload-pack", headers=v2) as resp:
            assert resp.status == 200
            assert b"version 2" in await resp.read()
        body = b"0014command=ls-refs\n" + b"0001" + b"0000"
        headers = {
            **v2,
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        }
        async with session.post(
            f"{server.url(DID)}/git-upload-pack", data=gzip.compress(body), headers=headers
        ) as resp:
            assert resp.status == 200
            answer = await resp.read()
    assert f"{push.new_sha} refs/heads/main".encode() in answer


async def test_pushes_and_unknown_paths_are_refused(server: GitServer) -> None:
    """receive-pack is refused with 403 like the Go knot; unknown repositories and paths are 404."""
    await gitrepos.create_repository(server.repo_path(DID))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url(DID)}/info/refs?service=git-receive-pack") as resp:
            assert resp.status == 403
            assert "Pushes are only supported over SSH." in await resp.text()
        async with session.get(
            f"{server.url('did:plc:nosuchrepo')}/info/refs?service=git-upload-pack"
        ) as resp:
            assert resp.status == 404
        async with session.get(f"http://{server.hostname}/../etc/passwd") as resp:
            assert resp.status == 404


async def test_knobs_refuse_and_redirect(server: GitServer, tmp_path: Path) -> None:
    """`refuse_status` answers every request with that status; `redirect_to` answers 302; both are recorded."""
    await gitrepos.create_repository(server.repo_path(DID))
    async with aiohttp.ClientSession() as session:
        server.refuse_status = 503
        async with session.get(f"{server.url(DID)}/info/refs?service=git-upload-pack") as resp:
            assert resp.status == 503
        server.refuse_status = None
        server.redirect_to = "http://127.0.0.1:9"
        async with session.get(
            f"{server.url(DID)}/info/refs?service=git-upload-pack", allow_redirects=False
        ) as resp:
            assert resp.status == 302
            assert resp.headers["Location"].startswith(f"http://127.0.0.1:9/{DID}/info/refs")
    assert [r.status for r in server.requests] == [503, 302]


@pytest.mark.e2e
async def test_stall_knob_stops_the_pack_mid_way(server: GitServer, tmp_path: Path) -> None:
    """With `stall_after_bytes`, a clone gets that many bytes of the pack and then silence (curl gives up)."""
    repo = await gitrepos.create_repository(server.repo_path(DID))
    await gitrepos.commit(repo, {"big": bytes(range(256)) * 4096})
    server.stall_after_bytes = 1000
    with pytest.raises(gitrepos.GitCommandError, match=r"too slow|RPC failed"):
        await gitrepos.git(
            "-c",
            "http.lowSpeedLimit=1000",
            "-c",
            "http.lowSpeedTime=1",
            "clone",
            "-q",
            server.url(DID),
            str(tmp_path / "clone"),
        )
    stalled = [r for r in server.requests if r.service == "git-upload-pack"]
    assert stalled and stalled[-1].bytes_sent == 1000
