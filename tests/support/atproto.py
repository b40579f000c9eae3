"""atproto accounts and service-auth tokens for tests, made with ``cryptography`` as a PDS makes them.

Tokens are built here independently of tack's own signer, so a test can also
make the broken ones: another ``alg``, a high-S or truncated signature,
duplicate members, claims left out.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tack_control.identity.keys import ORDER, from_crypto


Curve = Literal["p256", "k256"]
CURVES: dict[Curve, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "k256": ec.SECP256K1()}
ALG: dict[Curve, str] = {"p256": "ES256", "k256": "ES256K"}
HOSTNAME = "spindle.example.com"
AUDIENCE = "did:web:spindle.example.com"


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def plc_did() -> str:
    """A fresh, well-formed did:plc (24 characters of base32)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "did:plc:" + "".join(secrets.choice(alphabet) for _ in range(24))


@dataclass
class Account:
    """An atproto account: a DID and its current #atproto signing key."""

    did: str = field(default_factory=plc_did)
    curve: Curve = "k256"
    key: ec.EllipticCurvePrivateKey = field(init=False)
    pds: str = "https://pds.example.com"

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(CURVES[self.curve])

    def rotate(self, curve: Curve | None = None) -> None:
        """Replace the signing key (as a PLC operation would)."""
        self.curve = curve or self.curve
        self.key = ec.generate_private_key(CURVES[self.curve])

    def multikey(self) -> str:
        """The current key as a Multikey publicKeyMultibase."""
        return from_crypto(self.key.public_key()).multikey()

    def document(self) -> dict[str, Any]:
        """The DID document a PLC directory serves for this account."""
        return {
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1",
            ],
            "id": self.did,
            "alsoKnownAs": ["at://someone.example.com"],
            "verificationMethod": [
                {
                    "id": f"{self.did}#atproto",
                    "type": "Multikey",
                    "controller": self.did,
                    "publicKeyMultibase": self.multikey(),
                }
            ],
            "service": [
                {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": self.pds}
            ],
        }

    def token(
        self,
        lxm: str | None = "sh.tangled.repo.listSecrets",
        *,
        aud: str = AUDIENCE,
        lifetime: int = 60,
        iat_offset: int = 0,
        header: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        extra: dict[str, Any] | None = None,
        high_s: bool = False,
    ) -> str:
        """A service-auth token signed with the current key (claims as getServiceAuth makes them, then overridden)."""
        now = int(time.time()) + iat_offset
        claims: dict[str, Any] = {
            "iat": now,
            "iss": self.did,
            "aud": aud,
            "exp": now + lifetime,
            "lxm": lxm,
            "jti": secrets.token_hex(16),
        }
        claims.update(extra or {})
        for name in (*drop, *(["lxm"] if lxm is None else [])):
            claims.pop(name, None)
        head = header if header is not None else {"typ": "JWT", "alg": ALG[self.curve]}
        return sign_compact(self.key, head, claims, high_s=high_s)


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a compact JWS (not verified)."""
    body = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert isinstance(claims, dict)
    return claims


def sign_compact(
    key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any], *, high_s: bool = False
) -> str:
    """``b64(header).b64(claims).b64(r‖s)``, low-S unless ``high_s``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    order = ORDER["ES256" if key.curve.name == "secp256r1" else "ES256K"]
    s = min(s, order - s)
    if high_s:
        s = order - s
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
