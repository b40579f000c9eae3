"""The control plane's outbound fetcher: public addresses only (outside dev), no redirects, size and time limits, counted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from prometheus_client import REGISTRY

from tack_control.netguard import Fetcher, PublicResolver, Refused, is_public


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
        await asyncio.sleep(3)
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
async def fetcher() -> AsyncIterator[Fetcher]:
    """A dev-mode fetcher (loopback allowed), 0.5 s and 1000 bytes."""
    f = Fetcher(dev=True, timeout_s=0.5, max_bytes=1000)
    yield f
    await f.close()


def count(target: str, result: str) -> float:
    """The current value of tack_outbound_fetches_total{target, result}."""
    return (
        REGISTRY.get_sample_value("tack_outbound_fetches_total", {"target": target, "result": result}) or 0.0
    )


async def test_an_answer_is_read_whole_and_counted(server: str, fetcher: Fetcher) -> None:
    """200 with JSON is returned; a 404 and a redirect are answers too (the caller decides, nothing is followed)."""
    before = count("pds", "ok"), count("pds", "http_4xx"), count("pds", "http_3xx")
    assert await fetcher.get_json(server + "/ok", target="pds") == (200, {"ok": True})
    assert (await fetcher.get_bytes(server + "/missing", target="pds"))[0] == 404
    assert (await fetcher.get_bytes(server + "/redirect", target="pds"))[0] == 302
    after = count("pds", "ok"), count("pds", "http_4xx"), count("pds", "http_3xx")
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1)


@pytest.mark.parametrize(
    ("path", "error", "result"),
    [
        ("/big", ValueError, "too_large"),
        ("/stream", ValueError, "too_large"),
        ("/slow", TimeoutError, "timeout"),
    ],
)
async def test_size_and_time_limits(
    server: str, fetcher: Fetcher, path: str, error: type[Exception], result: str
) -> None:
    """Oversize (announced or streamed) and a slow server fail quickly with their error, counted by result."""
    before = count("plc", result)
    started = asyncio.get_running_loop().time()
    with pytest.raises(error):
        await fetcher.get_bytes(server + path, target="plc")
    assert asyncio.get_running_loop().time() - started < 2
    assert count("plc", result) == before + 1


async def test_private_addresses_and_http_are_refused_outside_dev(server: str) -> None:
    """Outside dev: a loopback literal (v4, v6, v4-mapped), a name resolving to loopback, and http are refused unconnected."""
    port = server.rsplit(":", 1)[1]
    strict = Fetcher(dev=False, timeout_s=2)
    before = count("did_web", "refused")
    urls = [
        f"https://127.0.0.1:{port}/ok",
        f"https://localhost:{port}/ok",
        f"https://[::1]:{port}/ok",
        f"https://[::ffff:127.0.0.1]:{port}/ok",
        "https://169.254.169.254/latest",
        server + "/ok",
        f"https://user:pw@example.com:{port}/",
        "file:///etc/passwd",
        "not a url",
    ]
    try:
        for url in urls:
            with pytest.raises(Refused):
                await strict.get_bytes(url, target="did_web")
    finally:
        await strict.close()
    assert count("did_web", "refused") == before + len(urls)


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
def test_only_global_unicast_addresses_are_public(address: str, allowed: bool) -> None:
    """Private, loopback, link-local, shared, multicast, mapped and 6to4-wrapped private addresses are not public."""
    assert is_public(address) is allowed


async def test_the_resolver_keeps_only_public_answers() -> None:
    """Connections go only to vetted addresses; a name with none left is refused outright (no rebinding window)."""

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

    resolver = PublicResolver(dev=False)
    resolver._inner = Inner(["93.184.215.14", "10.0.0.7"])  # type: ignore[assignment]
    assert [r["host"] for r in await resolver.resolve("mixed.example", 443)] == ["93.184.215.14"]
    resolver._inner = Inner(["127.0.0.1", "::1"])  # type: ignore[assignment]
    with pytest.raises(Refused, match=r"127\.0\.0\.1"):
        await resolver.resolve("rebind.example", 443)
