"""Bounded, address-vetted HTTP GETs: the control plane's one way to fetch from hosts that others name.

DID documents, PDS records and knot XRPC answers all come from hosts chosen
by whoever sent the request, so every fetch here is bounded in time and bytes,
follows no redirect, and (unless TACK_DEV) refuses http and any address that
is not global unicast: private, loopback, link-local, shared, reserved,
multicast. Host names are resolved once, the answers vetted, and the
connection made to a vetted address (aiohttp connects to exactly what the
resolver returns), so DNS cannot rebind between the check and the connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from tack_control import metrics


log = logging.getLogger(__name__)

Target = Literal["plc", "did_web", "pds", "knot", "doctor"]
"""What a fetch is for: the ``target`` label of ``tack_outbound_fetches_total``."""

USER_AGENT = "tack-spindle"


class FetchError(Exception):
    """A fetch that did not produce an answer; ``reason`` is a bounded label, the message says more."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ForbiddenAddress(Exception):
    """Every address of a host is one tack may not connect to (deliberately not an OSError, so aiohttp passes it on)."""


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetcher may do. The defaults are production's; TACK_DEV allows http and private addresses."""

    allow_http: bool = False
    allow_private: bool = False
    timeout_s: float = 5.0
    max_bytes: int = 1 << 20

    @classmethod
    def for_dev(cls, dev: bool, timeout_s: float = 5.0) -> FetchPolicy:
        """Production's policy, or the development one with TACK_DEV."""
        return cls(allow_http=dev, allow_private=dev, timeout_s=timeout_s)


@dataclass(frozen=True)
class Fetched:
    """An answer: status, media type and the whole (bounded) body."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON; FetchError ``bad_json`` when it is not."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise FetchError("bad_json", "the answer is not JSON") from None


def address_allowed(host: str) -> bool:
    """Whether ``host`` (an IP address) is global unicast, looking through IPv4-mapped and 6to4 forms."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is not None and not address_allowed(str(embedded)):
            return False
    return addr.is_global and not addr.is_multicast


class _VettingResolver(AbstractResolver):
    """The system resolver, keeping only addresses tack may connect to."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if address_allowed(a["host"])]
        if not allowed:
            shown = ", ".join(sorted({a["host"] for a in answers}))
            raise ForbiddenAddress(f"{host} resolves only to addresses tack does not connect to ({shown})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class SafeFetcher:
    """GETs under one :class:`FetchPolicy`, on one connection pool; counts each in ``tack_outbound_fetches_total``."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = DefaultResolver() if self.policy.allow_private else _VettingResolver()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver, limit=64, ttl_dns_cache=10),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
        return self._session

    def check_url(self, url: str) -> URL:
        """The parsed URL if policy allows fetching it (scheme, literal address); FetchError otherwise."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise FetchError("bad_url", f"not a URL: {url[:200]!r}") from None
        allowed_schemes = ("https", "http") if self.policy.allow_http else ("https",)
        if parsed.scheme not in allowed_schemes or not parsed.host or parsed.user or parsed.password:
            need = "an http(s)" if self.policy.allow_http else "an https"
            raise FetchError("bad_url", f"{url[:200]!r} is not {need} URL without credentials")
        if not self.policy.allow_private and _is_ip(parsed.host) and not address_allowed(parsed.host):
            raise FetchError("forbidden_address", f"{parsed.host} is not a public address")
        return parsed

    async def get(
        self,
        url: str,
        target: Target,
        *,
        params: dict[str, str] | None = None,
        accept: str = "application/json",
        max_bytes: int | None = None,
    ) -> Fetched:
        """GET ``url``: any HTTP status is an answer, except a redirect; FetchError for everything else."""
        limit = self.policy.max_bytes if max_bytes is None else max_bytes
        try:
            fetched = await self._get(self.check_url(url), params, accept, limit)
        except FetchError as exc:
            metrics.OUTBOUND_FETCHES.labels(target, exc.reason).inc()
            log.warning(
                "fetch failed",
                extra={"target": target, "url": url[:300], "reason": exc.reason, "error": str(exc)},
            )
            raise
        status_class = "ok" if fetched.status < 300 else f"http_{fetched.status // 100}xx"
        metrics.OUTBOUND_FETCHES.labels(target, status_class).inc()
        return fetched

    async def _get(self, url: URL, params: dict[str, str] | None, accept: str, limit: int) -> Fetched:
        timeout = self.policy.timeout_s
        try:
            async with (
                asyncio.timeout(timeout),
                self._client().get(
                    url, params=params, headers={"Accept": accept}, allow_redirects=False
                ) as resp,
            ):
                if 300 <= resp.status < 400:
                    where = resp.headers.get("Location", "")[:200]
                    raise FetchError(
                        "redirect",
                        f"{url.host} answered {resp.status} to {where!r}; redirects are not followed",
                    )
                if resp.content_length is not None and resp.content_length > limit:
                    raise FetchError(
                        "too_large", f"{url.host} announced {resp.content_length} bytes (limit {limit})"
                    )
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > limit:
                        raise FetchError("too_large", f"{url.host} sent more than {limit} bytes")
                return Fetched(resp.status, resp.content_type, bytes(body))
        except TimeoutError:
            raise FetchError("timeout", f"{url.host} did not answer within {timeout:g}s") from None
        except ForbiddenAddress as exc:
            raise FetchError("forbidden_address", str(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise FetchError("unreachable", f"{url.host}: {type(exc).__name__}: {str(exc)[:200]}") from None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
