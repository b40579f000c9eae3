"""SimulatedPlc: a loopback stand-in for the PLC directory (``plc.directory``), serving DID documents.

As the real directory answers a resolver: ``GET /<did>`` → the document as
``application/did+ld+json``; a DID it does not hold → 404 ``{"message": "DID not
registered: <did>"}``; ``GET /_health`` → ``{"version": …}``. Documents are
served as published (read at every request, so a change shows at once).
:func:`did_document` builds one the way the directory renders a PLC operation:
the ``#atproto`` signing key as a ``Multikey``, the ``#atproto_pds`` service
(for a repo DID, the knot that hosts it), the handle in ``alsoKnownAs``.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from tack_sandbox._loopback import JsonObject, LoopbackServer


PLC_DID = re.compile(r"^did:plc:[a-z2-7]{24}$")
_CONTEXT = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/multikey/v1",
    "https://w3id.org/security/suites/secp256k1-2019/v1",
]


def did_document(did: str, *, pds: str, handle: str | None = None, multikey: str | None = None) -> JsonObject:
    """The document the directory serves for ``did``: ``pds`` as ``#atproto_pds``, ``multikey`` as ``#atproto``."""
    if not PLC_DID.fullmatch(did):
        raise ValueError(f"not a did:plc (24 characters of base32 after did:plc:): {did!r}")
    doc: JsonObject = {
        "@context": _CONTEXT,
        "id": did,
        "alsoKnownAs": [f"at://{handle}"] if handle else [],
        "verificationMethod": [],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}],
    }
    if multikey is not None:
        doc["verificationMethod"] = [
            {"id": f"{did}#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": multikey}
        ]
    return doc


class SimulatedPlc(LoopbackServer):
    """A PLC directory holding the documents :meth:`publish` gives it."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.documents: dict[str, JsonObject] = {}
        self.requests: list[str] = []

    def _routes(self) -> list[web.RouteDef]:
        return [web.get("/_health", self._health), web.get("/{did}", self._document)]

    @property
    def url(self) -> str:
        """``http://host:port``, what ``TACK_PLC_URL`` names."""
        return f"http://{self.hostname}"

    def publish(self, document: JsonObject) -> None:
        """Serve ``document`` for its ``id`` from now on."""
        self.documents[str(document["id"])] = document

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "tack-sandbox"})

    async def _document(self, request: web.Request) -> web.Response:
        did = request.match_info["did"]
        self.requests.append(did)
        doc = self.documents.get(did)
        if doc is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        return web.Response(text=json.dumps(doc), content_type="application/did+ld+json")
