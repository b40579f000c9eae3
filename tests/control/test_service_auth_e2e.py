"""Service auth in the running control plane: DIDs resolved through TACK_PLC_URL, a token used once across a kill -9."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tack_control.identity.did import web_did
from tack_control.identity.signing import load_or_create_key
from tack_sandbox.knot import HostedRepo
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account
from tests.support.codefacts import ROOT
from tests.support.stack import Stack, metric


pytestmark = pytest.mark.e2e
LIST = "sh.tangled.repo.listSecrets"


@pytest.fixture
async def stack(tmp_path: Path, plc: FakePlc) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, control_env={"TACK_PLC_URL": plc.url}) as s:
        yield s


@pytest.fixture
async def owner(stack: Stack, plc: FakePlc, pds: FakePds) -> Account:
    """A member of the spindle whose repo 'hello' (with a repo DID, hosted by the simulated knot) is registered and
    verified here; its record is on the fake PDS and its DID document on the fake PLC."""
    account = plc.publish(Account(pds=pds.url))
    repo_did = plc.publish(Account(pds=f"http://{stack.knot.hostname}")).did  # its document names the knot
    record = {
        "$type": "sh.tangled.repo",
        "name": "hello",
        "knot": stack.knot.hostname,
        "spindle": stack.cp.hostname,
        "repoDid": repo_did,
        "createdAt": "2026-01-01T00:00:00Z",
    }
    pds.records[(account.did, "sh.tangled.repo", "hello")] = record
    stack.knot.host_repo(HostedRepo(repo_did, account.did, "hello"))
    stack.add_member(account.did)
    stack.jetstream.commit(account.did, "sh.tangled.repo", "hello", "create", record)
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        with sqlite3.connect(stack.cp.db_path) as conn:
            row = conn.execute("SELECT state FROM repos WHERE repo_did=?", (repo_did,)).fetchone()
        if row is not None and row[0] == "verified":
            return account
        await asyncio.sleep(0.05)
    raise AssertionError(f"the repository was not verified (state {row})")


async def list_secrets(stack: Stack, owner: Account, token: str) -> tuple[int, Any]:
    """listSecrets for the owner's repo with ``token``: status and body."""
    params = {"repo": f"at://{owner.did}/sh.tangled.repo/hello"}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.cp.http}/xrpc/{LIST}", params=params, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_token_works_once_even_across_a_restart(stack: Stack, owner: Account) -> None:
    """A valid token is answered 200 once; replayed it is 401 replayed, also after kill -9 and restart; counted by result."""
    token = owner.token(LIST, aud=web_did(stack.cp.hostname))
    assert await list_secrets(stack, owner, token) == (200, {"secrets": []})
    status, body = await list_secrets(stack, owner, token)
    assert (status, body["message"][:9]) == (401, "replayed:")
    stack.cp.kill9()
    await stack.cp.start_ready()
    status, body = await list_secrets(stack, owner, token)
    assert (status, body["message"][:9]) == (401, "replayed:")
    assert await metric(stack, 'tack_service_auth_total{result="replayed"}') == 1
    fresh = owner.token(LIST, aud=web_did(stack.cp.hostname))
    assert (await list_secrets(stack, owner, fresh))[0] == 200
    assert await metric(stack, 'tack_service_auth_total{result="ok"}') == 1


async def test_the_token_command_signs_what_the_spindle_accepts(
    stack: Stack, owner: Account, plc: FakePlc, tmp_path: Path
) -> None:
    """`python -m tack_control token` signs with its sandbox key (printing its Multikey); with that key on the PLC the spindle accepts it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACK_")},
        "TACK_DATA_DIR": str(tmp_path / "data"),
        "TACK_HOSTNAME": stack.cp.hostname,
        "TACK_OWNER_DID": owner.did,
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tack_control", "token", "--lxm", LIST],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    owner.key = load_or_create_key(str(tmp_path / "data" / "sandbox" / "service-auth-key.pem"))
    assert owner.multikey() in proc.stderr
    plc.publish(owner)
    assert await list_secrets(stack, owner, proc.stdout.strip()) == (200, {"secrets": []})
