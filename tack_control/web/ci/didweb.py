"""``GET /.well-known/did.json``: this spindle's ``did:web`` document, so PDS service proxying reaches it.

A PDS proxying a call with ``atproto-proxy: did:web:<host>#tangled_spindle``
resolves the DID to this document and sends the call to the service
endpoint. Stock spindles serve none (the appview calls them directly);
third-party spindles serve this shape, with the service id and type used here.
A ``host:port`` hostname (dev) is ``did:web:host%3Aport`` and the endpoint
keeps the port. The endpoint is ``https://`` unless ``TACK_DEV`` is set, when a
spindle is served without TLS (``http://``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tack_control import metrics


SERVICE_ID = "#tangled_spindle"
SERVICE_TYPE = "TangledSpindle"


def did_web(hostname: str) -> str:
    """The ``did:web`` of a hostname (a port's colon percent-encoded)."""
    return "did:web:" + hostname.replace(":", "%3A")


def did_document(hostname: str, dev: bool) -> dict[str, Any]:
    """The DID document of the spindle at ``hostname``."""
    scheme = "http" if dev else "https"
    return {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did_web(hostname),
        "service": [{"id": SERVICE_ID, "type": SERVICE_TYPE, "serviceEndpoint": f"{scheme}://{hostname}"}],
    }


def make_handler(hostname: str, dev: bool) -> Handler:
    """The did.json handler for this hostname."""
    document = did_document(hostname, dev)

    async def handler(request: web.Request) -> web.Response:
        metrics.CI_REQUESTS.labels("did.json", "200").inc()
        return web.json_response(document, content_type="application/did+ld+json")

    return handler
