"""Outbound HTTP for the control plane: bounded in time and bytes, public addresses only, no redirects.

Hosts named in records (knots, PDSes, did:web) are chosen by strangers, so
every fetch resolves the host itself, refuses private, loopback, link-local,
multicast and unspecified addresses (unless dev mode, where everything is on
loopback), and connects only to the addresses it vetted: a DNS answer cannot
change between the check and the connection. Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 1 << 20


class Refused(OSError):
    """The host resolves to an address tack does not contact, or to none."""


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is a globally routable unicast address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicResolver(AbstractResolver):
    """Resolves like the default resolver, then keeps only public addresses (all of them in dev mode)."""

    def __init__(self, dev: bool) -> None:
        self.dev = dev
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.dev:
            return results
        public = [r for r in results if is_public(r["host"])]
        if not public:
            raise Refused(f"{host} resolves only to private or reserved addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


class Fetcher:
    """One aiohttp session whose connections go only to vetted addresses."""

    def __init__(
        self, dev: bool, timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.dev = dev
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=PublicResolver(self.dev), limit=64, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(5.0, self.timeout_s)),
                headers={"User-Agent": "tack (spindle)"},
            )
        return self._session

    async def get_bytes(self, url: str, max_bytes: int | None = None) -> tuple[int, str, bytes]:
        """GET ``url``: (status, content type, body). OSError/TimeoutError on failure; ValueError past the size limit."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if not url.startswith("https://") and not (self.dev and url.startswith("http://")):
            raise Refused(f"refusing {url.split(':', 1)[0]}: only https (http in dev mode)")
        try:
            async with self._session_now().get(url, allow_redirects=False) as resp:
                if resp.content_length is not None and resp.content_length > limit:
                    raise ValueError(f"answer larger than {limit} bytes")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 << 10):
                    body += chunk
                    if len(body) > limit:
                        raise ValueError(f"answer larger than {limit} bytes")
                return resp.status, resp.content_type, bytes(body)
        except aiohttp.ClientError as exc:
            raise OSError(str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise TimeoutError(f"no complete answer within {self.timeout_s:g}s") from None

    async def get_json(self, url: str) -> tuple[int, Any]:
        """GET ``url`` and parse its JSON body (None for an empty body); ValueError for anything else."""
        status, _, body = await self.get_bytes(url)
        if not body:
            return status, None
        try:
            return status, json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not JSON: {str(exc)[:80]}") from None

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
