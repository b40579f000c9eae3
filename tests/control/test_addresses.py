"""Which knot addresses tack may connect to (tack_control.ingest.addresses)."""

from __future__ import annotations

import ipaddress

import pytest

from tack_control.ingest.addresses import AddressRefused, Endpoint, split_knot, vet_host


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "::ffff:10.0.0.1"]
)
async def test_non_public_address_literals_are_refused_without_dev(host: str) -> None:
    """netguard's policy applies: private, loopback, link-local, shared and unspecified addresses are refused."""
    with pytest.raises(AddressRefused) as info:
        await vet_host(host, 443, dev=False)
    assert info.value.reason == "forbidden_address"
    assert ipaddress.ip_address((await vet_host(host, 443, dev=True)).address) == ipaddress.ip_address(host)


@pytest.mark.parametrize(
    ("knot", "expected"),
    [
        ("knot.example.com", ("knot.example.com", 443)),
        ("Knot.Example.COM:8443", ("knot.example.com", 8443)),
        ("127.0.0.1:5555", ("127.0.0.1", 5555)),
        ("[2001:db8::1]:8080", ("[2001:db8::1]", 8080)),
        ("dev_knot:3000", ("dev_knot", 3000)),
    ],
)
def test_knot_hosts_are_split_and_lowercased(knot: str, expected: tuple[str, int]) -> None:
    """`host`, `host:port` and `[v6]:port` give the lowercased host and the port (443 by default)."""
    assert split_knot(knot, 443) == expected


@pytest.mark.parametrize(
    "knot", ["", "a b", "knot/path", "user@knot", "knot:0", "knot:70000", "[nothex]:1", "-bad-"]
)
def test_malformed_knot_hosts_are_refused(knot: str) -> None:
    """Anything that is not a host name or address with an optional port is `invalid_host`."""
    with pytest.raises(AddressRefused) as info:
        split_knot(knot, 443)
    assert info.value.reason == "invalid_host"


async def test_vetting_resolves_and_pins() -> None:
    """A name resolving to loopback is refused without dev and pinned to its address with dev."""
    with pytest.raises(AddressRefused) as info:
        await vet_host("localhost", 8080, dev=False)
    assert info.value.reason == "forbidden_address"
    endpoint = await vet_host("localhost", 8080, dev=True)
    assert endpoint.address in ("127.0.0.1", "::1")
    assert endpoint.curl_resolve in ("localhost:8080:127.0.0.1", "localhost:8080:[::1]")
    assert not endpoint.is_ip_literal
    assert (await vet_host("8.8.8.8", 443, dev=False)) == Endpoint("8.8.8.8", 443, "8.8.8.8")
    assert Endpoint("[::1]", 80, "::1").is_ip_literal


async def test_unresolvable_names_are_a_dns_error() -> None:
    """A name that does not resolve fails with `dns` (`.invalid` never resolves)."""
    with pytest.raises(AddressRefused) as info:
        await vet_host("knot.invalid", 443, dev=True)
    assert info.value.reason == "dns"
