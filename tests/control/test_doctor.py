"""`tack doctor`: a good configuration passes; each broken one fails with its own message and fix."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tack_control.config import Settings
from tack_control.doctor import Result, check_buildkite, check_git, check_owner, run_checks
from tack_control.web.ci.didweb import did_document, did_web
from tests.fakes.atproto import FakePds, FakePlc
from tests.fakes.buildkite import FakeBuildkite
from tests.fakes.buildkite.config import ALL_SCOPES, TokenInfo
from tests.support.atproto import Account
from tests.support.ci import serve
from tests.support.codefacts import ROOT
from tests.support.procs import free_port
from tests.support.stack import OWNER, Stack


pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path) as s:
        yield s


SOMEONE_ELSE = "did:plc:someoneelse2222222222222"


@pytest.fixture
async def plc_url(pds: FakePds) -> AsyncIterator[str]:
    """A fake PLC directory's URL; the owner (and SOMEONE_ELSE) are accounts on the fake PDS, without records."""
    fake = FakePlc()
    for did in (OWNER, SOMEONE_ELSE):
        fake.publish(Account(did=did, pds=pds.url))
        pds.host(did)
    yield await fake.start()
    await fake.stop()


def good_env(stack: Stack, tmp_path: Path, plc_url: str) -> dict[str, str]:
    """The environment the running control plane was started with (its own database file aside), and a PLC."""
    return {
        "TACK_PLC_URL": plc_url,
        "TACK_HOSTNAME": stack.cp.hostname,
        "TACK_OWNER_DID": OWNER,
        "TACK_DEV": "1",
        "TACK_DB_PATH": str(tmp_path / "doctor.db"),
        "TACK_JETSTREAM_URL": stack.jetstream.url,
        "TACK_PROVIDERS": f"stub={stack.stub.address}",
        "TACK_LISTEN_ADDR": f"127.0.0.1:{stack.cp.port}",
    }


def failures(results: list[Result]) -> list[str]:
    return [f"{r.name}: {r.detail}" for r in results if r.verdict == "FAIL"]


async def test_good_configuration_passes_with_one_line_per_check(
    stack: Stack, tmp_path: Path, plc_url: str
) -> None:
    """Against a running stack, every check passes (Buildkite skipped without a token) and the exit status is 0."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACK_")},
        **good_env(stack, tmp_path, plc_url),
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tack_control", "doctor"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    checked = {
        line.split(": ")[0].split(None, 1)[1].split(" http")[0] for line in lines if line.startswith("ok ")
    }
    expected = {
        "configuration",
        "git client",
        "plc directory",
        "public owner check",
        "pushes",
        "running control plane",
    }
    assert expected <= checked, lines
    assert not any(line.startswith("FAIL") for line in lines), lines
    assert f"plc directory {plc_url}: reachable (HTTP 200)" in proc.stdout
    assert "running control plane" in proc.stdout and proc.stdout.count(": ready") == 1
    assert any(line.startswith("skip") and "buildkite" in line for line in lines)
    assert "SERVING, stub" in proc.stdout
    assert f"answers {OWNER}; did.json names did:web:" in proc.stdout
    assert "ok    git client: git 2." in proc.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"TACK_HOSTNAME": ""}, "configuration: TACK_HOSTNAME is required"),
        ({"TACK_OWNER_DID": "alice"}, "configuration: TACK_OWNER_DID must be a DID"),
        ({"TACK_PROVIDERS": "stub"}, "configuration: TACK_PROVIDERS entries must look like name=host:port"),
        ({"TACK_DB_PATH": "/proc/self/nope/tack.db"}, "cannot be opened"),
        ({"TACK_PROVIDERS": "stub=127.0.0.1:{free}"}, "provider stub (127.0.0.1:{free}): unreachable"),
        ({"TACK_PROVIDERS": "buildkite={stub}"}, "answers as 'stub', not 'buildkite'"),
        ({"TACK_PROVIDERS": ""}, "providers: TACK_PROVIDERS is empty"),
        (
            {"TACK_JETSTREAM_URL": "ws://127.0.0.1:{free}/subscribe"},
            "jetstream ws://127.0.0.1:{free}/subscribe: unreachable",
        ),
        ({"TACK_OWNER_DID": SOMEONE_ELSE}, f"answers owner {OWNER!r}"),
        ({"TACK_HOSTNAME": "127.0.0.1:{free}"}, "no valid answer within 5s"),
        ({"TACK_PLC_URL": "http://127.0.0.1:{free}"}, "plc directory http://127.0.0.1:{free}: unreachable"),
        ({"TACK_PLC_URL": "ftp://plc.example"}, "configuration: TACK_PLC_URL must be an https:// URL"),
    ],
)
async def test_each_broken_configuration_fails_with_its_own_message(
    stack: Stack, tmp_path: Path, plc_url: str, change: dict[str, str], expected: str
) -> None:
    """A single broken setting fails exactly the check it concerns, saying what and how to fix it."""
    free = str(free_port())
    env = good_env(stack, tmp_path, plc_url)
    env.update({k: v.format(free=free, stub=stack.stub.address) for k, v in change.items()})
    results = await run_checks(env)
    failed = failures(results)
    assert len(failed) == 1, failed
    assert expected.format(free=free) in failed[0]
    assert all(r.fix for r in results if r.verdict == "FAIL")


@pytest.mark.parametrize(
    ("token", "org", "expected"),
    [
        ("good", "acme", None),
        ("unknown", "acme", "buildkite token: rejected (HTTP 401)"),
        ("no-logs", "acme", "buildkite token: missing scopes: read_build_logs"),
        ("good", "elsewhere", "buildkite org: 'elsewhere' not visible to this token"),
        ("good", "", "buildkite org: TACK_BUILDKITE_ORG is not set"),
    ],
)
async def test_buildkite_token_scopes_and_org_are_checked(token: str, org: str, expected: str | None) -> None:
    """The Buildkite check accepts a good token and names a rejected token, missing scopes or an invisible org."""
    tokens = {
        "good": TokenInfo(),
        "no-logs": TokenInfo(scopes=[s for s in ALL_SCOPES if s != "read_build_logs"]),
    }
    async with FakeBuildkite(tokens=tokens) as fake:
        env = {"TACK_BUILDKITE_TOKEN": token, "TACK_BUILDKITE_ORG": org, "TACK_BUILDKITE_API_URL": fake.url}
        result = await check_buildkite(env)
    if expected is None:
        assert (result.verdict, result.detail) == ("ok", "valid, scopes ok, org 'acme' visible")
    else:
        assert result.verdict == "FAIL"
        assert result.fix
        assert expected in f"{result.name}: {result.detail}"


@pytest.mark.parametrize(
    ("did_json", "expected"),
    [
        (None, "HTTP 404"),
        ({"id": "did:web:elsewhere.example", "service": []}, "is not this spindle's document"),
        ("good", None),
    ],
)
async def test_the_public_face_includes_this_spindles_did_json(did_json: Any, expected: str | None) -> None:
    """Behind a proxy that answers the owner check, a missing or foreign /.well-known/did.json fails with its fix."""
    app = web.Application()

    async def owner(request: web.Request) -> web.Response:
        return web.json_response({"owner": OWNER})

    async def document(request: web.Request) -> web.Response:
        if did_json is None:
            raise web.HTTPNotFound()
        host = request.host
        return web.json_response(did_document(host, dev=True) if did_json == "good" else did_json)

    app.router.add_get("/xrpc/sh.tangled.owner", owner)
    app.router.add_get("/.well-known/did.json", document)
    async with serve(app) as url:
        hostname = url.removeprefix("http://")
        settings = Settings.from_env(
            {"TACK_HOSTNAME": hostname, "TACK_OWNER_DID": OWNER, "TACK_DEV": "1", "TACK_PROVIDERS": ""}
        )
        result = await check_owner(settings)
    if expected is None:
        assert result.verdict == "ok" and result.detail.endswith(f"did.json names {did_web(hostname)}")
    else:
        assert result.verdict == "FAIL" and result.fix
        assert result.name.startswith("public did.json") and expected in result.detail


async def test_an_unreachable_buildkite_api_fails_quickly() -> None:
    """An API URL nobody answers fails the check, saying so, within the timeout."""
    env = {
        "TACK_BUILDKITE_TOKEN": "x",
        "TACK_BUILDKITE_ORG": "acme",
        "TACK_BUILDKITE_API_URL": f"http://127.0.0.1:{free_port()}",
    }
    result = await check_buildkite(env)
    assert result.verdict == "FAIL"
    assert "unreachable" in result.detail


async def test_a_control_plane_that_is_not_ready_and_its_waiting_webhooks_are_reported(
    stack: Stack, tmp_path: Path, plc_url: str
) -> None:
    """With its provider down, the running control plane is reported not ready with /readyz's reason,
    and a webhook it stored meanwhile is reported as waiting."""
    stack.stub.kill9()
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 15
        while True:
            async with session.get(stack.cp.http + "/readyz") as resp:
                if resp.status == 503:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        async with session.post(stack.cp.http + "/webhooks/stub", data=b"{}") as resp:
            assert resp.status == 202
    env = {**good_env(stack, tmp_path, plc_url), "TACK_DB_PATH": str(stack.cp.db_path)}
    results = await run_checks(env)
    failed = failures(results)
    assert any(f.startswith("running control plane") and "no provider is reachable" in f for f in failed), (
        failed
    )
    waiting = [r for r in results if r.name == "webhooks for stub"]
    assert len(waiting) == 1 and waiting[0].detail.startswith("1 stored, waiting")


def fake_git(directory: Path, version_line: str) -> None:
    """A `git` on PATH that answers `--version` with ``version_line`` (git's documented output)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "git"
    script.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    script.chmod(0o755)


async def test_the_git_client_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real git passes; a missing git, one older than 2.39 and an unrecognised one each fail with the fix."""
    real = await check_git()
    assert (real.verdict, real.name) == ("ok", "git client") and real.detail.startswith("git 2.")
    fake_git(tmp_path / "old", "git version 2.30.2")
    fake_git(tmp_path / "odd", "not git at all")
    fake_git(tmp_path / "new", "git version 2.49.0")
    expected = {
        "none": "not installed",
        "old": "git 2.30.2 is too old (tack needs 2.39)",
        "odd": "unrecognised version 'not git at all'",
    }
    for directory, detail in expected.items():
        monkeypatch.setenv("PATH", str(tmp_path / directory))
        result = await check_git()
        assert (result.verdict, result.detail) == ("FAIL", detail)
        assert result.fix == "install git 2.39 or newer (Debian: apt-get install git)"
    monkeypatch.setenv("PATH", str(tmp_path / "new"))
    assert (await check_git()).detail == "git 2.49.0"


def test_knots_are_listed_with_the_protocol_they_speak(tmp_path: Path) -> None:
    """Each knot tack follows or followed is listed: how many repositories, which protocol, how old its cursor is."""
    from tack_control.config import Settings
    from tack_control.doctor import check_knots
    from tack_control.engine.db import open_db

    db = tmp_path / "tack.db"
    conn = open_db(str(db))
    conn.execute(
        "INSERT INTO repos (did, rkey, name, knot, spindle, repo_did, state) VALUES"
        " ('did:plc:o', 'a', 'a', 'knot.new', 'spin.example', 'did:plc:r', 'verified'),"
        " ('did:plc:o', 'b', 'b', 'knot.old', 'spin.example', '', 'legacy')"
    )
    conn.execute(
        "INSERT INTO knot_cursors (knot, cursor_ns, speaks, knot_clock) VALUES"
        " ('knot.new', ?, 'current', 1), ('knot.gone', 1, 'legacy', 0)",
        (time.time_ns(),),
    )
    conn.close()
    settings = Settings.from_env(
        {"TACK_HOSTNAME": "spin.example", "TACK_OWNER_DID": "did:plc:o", "TACK_DB_PATH": str(db)}
    )
    lines = {r.name: r.detail for r in check_knots(settings)}
    assert lines["knot knot.new"].startswith(
        "followed, 1 repositories; speaks current Tangled (refUpdate); cursor 0s old"
    )
    assert (
        lines["knot knot.old"] == "followed, 1 repositories; speaks nothing yet; never connected (tack clock)"
    )
    assert lines["knot knot.gone"].startswith("no longer followed, 0 repositories; speaks the 2025 protocol")
    assert (
        lines["pushes"] == "0 waiting for their workflows; 0 pipelines in the last day could not load theirs"
    )
