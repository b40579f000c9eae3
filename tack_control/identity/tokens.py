"""The service-auth JWT profile tack accepts: parsing and every claim check, free of I/O.

atproto service auth (atproto.com/specs/xrpc, "Inter-Service Authentication"):
a compact JWS signed with the issuer's ``#atproto`` key. tack's profile, a
superset of the stock spindle's checks in line with the OCaml spindle's:

* one ``Authorization: Bearer`` header, at most 6 KiB; three canonical
  unpadded base64url segments of JSON objects without duplicate members;
* header ``alg`` ES256K or ES256 (``none`` and everything else refused), and
  it must match the issuer key's curve; ``typ``, when present, ``JWT``; no ``crit``;
  ``kid``, when present, the ``#atproto`` key (``#atproto`` or ``<iss>#atproto``):
  only that key is ever checked, so a token naming another key is refused, not
  verified against a key it does not claim;
* ``iss`` an atproto DID (did:plc or did:web). The spec lets ``iss`` carry a
  ``#service`` suffix for a service-scoped key and lets receivers refuse it;
  tack refuses it: only account tokens act on repositories;
* ``aud`` exactly this spindle's did:web, or it with ``#tangled_spindle``;
* ``lxm`` present and exactly the method called;
* ``exp`` in the future (5 s leeway), ``iat`` at most 30 s ahead, lifetime
  ``exp - iat`` at most an hour (the reference PDS's cap), ``nbf`` honoured;
* ``jti`` present (1 to 256 characters), consumed once (see replay.py).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tack_control.identity.did import BadDid, check_did, web_did
from tack_control.identity.keys import PublicKey


Reason = Literal[
    "missing",
    "bad_scheme",
    "too_large",
    "malformed",
    "bad_alg",
    "bad_typ",
    "bad_kid",
    "bad_iss",
    "bad_aud",
    "bad_lxm",
    "expired",
    "not_yet_valid",
    "too_long_lived",
    "bad_jti",
    "unknown_did",
    "did_unresolvable",
    "no_key",
    "key_mismatch",
    "bad_signature",
    "replayed",
    "replay_store_full",
]

MAX_HEADER_BYTES = 6 << 10
LEEWAY_S = 5
MAX_IAT_AHEAD_S = 30
MAX_LIFETIME_S = 3600
MAX_JTI = 256
ALGS = ("ES256K", "ES256")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_JTI = re.compile(r"^[\x21-\x7e]{1,256}$")


class AuthError(Exception):
    """A refused token: ``reason`` is the metric label and the start of the message."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason

    @property
    def xrpc_error(self) -> str:
        """The XRPC error name of the 401 answer."""
        if self.reason in ("missing", "bad_scheme"):
            return "AuthRequired"
        return "ExpiredToken" if self.reason == "expired" else "InvalidToken"


@dataclass(frozen=True)
class Token:
    """A token whose claims passed every check; its signature is still to be verified."""

    alg: str
    iss: str
    lxm: str
    exp: int
    jti: str
    signing_input: bytes
    signature: bytes


def bearer(values: Sequence[str]) -> str:
    """The token of the request's ``Authorization`` header values."""
    if not values:
        raise AuthError("missing", "send Authorization: Bearer <service-auth JWT>")
    if len(values) > 1:
        raise AuthError("bad_scheme", "send exactly one Authorization header")
    if len(values[0]) > MAX_HEADER_BYTES:
        raise AuthError("too_large", f"the Authorization header is over {MAX_HEADER_BYTES} bytes")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("bad_scheme", "the Authorization header must be 'Bearer <service-auth JWT>'")
    return token.strip()


def audiences(hostname: str) -> frozenset[str]:
    """The ``aud`` values meant for the spindle at ``hostname``: its did:web (port as %3A), alone or with #tangled_spindle."""
    did = web_did(hostname)
    return frozenset({did, f"{did}#tangled_spindle"})


def check(token: str, *, audience: Collection[str], lxm: str, now: float) -> Token:
    """``token`` if it is well-formed and its claims are valid for calling ``lxm`` at ``now``; AuthError otherwise."""
    if len(token) > MAX_HEADER_BYTES:
        raise AuthError("too_large", f"the token is over {MAX_HEADER_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed", "a JWT has three dot-separated parts")
    header = _json_object(_b64url(parts[0], "header"), "header")
    alg = header.get("alg")
    if alg not in ALGS:
        raise AuthError("bad_alg", f"alg {str(alg)[:20]!r} is not ES256K or ES256")
    if "typ" in header and header["typ"] != "JWT":
        raise AuthError("bad_typ", f"typ {str(header['typ'])[:20]!r} is not JWT")
    if "crit" in header:
        raise AuthError("malformed", "critical header extensions (crit) are not supported")
    claims = _json_object(_b64url(parts[1], "payload"), "payload")
    signature = _b64url(parts[2], "signature")
    iss = _check_iss(claims.get("iss"))
    if "kid" in header and header["kid"] not in ("#atproto", f"{iss}#atproto"):
        raise AuthError("bad_kid", f"kid {str(header['kid'])[:100]!r} is not the issuer's #atproto key")
    aud = claims.get("aud")
    if not isinstance(aud, str) or aud not in audience:
        raise AuthError("bad_aud", f"aud must be {min(audience, key=len)} (this spindle's did:web)")
    token_lxm = claims.get("lxm")
    if token_lxm is None:
        raise AuthError("bad_lxm", f"the token names no method; request it with lxm={lxm}")
    if token_lxm != lxm:
        raise AuthError("bad_lxm", f"the token is for {str(token_lxm)[:100]!r}, not {lxm}")
    exp, iat = _seconds(claims, "exp"), _seconds(claims, "iat")
    if exp <= now - LEEWAY_S:
        raise AuthError("expired", f"the token expired {int(now - exp)}s ago")
    if iat > now + MAX_IAT_AHEAD_S:
        raise AuthError("not_yet_valid", f"the token is issued {int(iat - now)}s in the future (clock skew?)")
    if "nbf" in claims and _seconds(claims, "nbf") > now + LEEWAY_S:
        raise AuthError("not_yet_valid", "the token is not valid before its nbf")
    if exp <= iat:
        raise AuthError("malformed", "exp must be after iat")
    if exp - iat > MAX_LIFETIME_S:
        raise AuthError(
            "too_long_lived", f"the token lives {exp - iat}s; at most {MAX_LIFETIME_S}s is accepted"
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise AuthError("bad_jti", f"jti must be a unique printable string of 1 to {MAX_JTI} characters")
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    return Token(str(alg), iss, lxm, exp, jti, signing_input, signature)


def check_signature(token: Token, key: PublicKey) -> None:
    """AuthError unless ``key`` is of the token's ``alg`` and signed it."""
    if key.alg != token.alg:
        raise AuthError("key_mismatch", f"the token is {token.alg} but the issuer's key is {key.alg}")
    if not key.verify(token.signing_input, token.signature):
        raise AuthError("bad_signature", "the signature does not verify with the issuer's #atproto key")


def _check_iss(iss: Any) -> str:
    if not isinstance(iss, str):
        raise AuthError("bad_iss", "iss must be the caller's DID")
    if "#" in iss:
        raise AuthError(
            "bad_iss", "service-scoped issuers (did#service) are not accepted; use a token for the account"
        )
    try:
        return check_did(iss)
    except BadDid as exc:
        raise AuthError("bad_iss", f"iss: {exc}") from None


def _seconds(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AuthError("malformed", f"{name} must be an integer (seconds since the epoch)")
    return value


def _b64url(segment: str, what: str) -> bytes:
    """Canonical unpadded base64url (the JWS compact form), so a token has exactly one spelling."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise AuthError("malformed", f"the {what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != segment:
        raise AuthError("malformed", f"the {what} is not canonical base64url")
    return data


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise AuthError("malformed", f"the {what} repeats a member")
        return dict(pairs)

    try:
        value = json.loads(data, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError):
        raise AuthError("malformed", f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthError("malformed", f"the {what} is not a JSON object")
    return value
