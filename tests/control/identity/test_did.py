"""DIDs and DID documents: syntax, where documents live, and what tack reads from them."""

from __future__ import annotations

from typing import Any

import pytest

from tack_control.identity.did import (
    BadDid,
    BadDocument,
    check_did,
    did_web_host,
    document_url,
    parse_document,
    web_did,
)
from tack_control.identity.keys import b58encode
from tests.support.atproto import Account


PLC = "https://plc.example.com"


@pytest.mark.parametrize(
    "did",
    [
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        "did:web:example.com",
        "did:web:localhost%3A8080",
        "did:web:a.b-c.example",
    ],
)
def test_atproto_dids_are_accepted(did: str) -> None:
    """did:plc with 24 base32 characters and hostname-level did:web pass."""
    assert check_did(did) == did


@pytest.mark.parametrize(
    ("did", "why"),
    [
        ("did:plc:short", "24 characters"),
        ("did:plc:ewvi7nxzyoun6zhxrhs64oi1", "24 characters"),
        ("did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "not used by atproto"),
        ("did:web:example.com:user:alice", "path-based"),
        ("did:web:exa%2Fmple.com", "hostname"),
        ("did:web:-bad.example", "hostname"),
        ("did:web:example.com%3A0", "port"),
        ("did:web:example.com%3A99999", "port"),
        ("did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto", "not a DID"),
        ("did:plc:../../x", "not a DID"),
        ("did:web:" + "a" * 2100, "not a DID"),
    ],
)
def test_other_dids_are_refused_with_the_reason(did: str, why: str) -> None:
    """Bad syntax, methods atproto does not use, path-based did:web and bad ports are refused."""
    with pytest.raises(BadDid, match=why):
        check_did(did)


def test_did_web_port_is_percent_encoded_both_ways() -> None:
    """A host:port becomes did:web:host%3Aport, and back (either case of %3a)."""
    assert web_did("127.0.0.1:8080") == "did:web:127.0.0.1%3A8080"
    assert did_web_host("did:web:127.0.0.1%3A8080") == ("127.0.0.1", 8080)
    assert did_web_host("did:web:localhost%3a9") == ("localhost", 9)
    assert did_web_host("did:web:example.com") == ("example.com", None)


def test_document_urls() -> None:
    """did:plc under the PLC URL; did:web at /.well-known/did.json over https; with a port only in dev, over http."""
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    assert document_url(did, PLC + "/", dev=False) == f"{PLC}/{did}"
    assert document_url("did:web:example.com", PLC, dev=False) == "https://example.com/.well-known/did.json"
    assert (
        document_url("did:web:localhost%3A8080", PLC, dev=True)
        == "http://localhost:8080/.well-known/did.json"
    )
    with pytest.raises(BadDid, match="TACK_DEV"):
        document_url("did:web:localhost%3A8080", PLC, dev=False)


@pytest.mark.parametrize("curve", ["p256", "k256"])
def test_plc_document_yields_key_and_pds(curve: Any) -> None:
    """A PLC-style document gives the #atproto Multikey of its curve and the #atproto_pds endpoint."""
    account = Account(curve=curve)
    doc = parse_document(account.did, account.document())
    assert doc.signing_key is not None
    assert doc.signing_key.alg == ("ES256" if curve == "p256" else "ES256K")
    assert doc.signing_key.multikey() == account.multikey()
    assert doc.pds == "https://pds.example.com"
    assert doc.knot == doc.pds


def test_first_usable_atproto_key_wins_and_problems_are_reported() -> None:
    """Unusable #atproto entries are skipped; without a usable one the document says why."""
    account = Account()
    raw = account.document()
    good = raw["verificationMethod"][0]
    foreign = {**good, "controller": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}
    other_type = {**good, "type": "JsonWebKey2020"}
    raw["verificationMethod"] = [
        {"id": "#other", "type": "Multikey"},
        foreign,
        other_type,
        {**good, "id": "#atproto"},
    ]
    doc = parse_document(account.did, raw)
    assert doc.signing_key is not None and doc.signing_key.multikey() == account.multikey()
    raw["verificationMethod"] = [foreign]
    assert parse_document(account.did, raw).key_problem == "the #atproto key's controller is not the DID"
    raw["verificationMethod"] = [other_type]
    assert "is not Multikey" in parse_document(account.did, raw).key_problem
    raw["verificationMethod"] = [{**good, "publicKeyMultibase": "z" + b58encode(b"\xe7\x01" + bytes(33))}]
    assert "unusable" in parse_document(account.did, raw).key_problem
    del raw["verificationMethod"]
    assert parse_document(account.did, raw).signing_key is None


def test_legacy_key_type_is_read() -> None:
    """EcdsaSecp256k1VerificationKey2019 with a bare multibase point is an ES256K key."""
    did = "did:web:legacy.example.com"
    raw = {
        "id": did,
        "verificationMethod": [
            {
                "id": "#atproto",
                "type": "EcdsaSecp256k1VerificationKey2019",
                "controller": did,
                "publicKeyMultibase": "z25z9DTpsiYYJKGsWmSPJK2NFN8PcJtZig12K59UgW7q5t",
            }
        ],
    }
    key = parse_document(did, raw).signing_key
    assert key is not None and key.multikey() == "zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc"


def test_knot_endpoint_of_a_repo_did() -> None:
    """A repo DID names its knot as #tangled_knot (preferred) or #atproto_pds; bad endpoints are ignored."""
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    pds = {
        "id": "#atproto_pds",
        "type": "AtprotoPersonalDataServer",
        "serviceEndpoint": "https://knot1.example/",
    }
    knot = {"id": f"{did}#tangled_knot", "type": "TangledKnot", "serviceEndpoint": "https://knot2.example"}
    assert parse_document(did, {"id": did, "service": [pds]}).knot == "https://knot1.example"
    assert parse_document(did, {"id": did, "service": [pds, knot]}).knot == "https://knot2.example"
    for endpoint in ("ftp://x.example", "https://x.example/?q", "https://u@x.example", 7):
        bad = {**pds, "serviceEndpoint": endpoint}
        assert parse_document(did, {"id": did, "service": [bad]}).pds is None
    wrong_type = {**pds, "type": "Something"}
    assert parse_document(did, {"id": did, "service": [wrong_type]}).pds is None


@pytest.mark.parametrize("raw", [[], "doc", {"id": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, {}])
def test_a_document_about_something_else_is_refused(raw: Any) -> None:
    """Not an object, or an id other than the DID: BadDocument."""
    with pytest.raises(BadDocument):
        parse_document("did:plc:ewvi7nxzyoun6zhxrhs64oiz", raw)
