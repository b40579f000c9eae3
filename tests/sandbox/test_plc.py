"""SimulatedPlc: DID documents served as the PLC directory serves them, readable by tack's resolver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tack_control.identity.did import parse_document
from tack_control.identity.keys import from_crypto
from tack_sandbox.plc import SimulatedPlc, did_document


OWNER = "did:plc:tacksandboxowner22222222"


@pytest.fixture
async def plc() -> AsyncIterator[SimulatedPlc]:
    async with SimulatedPlc() as sim:
        yield sim


async def test_a_published_document_is_served_as_did_json(
    plc: SimulatedPlc, session: aiohttp.ClientSession
) -> None:
    """GET /<did> answers the document as application/did+ld+json; its key and PDS are what tack reads."""
    key = from_crypto(ec.generate_private_key(ec.SECP256K1()).public_key())
    plc.publish(did_document(OWNER, pds="http://127.0.0.1:9", handle="owner.test", multikey=key.multikey()))
    async with session.get(f"{plc.url}/{OWNER}") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/did+ld+json"
        doc = json.loads(await resp.text())
    assert doc["alsoKnownAs"] == ["at://owner.test"]
    parsed = parse_document(OWNER, doc)
    assert parsed.signing_key == key
    assert parsed.pds == "http://127.0.0.1:9"
    assert parsed.knot == "http://127.0.0.1:9"


async def test_unknown_dids_are_404_and_health_answers(
    plc: SimulatedPlc, session: aiohttp.ClientSession
) -> None:
    """A DID never published is 404 with the directory's message; /_health answers 200 with a version."""
    async with session.get(f"{plc.url}/{OWNER}") as resp:
        assert resp.status == 404
        assert await resp.json() == {"message": f"DID not registered: {OWNER}"}
    async with session.get(f"{plc.url}/_health") as resp:
        assert resp.status == 200
        assert "version" in await resp.json()


def test_a_document_needs_a_well_formed_did_plc() -> None:
    """did_document refuses what is not 24 base32 characters after did:plc: (the old sandbox owner was such a DID)."""
    with pytest.raises(ValueError, match="24 characters"):
        did_document("did:plc:tacksandboxowner0000000", pds="http://127.0.0.1:9")
    doc = did_document(OWNER, pds="http://127.0.0.1:9")
    assert doc["verificationMethod"] == []
    assert parse_document(OWNER, doc).signing_key is None
