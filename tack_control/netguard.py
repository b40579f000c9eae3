"""Outbound HTTP for the control plane: bounded in time and bytes, public addresses only, no redirects.

Hosts named in records and tokens (knots, PDSes, did:web, a caller's DID) are
chosen by strangers, so every fetch resolves the host itself, refuses
private, loopback, link-local, shared, multicast and unspecified addresses
(also inside IPv4-mapped and 6to4 forms), and connects only to the addresses
it vetted: a DNS answer cannot change between the check and the connection.
An address written in the URL itself never reaches a resolver, so it is
vetted before the request. Redirects are not followed. Dev mode (TACK_DEV)
allows http and every address, since everything is on loopback there. Each
fetch is counted in ``tack_outbound_fetches_total{target, result}``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from tack_control import metrics


log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 1 << 20

Target = Literal["knot", "plc", "did_web", "pds", "doctor"]
"""What a fetch is for: the ``target`` label of ``tack_outbound_fetches_total``."""


class Refused(OSError):
    """The URL or its host's addresses are ones tack does not contact."""


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is global unicast, looking through IPv4-mapped, 6to4 and Teredo forms."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not is_public(str(embedded)):
            return False
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
            shown = ", ".join(sorted({r["host"] for r in results}))
            raise Refused(f"{host} resolves only to private or reserved addresses ({shown})")
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
                trust_env=False,
            )
        return self._session

    def check_url(self, url: str) -> None:
        """Refused unless ``url`` is https (http in dev mode), without credentials, not at a non-public address literal."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise Refused(f"not a URL: {url[:200]!r}") from None
        if parsed.scheme not in (("https", "http") if self.dev else ("https",)):
            raise Refused(f"refusing {parsed.scheme or url[:20]!r}: only https (http in dev mode)")
        if not parsed.host or parsed.user is not None or parsed.password is not None:
            raise Refused(f"refusing {url[:200]!r}: no host, or credentials in the URL")
        if not self.dev and _is_ip(parsed.host) and not is_public(parsed.host):
            raise Refused(f"refusing {parsed.host}: not a public address")

    async def get_bytes(
        self, url: str, max_bytes: int | None = None, *, target: Target = "knot"
    ) -> tuple[int, str, bytes]:
        """GET ``url``: (status, content type, body). OSError (Refused included)/TimeoutError on failure; ValueError past the size limit."""
        try:
            answer = await self._get(url, self.max_bytes if max_bytes is None else max_bytes)
        except Refused as exc:
            self._failed(target, "refused", url, exc)
            raise
        except TimeoutError as exc:
            self._failed(target, "timeout", url, exc)
            raise
        except ValueError as exc:
            self._failed(target, "too_large", url, exc)
            raise
        except OSError as exc:
            self._failed(target, "unreachable", url, exc)
            raise
        status = answer[0]
        metrics.OUTBOUND_FETCHES.labels(target, "ok" if status < 300 else f"http_{status // 100}xx").inc()
        return answer

    async def _get(self, url: str, limit: int) -> tuple[int, str, bytes]:
        self.check_url(url)
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
        except aiohttp.ClientConnectorDNSError as exc:
            # A refusal by PublicResolver arrives wrapped as a DNS error.
            if isinstance(exc.os_error, Refused):
                raise exc.os_error from None
            raise OSError(str(exc) or type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise OSError(str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise TimeoutError(f"no complete answer within {self.timeout_s:g}s") from None

    @staticmethod
    def _failed(target: Target, result: str, url: str, exc: Exception) -> None:
        metrics.OUTBOUND_FETCHES.labels(target, result).inc()
        log.warning(
            "outbound fetch failed",
            extra={"target": target, "url": url[:300], "result": result, "error": str(exc)[:300]},
        )

    async def get_json(self, url: str, *, target: Target = "knot") -> tuple[int, Any]:
        """GET ``url`` and parse its JSON body (None for an empty body); ValueError for anything else."""
        status, _, body = await self.get_bytes(url, target=target)
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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
