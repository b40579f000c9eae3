"""A knot's host for a subprocess (git): parsed, resolved once, vetted, and the address to pin it to.

Fetches made with aiohttp go through ``tack_control.netguard``; git runs in its own process, so it
cannot use netguard's resolver. ``vet_host`` resolves the name here, keeps only addresses netguard's
policy allows (``is_public``: no private, loopback, link-local, shared, multicast or unspecified
address, unless ``TACK_DEV`` is set), and the caller pins git to the returned address (curl's
``CURLOPT_RESOLVE``), so a second DNS answer cannot rebind the name to an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

from tack_control.netguard import is_public


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_KNOT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+)(?::(?P<port>[0-9]{1,5}))?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """The host cannot be used; ``reason`` is a short code (``invalid_host``, ``dns``, ``forbidden_address``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """A vetted destination: the host as written (lowercased), its port and the address to connect to."""

    host: str
    port: int
    address: str

    @property
    def is_ip_literal(self) -> bool:
        """Whether ``host`` is itself an address (nothing to pin)."""
        return _ip(self.host.strip("[]")) is not None

    @property
    def curl_resolve(self) -> str:
        """The ``host:port:address`` entry for curl's ``CURLOPT_RESOLVE`` (git's ``http.curloptResolve``)."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host}:{self.port}:{address}"


def split_knot(knot: str, default_port: int) -> tuple[str, int]:
    """``host`` or ``host:port`` (``[v6]:port``) as (lowercased host, port); AddressRefused when malformed."""
    m = _KNOT.fullmatch(knot.strip())
    if m is None:
        raise AddressRefused("invalid_host", f"not a knot host: {knot!r}")
    host = m.group("host").lower()
    port = int(m.group("port") or default_port)
    if not 0 < port < 65536:
        raise AddressRefused("invalid_host", f"bad port in knot host {knot!r}")
    if host.startswith("["):
        if not isinstance(_ip(host[1:-1]), ipaddress.IPv6Address):
            raise AddressRefused("invalid_host", f"not a knot host: {knot!r}")
    elif _ip(host) is None and not _HOSTNAME.fullmatch(host):
        raise AddressRefused("invalid_host", f"not a knot host: {knot!r}")
    return host, port


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def vet_host(host: str, port: int, *, dev: bool) -> Endpoint:
    """Resolve ``host`` and pick an address tack may connect to; AddressRefused when there is none."""
    literal = _ip(host.strip("[]"))
    if literal is not None:
        candidates = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise AddressRefused("dns", f"cannot resolve {host}: {exc}") from None
        candidates = [a for a in (_ip(str(info[4][0]).split("%")[0]) for info in infos) if a is not None]
        if not candidates:
            raise AddressRefused("dns", f"{host} has no addresses")
    for address in candidates:
        if dev or is_public(str(address)):
            return Endpoint(host, port, str(address))
    shown = ", ".join(sorted({str(a) for a in candidates}))
    raise AddressRefused(
        "forbidden_address",
        f"{host} resolves to {shown}: private, loopback or link-local addresses are refused (set TACK_DEV to allow)",
    )
