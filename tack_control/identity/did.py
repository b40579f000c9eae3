"""DIDs and DID documents as atproto uses them. Free of I/O.

Only ``did:plc`` and hostname-level ``did:web`` are atproto DIDs. A DID
document yields the account's signing key (the ``#atproto`` verification
method: ``Multikey``, or the legacy ``EcdsaSecp256{r,k}1VerificationKey2019``
types the DID spec still describes), its PDS (``#atproto_pds``) and, for a
repo DID, its knot (``#tangled_knot``, else ``#atproto_pds``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tack_control.identity.keys import LEGACY_TYPES, BadKey, PublicKey, parse_legacy, parse_multikey


MAX_DID = 2048
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_PLC = re.compile(r"^did:plc:[a-z2-7]{24}$")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_WITH_PORT = re.compile(r"^(.*?)%3[aA](.*)$")
MAX_ENDPOINT = 512


class BadDid(ValueError):
    """Not a DID tack can resolve; the message says why."""


class BadDocument(ValueError):
    """A DID document that does not describe its DID; the message says why."""


def is_did(text: str) -> bool:
    """Whether ``text`` has the atproto DID syntax (any method)."""
    return len(text) <= MAX_DID and _DID.fullmatch(text) is not None


def check_did(did: str) -> str:
    """``did`` if it is a did:plc or did:web tack can resolve; BadDid otherwise."""
    if not is_did(did):
        raise BadDid("not a DID (did:<method>:<id>, no '#', '?' or '/')")
    if did.startswith("did:plc:"):
        if not _PLC.fullmatch(did):
            raise BadDid("a did:plc is 24 characters of lower-case base32 after did:plc:")
        return did
    if did.startswith("did:web:"):
        did_web_host(did)
        return did
    raise BadDid(f"DID method {did.split(':')[1]!r} is not used by atproto (did:plc or did:web)")


def did_web_host(did: str) -> tuple[str, int | None]:
    """The host and optional port of a hostname-level did:web (``%3A`` before a port, per the did:web spec)."""
    rest = did.removeprefix("did:web:")
    if ":" in rest:
        raise BadDid("path-based did:web is not used by atproto")
    host, port = rest, None
    split = _WITH_PORT.fullmatch(rest)
    if split is not None:
        host, port = split.group(1), split.group(2)
    if "%" in host or not _HOST.fullmatch(host) or len(host) > 253:
        raise BadDid("a did:web names a hostname, with only %3A (a port) percent-encoded")
    if port is None:
        return host, None
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise BadDid("the port of a did:web must be a number between 1 and 65535")
    return host, int(port)


def document_url(did: str, plc_url: str, dev: bool) -> str:
    """Where ``did``'s document is served: the PLC directory, or the did:web host's ``/.well-known/did.json``.

    A did:web with a port is development-only (the did:web spec's testing
    form) and is fetched over http; without TACK_DEV it is refused.
    """
    check_did(did)
    if did.startswith("did:plc:"):
        return f"{plc_url.rstrip('/')}/{did}"
    host, port = did_web_host(did)
    if port is None:
        return f"https://{host}/.well-known/did.json"
    if not dev:
        raise BadDid("a did:web with a port is only accepted in development (TACK_DEV)")
    return f"http://{host}:{port}/.well-known/did.json"


def web_did(hostname: str) -> str:
    """The did:web of a ``host[:port]`` (the port as ``%3A``), e.g. this spindle's own."""
    return "did:web:" + hostname.replace(":", "%3A")


@dataclass(frozen=True)
class DidDocument:
    """What tack reads from a DID document."""

    did: str
    signing_key: PublicKey | None
    key_problem: str  # why there is no signing key ("" when there is one)
    pds: str | None
    knot: str | None


def parse_document(did: str, doc: Any) -> DidDocument:
    """The parts tack uses of ``did``'s document; BadDocument when it is not an object about ``did``."""
    if not isinstance(doc, dict):
        raise BadDocument("the DID document is not a JSON object")
    if doc.get("id") != did:
        raise BadDocument(f"the document's id {str(doc.get('id'))[:100]!r} is not the DID")
    key, problem = _signing_key(did, doc.get("verificationMethod"))
    pds = _endpoint(did, doc.get("service"), "atproto_pds", "AtprotoPersonalDataServer")
    knot = _endpoint(did, doc.get("service"), "tangled_knot", None) or pds
    return DidDocument(did, key, problem, pds, knot)


def _matches(did: str, entry: dict[str, Any], fragment: str) -> bool:
    return entry.get("id") in (f"#{fragment}", f"{did}#{fragment}")


def _signing_key(did: str, methods: Any) -> tuple[PublicKey | None, str]:
    """The first usable ``#atproto`` verification method, or why there is none."""
    problem = "the DID document has no #atproto verification method"
    for entry in methods if isinstance(methods, list) else []:
        if not isinstance(entry, dict) or not _matches(did, entry, "atproto"):
            continue
        controller = entry.get("controller", did)
        value = entry.get("publicKeyMultibase")
        key_type = entry.get("type")
        if controller != did:
            problem = "the #atproto key's controller is not the DID"
        elif not isinstance(value, str):
            problem = "the #atproto key has no publicKeyMultibase"
        elif key_type != "Multikey" and key_type not in LEGACY_TYPES:
            problem = f"the #atproto key's type {str(key_type)[:60]!r} is not Multikey"
        else:
            try:
                return (
                    parse_multikey(value) if key_type == "Multikey" else parse_legacy(key_type, value)
                ), ""
            except BadKey as exc:
                problem = f"the #atproto key is unusable: {exc}"
    return None, problem


def _endpoint(did: str, services: Any, fragment: str, service_type: str | None) -> str | None:
    for entry in services if isinstance(services, list) else []:
        if not isinstance(entry, dict) or not _matches(did, entry, fragment):
            continue
        if service_type is not None and entry.get("type") != service_type:
            continue
        url = entry.get("serviceEndpoint")
        if (
            isinstance(url, str)
            and url.startswith(("https://", "http://"))
            and len(url) <= MAX_ENDPOINT
            and not any(c in url for c in "?#@ \\")
        ):
            return url.rstrip("/")
    return None
