"""The bounded, address-vetted fetcher: private addresses, http, redirects, size and time limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from prometheus_client import REGISTRY

from tack_control.identity.fetch import (
    FetchError,
    FetchPolicy,
    ForbiddenAddress,
    SafeFetcher,
    _VettingResolver,
    address_allowed,
)


DEV = FetchPolicy(allow_http=True, allow_private=True, timeout_s=0.5, max_bytes=1000)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """A loopback server with a normal, a big, a streamed-big, a redirecting and a slow answer."""

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"y" * 500)
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    def answer(response: web.Response) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return response

        return handler

    app = web.Application()
    app.router.add_get("/ok", answer(web.json_response({"ok": True})))
    app.router.add_get("/big", answer(web.Response(body=b"x" * 5000)))
    app.router.add_get("/stream", stream)
    app.router.add_get(
        "/redirect", answer(web.Response(status=302, headers={"Location": "http://169.254.169.254/"}))
    )
    app.router.add_get("/missing", answer(web.json_response({"error": "NotFound"}, status=404)))
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def fetcher() -> AsyncIterator[SafeFetcher]:
    """A fetcher with the development policy (loopback allowed), 0.5 s and 1000 bytes."""
    f = SafeFetcher(DEV)
    yield f
    await f.close()


def count(target: str, result: str) -> float:
    """The current value of tack_outbound_fetches_total{target, result}."""
    return (
        REGISTRY.get_sample_value("tack_outbound_fetches_total", {"target": target, "result": result}) or 0.0
    )


async def test_an_answer_is_read_whole_and_counted(server: str, fetcher: SafeFetcher) -> None:
    """200 with JSON is returned; a 404 is an answer too (the caller decides); both are counted."""
    before = count("pds", "ok"), count("pds", "http_4xx")
    fetched = await fetcher.get(server + "/ok", "pds")
    assert (fetched.status, fetched.json()) == (200, {"ok": True})
    assert (await fetcher.get(server + "/missing", "pds")).status == 404
    assert (count("pds", "ok"), count("pds", "http_4xx")) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/big", "too_large"), ("/stream", "too_large"), ("/redirect", "redirect"), ("/slow", "timeout")],
)
async def test_limits(server: str, fetcher: SafeFetcher, path: str, reason: str) -> None:
    """Oversize (announced or streamed), a redirect (never followed) and a slow server each fail with their reason."""
    before = count("knot", reason)
    started = asyncio.get_running_loop().time()
    with pytest.raises(FetchError) as caught:
        await fetcher.get(server + path, "knot")
    assert caught.value.reason == reason
    assert asyncio.get_running_loop().time() - started < 2
    assert count("knot", reason) == before + 1


async def test_private_addresses_and_http_are_refused_in_production(server: str) -> None:
    """Without TACK_DEV: a loopback IP literal, a name resolving to loopback, and http are all refused before connecting."""
    port = server.rsplit(":", 1)[1]
    strict = SafeFetcher(FetchPolicy(allow_http=True, allow_private=False, timeout_s=2))
    try:
        for url in (
            server + "/ok",
            f"http://localhost:{port}/ok",
            f"http://[::1]:{port}/ok",
            f"http://[::ffff:127.0.0.1]:{port}/ok",
        ):
            with pytest.raises(FetchError) as caught:
                await strict.get(url, "did_web")
            assert caught.value.reason == "forbidden_address", url
    finally:
        await strict.close()
    https_only = SafeFetcher(FetchPolicy())
    try:
        with pytest.raises(FetchError, match="https") as caught:
            await https_only.get("http://example.com/x", "did_web")
        assert caught.value.reason == "bad_url"
        for url in ("https://user:pw@example.com/", "not a url", "file:///etc/passwd"):
            with pytest.raises(FetchError):
                await https_only.get(url, "did_web")
    finally:
        await https_only.close()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::1", False),
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
    ],
)
def test_only_global_unicast_addresses_are_allowed(address: str, allowed: bool) -> None:
    """Private, loopback, link-local, shared, multicast, mapped and 6to4-wrapped private addresses are refused."""
    assert address_allowed(address) is allowed


async def test_vetting_resolver_keeps_only_allowed_answers() -> None:
    """The connection goes only to vetted addresses; a name with none left is refused outright."""

    class Inner:
        def __init__(self, hosts: list[str]) -> None:
            self.hosts = hosts

        async def resolve(
            self, host: str, port: int = 0, family: Any = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                {"hostname": host, "host": h, "port": port, "family": family, "proto": 0, "flags": 0}
                for h in self.hosts
            ]

        async def close(self) -> None:
            return None

    resolver = _VettingResolver()
    resolver._inner = Inner(["93.184.215.14", "10.0.0.7"])  # type: ignore[assignment]
    assert [r["host"] for r in await resolver.resolve("mixed.example", 443)] == ["93.184.215.14"]
    resolver._inner = Inner(["127.0.0.1", "::1"])  # type: ignore[assignment]
    with pytest.raises(ForbiddenAddress, match=r"127\.0\.0\.1"):
        await resolver.resolve("rebind.example", 443)
