"""This spindle's did:web document (tack_control.web.ci.didweb)."""

from __future__ import annotations

import sqlite3

import aiohttp

from tack_control.ingest.registry import Registry
from tack_control.web.ci.didweb import did_document, did_web
from tests.support.ci import ci_app, serve


def test_a_port_is_percent_encoded_in_the_did_and_kept_in_the_endpoint() -> None:
    """host:port (dev) is did:web:host%3Aport; the endpoint carries the port; http only in dev."""
    assert did_web("spindle.example.com") == "did:web:spindle.example.com"
    assert did_web("127.0.0.1:8080") == "did:web:127.0.0.1%3A8080"
    dev = did_document("127.0.0.1:8080", dev=True)
    assert dev["id"] == "did:web:127.0.0.1%3A8080"
    assert dev["service"] == [
        {"id": "#tangled_spindle", "type": "TangledSpindle", "serviceEndpoint": "http://127.0.0.1:8080"}
    ]
    assert did_document("spindle.example.com", dev=False)["service"][0]["serviceEndpoint"] == (
        "https://spindle.example.com"
    )


async def test_did_json_is_served_at_the_well_known_path(
    conn: sqlite3.Connection, registry: Registry
) -> None:
    """GET /.well-known/did.json answers the document as JSON-LD, resolvable as did:web resolvers read it."""
    async with (
        serve(ci_app(conn, registry, hostname="spindle.example.com")) as url,
        aiohttp.ClientSession() as session,
        session.get(url + "/.well-known/did.json") as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "application/did+ld+json"
        document = await resp.json(content_type=None)
    assert document["@context"] == ["https://www.w3.org/ns/did/v1"]
    assert document["id"] == "did:web:spindle.example.com"
    [service] = document["service"]
    assert service["id"] == "#tangled_spindle" and service["serviceEndpoint"] == "https://spindle.example.com"
