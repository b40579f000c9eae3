"""Service auth end to end: real tokens of both curves, DID documents from a fake PLC directory, nonces in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from tack_control.engine.db import open_db
from tack_control.identity.replay import ReplayStore
from tack_control.identity.resolver import DidResolver
from tack_control.identity.serviceauth import ServiceAuth, authenticate
from tack_control.identity.tokens import AuthError
from tack_control.netguard import Fetcher
from tack_control.web import keys
from tests.fakes.atproto import FakePlc
from tests.support.atproto import HOSTNAME, Account, claims_of, sign_compact


LXM = "sh.tangled.repo.listSecrets"


@pytest.fixture
def auth(plc: FakePlc, fetcher: Fetcher, conn: sqlite3.Connection) -> ServiceAuth:
    """Service auth for HOSTNAME, resolving through the fake PLC, nonces in the test database."""
    return ServiceAuth(DidResolver(fetcher, plc.url, dev=True), ReplayStore(conn), HOSTNAME)


def counted(result: str) -> float:
    """tack_service_auth_total{result}."""
    return REGISTRY.get_sample_value("tack_service_auth_total", {"result": result}) or 0.0


async def refused(auth: ServiceAuth, token: str | list[str], lxm: str = LXM) -> str:
    """The reason ``auth`` refuses the token (or header values) for."""
    values = token if isinstance(token, list) else [f"Bearer {token}"]
    with pytest.raises(AuthError) as caught:
        await auth.verify(values, lxm)
    return caught.value.reason


@pytest.mark.parametrize("curve", ["p256", "k256"])
async def test_valid_tokens_of_each_curve_are_accepted(plc: FakePlc, auth: ServiceAuth, curve: Any) -> None:
    """ES256 (p256) and ES256K (k256) tokens from accounts on the PLC authenticate as their DID, and are counted ok."""
    account = plc.publish(Account(curve=curve))
    before = counted("ok")
    assert await auth.verify([f"Bearer {account.token(LXM)}"], LXM) == account.did
    assert counted("ok") == before + 1


CASES: list[tuple[str, Callable[[Account], str | list[str]]]] = [
    ("bad_aud", lambda a: a.token(aud="did:web:elsewhere.example")),
    ("bad_lxm", lambda a: a.token("sh.tangled.repo.addSecret")),
    ("expired", lambda a: a.token(iat_offset=-120)),
    ("not_yet_valid", lambda a: a.token(iat_offset=300)),
    ("too_long_lived", lambda a: a.token(lifetime=7200)),
    ("bad_signature", lambda a: sign_compact(Account().key, {"alg": "ES256K", "typ": "JWT"}, _claims(a))),
    ("bad_alg", lambda a: a.token(header={"alg": "none", "typ": "JWT"})),
    (
        "key_mismatch",
        lambda a: sign_compact(Account(curve="p256").key, {"alg": "ES256", "typ": "JWT"}, _claims(a)),
    ),
    ("malformed", lambda a: "eyJhbGciOiJFUzI1NksifQ.%%%.abc"),
    ("too_large", lambda a: ["Bearer " + "a" * 8000]),
    ("missing", lambda a: []),
    ("bad_scheme", lambda a: [f"Basic {a.token()}"]),
]


def _claims(account: Account) -> dict[str, Any]:
    return claims_of(account.token(LXM))


@pytest.mark.parametrize(("expected", "make"), CASES, ids=[c[0] for c in CASES])
async def test_each_bad_token_is_refused_with_its_reason(
    plc: FakePlc, auth: ServiceAuth, expected: str, make: Callable[[Account], str | list[str]]
) -> None:
    """Wrong aud or lxm, expired, future, too long-lived, forged, alg none, curve mismatch, malformed, oversize, absent."""
    account = plc.publish(Account(curve="k256"))
    before = counted(expected)
    assert await refused(auth, make(account)) == expected
    assert counted(expected) == before + 1


async def test_unknown_did_is_refused(auth: ServiceAuth) -> None:
    """A well-signed token from a DID the PLC does not know is unknown_did."""
    assert await refused(auth, Account().token()) == "unknown_did"


async def test_a_did_without_a_key_is_refused(
    plc: FakePlc, auth: ServiceAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document without a usable #atproto key is no_key."""
    account = plc.publish(Account())
    monkeypatch.setattr(account, "document", lambda: {"id": account.did, "verificationMethod": []})
    assert await refused(auth, account.token()) == "no_key"


async def test_a_jti_is_used_once_even_after_a_restart(
    plc: FakePlc, fetcher: Fetcher, tmp_path: Path
) -> None:
    """The same token twice: the second is replayed, also with the database reopened (a restart)."""
    path = str(tmp_path / "replay.db")
    account = plc.publish(Account())
    token = account.token()
    first = open_db(path)
    auth = ServiceAuth(DidResolver(fetcher, plc.url, dev=True), ReplayStore(first), HOSTNAME)
    assert await auth.verify([f"Bearer {token}"], LXM) == account.did
    assert await refused(auth, token) == "replayed"
    first.close()
    reopened = open_db(path)
    try:
        auth = ServiceAuth(DidResolver(fetcher, plc.url, dev=True), ReplayStore(reopened), HOSTNAME)
        assert await refused(auth, token) == "replayed"
        assert await auth.verify([f"Bearer {account.token()}"], LXM) == account.did
    finally:
        reopened.close()


async def test_a_forged_token_does_not_use_up_its_jti(plc: FakePlc, auth: ServiceAuth) -> None:
    """A nonce is consumed only after the signature verifies: a forgery carrying a jti does not block the real token."""
    account = plc.publish(Account())
    claims = _claims(account)
    forged = sign_compact(Account().key, {"alg": "ES256K", "typ": "JWT"}, claims)
    assert await refused(auth, forged) == "bad_signature"
    real = sign_compact(account.key, {"alg": "ES256K", "typ": "JWT"}, claims)
    assert await auth.verify([f"Bearer {real}"], LXM) == account.did


@pytest.mark.parametrize(("before", "after"), [("k256", "k256"), ("p256", "k256")])
async def test_a_rotated_key_is_fetched_again_once(
    plc: FakePlc, auth: ServiceAuth, before: Any, after: Any
) -> None:
    """After the DID's key changes (same curve or not), the cached key fails, the document is refetched once, the token passes."""
    account = plc.publish(Account(curve=before))
    assert await auth.verify([f"Bearer {account.token()}"], LXM) == account.did
    account.rotate(after)
    assert await auth.verify([f"Bearer {account.token()}"], LXM) == account.did
    assert plc.hits[account.did] == 2
    assert await auth.verify([f"Bearer {account.token()}"], LXM) == account.did
    assert plc.hits[account.did] == 2


async def test_bad_signatures_do_not_make_tack_refetch_every_time(plc: FakePlc, auth: ServiceAuth) -> None:
    """Forged tokens for one DID cause one forced refetch per interval, not one per token."""
    account = plc.publish(Account())
    for _ in range(5):
        forged = sign_compact(Account().key, {"alg": "ES256K", "typ": "JWT"}, _claims(account))
        assert await refused(auth, forged) == "bad_signature"
    assert plc.hits[account.did] == 2


@pytest.fixture
async def app_url(auth: ServiceAuth) -> AsyncIterator[str]:
    """A loopback app whose one route authenticates with ``authenticate`` and echoes the caller."""

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"did": await authenticate(request, LXM)})

    app = web.Application()
    app[keys.SERVICE_AUTH] = auth
    app.router.add_get(f"/xrpc/{LXM}", whoami)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/xrpc/{LXM}"
    await runner.cleanup()


async def test_handlers_get_the_caller_or_a_401_xrpc_error(plc: FakePlc, app_url: str) -> None:
    """authenticate(): the DID for a good token; 401 with {error, message: reason…} and WWW-Authenticate otherwise."""
    account = plc.publish(Account())
    async with aiohttp.ClientSession() as session:
        async with session.get(app_url, headers={"Authorization": f"Bearer {account.token()}"}) as resp:
            assert (resp.status, await resp.json()) == (200, {"did": account.did})
        async with session.get(app_url) as resp:
            body = await resp.json()
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert body["error"] == "AuthRequired"
            assert body["message"].startswith("missing: ")
        async with session.get(
            app_url, headers={"Authorization": f"Bearer {account.token(lifetime=-60)}"}
        ) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]) == (401, "ExpiredToken")
            assert set(body) == {"error", "message"} and body["message"].startswith("expired: ")
        async with session.get(app_url, headers={"Authorization": "Bearer " + "a" * 7000}) as resp:
            assert (resp.status, (await resp.json())["message"][:10]) == (401, "too_large:")
