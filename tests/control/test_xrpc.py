"""The XRPC secrets methods: service auth, then the repo record from the owner's PDS, then push rights, then tack's answer."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tack_common.sqlite import Transaction
from tack_control.identity.pds import PdsReader
from tack_control.identity.replay import ReplayStore
from tack_control.identity.resolver import DidResolver
from tack_control.identity.serviceauth import ServiceAuth
from tack_control.ingest.registry import REPO, Registry
from tack_control.netguard import Fetcher
from tack_control.web import keys, xrpc
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import HOSTNAME, Account
from tests.support.samples import apply, commit, repo_record


OWNER = "did:plc:wshs7t2ige3rnslshcvnkjbp"
REPO_DID = "did:plc:repo2ige3rnslshcvnkjbpaa"
COLLAB = "sh.tangled.repo.collaborator"
COLLABORATOR = Account()


@pytest.fixture
async def base(
    plc: FakePlc, pds: FakePds, fetcher: Fetcher, conn: sqlite3.Connection, owner: Account
) -> AsyncIterator[str]:
    """The XRPC routes of the control plane on loopback, resolving DIDs through the fake PLC; the owner's repo
    'hello' (REPO_DID) registered and verified here, with COLLABORATOR named by the owner."""
    registry = Registry(conn, HOSTNAME, owner.did)
    apply(registry, commit(owner.did, REPO, "hello", record=repo_record(spindle=HOSTNAME, repo_did=REPO_DID)))
    with Transaction(conn) as tx:
        registry.settle(tx, registry.pending(now_ns=1 << 62)[0], verified=True)
    apply(registry, commit(owner.did, COLLAB, "c1", record={"subject": COLLABORATOR.did, "repo": REPO_DID}))
    resolver = DidResolver(fetcher, plc.url, dev=True)
    app = web.Application()
    app[keys.OWNER] = OWNER
    app[keys.REGISTRY] = registry
    app[keys.SERVICE_AUTH] = ServiceAuth(resolver, ReplayStore(conn), HOSTNAME)
    app[keys.PDS] = PdsReader(resolver, fetcher)
    xrpc.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/xrpc/"
    await runner.cleanup()


@pytest.fixture
def owner(plc: FakePlc, pds: FakePds) -> Account:
    """The repo owner: on the PLC, with a sh.tangled.repo record 'hello' (with a repoDid) on the fake PDS."""
    account = plc.publish(Account(pds=pds.url))
    pds.records[(account.did, "sh.tangled.repo", "hello")] = {
        "$type": "sh.tangled.repo",
        "knot": "knot.example",
        "spindle": HOSTNAME,
        "repoDid": REPO_DID,
        "createdAt": "2026-01-01T00:00:00Z",
    }
    return account


async def call(base: str, nsid: str, token: str | None, **kw: Any) -> tuple[int, Any]:
    """Call ``nsid`` (GET with ``params=``, POST with ``json=``); the status and JSON body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    method = "GET" if "params" in kw else "POST"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + nsid, headers=headers, **kw) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_secrets_calls_need_a_token_for_their_method(base: str, owner: Account, pds: FakePds) -> None:
    """Without a token every secrets method is 401 and the PDS is not asked; a token for another method is 401 bad_lxm."""
    uri = f"at://{owner.did}/sh.tangled.repo/hello"
    for nsid, kw in (
        (xrpc.LIST_SECRETS, {"params": {"repo": uri}}),
        (xrpc.ADD_SECRET, {"json": {"repo": uri, "key": "K", "value": "v"}}),
        (xrpc.REMOVE_SECRET, {"json": {"repo": uri, "key": "K"}}),
    ):
        status, body = await call(base, nsid, None, **kw)
        assert (status, body["error"]) == (401, "AuthRequired"), nsid
    status, body = await call(
        base, xrpc.ADD_SECRET, owner.token(xrpc.LIST_SECRETS), json={"repo": uri, "key": "K", "value": "v"}
    )
    assert status == 401 and body["message"].startswith("bad_lxm")
    assert pds.hits["getRecord"] == 0


async def test_verified_callers_learn_where_secrets_go(base: str, owner: Account, pds: FakePds) -> None:
    """With a valid token and a repo record carrying a repoDid: list is empty, add and remove explain tack keeps no secrets."""
    uri = f"at://{owner.did}/sh.tangled.repo/hello"
    assert await call(base, xrpc.LIST_SECRETS, owner.token(xrpc.LIST_SECRETS), params={"repo": uri}) == (
        200,
        {"secrets": []},
    )
    status, body = await call(
        base,
        xrpc.ADD_SECRET,
        owner.token(xrpc.ADD_SECRET),
        json={"repo": uri, "key": "API_KEY", "value": "v"},
    )
    assert (status, body["error"]) == (400, "SecretsUnsupported")
    assert "provider" in body["message"]
    status, body = await call(
        base, xrpc.REMOVE_SECRET, owner.token(xrpc.REMOVE_SECRET), json={"repo": uri, "key": "API_KEY"}
    )
    assert (status, body["error"]) == (400, "SecretsUnsupported")
    assert pds.hits["getRecord"] == 3


async def test_bad_repo_inputs_get_their_own_errors(base: str, owner: Account, pds: FakePds) -> None:
    """Missing repo, a handle or junk URI, an unknown record, a record without repoDid, a bad key, a slow PDS."""
    pds.records[(owner.did, "sh.tangled.repo", "old")] = {"$type": "sh.tangled.repo", "knot": "knot.example"}
    cases = [
        ({}, 400, "InvalidRequest"),
        ({"repo": "at://alice.example.com/sh.tangled.repo/hello"}, 400, "InvalidRepo"),
        ({"repo": "hello"}, 400, "InvalidRepo"),
        ({"repo": f"at://{owner.did}/sh.tangled.repo/missing"}, 400, "RepoNotFound"),
        ({"repo": f"at://{owner.did}/sh.tangled.repo/old"}, 400, "InvalidRepo"),
    ]
    for params, status, error in cases:
        got_status, body = await call(base, xrpc.LIST_SECRETS, owner.token(xrpc.LIST_SECRETS), params=params)
        assert (got_status, body["error"]) == (status, error), params
    status, body = await call(
        base,
        xrpc.ADD_SECRET,
        owner.token(xrpc.ADD_SECRET),
        json={"repo": f"at://{owner.did}/sh.tangled.repo/hello", "key": "1BAD", "value": "v"},
    )
    assert (status, body["error"]) == (400, "InvalidRequest")
    status, body = await call(base, xrpc.REMOVE_SECRET, owner.token(xrpc.REMOVE_SECRET), data=b"[1]")
    assert (status, body["error"]) == (400, "InvalidRequest")
    pds.delay_s = 3
    status, body = await call(
        base,
        xrpc.LIST_SECRETS,
        owner.token(xrpc.LIST_SECRETS),
        params={"repo": f"at://{owner.did}/sh.tangled.repo/hello"},
    )
    assert (status, body["error"]) == (502, "UpstreamFailure")


async def test_owner_wrong_verb_and_unknown_methods(base: str) -> None:
    """sh.tangled.owner answers the owner; a wrong verb is 405 and an unknown method 404, both as XRPC errors."""
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "sh.tangled.owner") as resp:
            assert (resp.status, await resp.json()) == (200, {"owner": OWNER})
        async with session.post(base + xrpc.LIST_SECRETS) as resp:
            assert (resp.status, (await resp.json())["error"]) == (405, "InvalidRequest")
        async with session.get(base + "sh.tangled.nope") as resp:
            assert (resp.status, (await resp.json())["error"]) == (404, "MethodNotImplemented")


async def test_only_the_owner_and_collaborators_pass_authorization(
    base: str, owner: Account, plc: FakePlc
) -> None:
    """A verified stranger is 403 AccessControl; a collaborator named by the owner gets the answer; so does the owner."""
    uri = f"at://{owner.did}/sh.tangled.repo/hello"
    stranger = plc.publish(Account(curve="p256"))
    collaborator = plc.publish(COLLABORATOR)
    status, body = await call(
        base, xrpc.LIST_SECRETS, stranger.token(xrpc.LIST_SECRETS), params={"repo": uri}
    )
    assert (status, body["error"]) == (403, "AccessControl")
    assert stranger.did in body["message"]
    status, body = await call(
        base, xrpc.ADD_SECRET, stranger.token(xrpc.ADD_SECRET), json={"repo": uri, "key": "K", "value": "v"}
    )
    assert (status, body["error"]) == (403, "AccessControl")
    ok = await call(base, xrpc.LIST_SECRETS, collaborator.token(xrpc.LIST_SECRETS), params={"repo": uri})
    assert ok == (200, {"secrets": []})
    assert (await call(base, xrpc.LIST_SECRETS, owner.token(xrpc.LIST_SECRETS), params={"repo": uri}))[
        0
    ] == 200
