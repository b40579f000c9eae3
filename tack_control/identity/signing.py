"""Signing service-auth tokens as a PDS does (``com.atproto.server.getServiceAuth``), for the sandbox and tools.

A PDS signs with the account's key; here the key is a PEM file (the sandbox
publishes its DID document). Signatures are low-S, as atproto requires of signers.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tack_control.identity.keys import ORDER, alg_of


def sign_service_token(
    key: ec.EllipticCurvePrivateKey,
    *,
    iss: str,
    aud: str,
    lxm: str,
    lifetime_s: int = 60,
    now: int | None = None,
) -> str:
    """A compact JWS with ``iss``, ``aud``, ``lxm``, ``iat``, ``exp`` and a random ``jti``."""
    alg = alg_of(key)
    iat = int(time.time()) if now is None else now
    header = {"typ": "JWT", "alg": alg}
    claims = {
        "iat": iat,
        "iss": iss,
        "aud": aud,
        "exp": iat + lifetime_s,
        "lxm": lxm,
        "jti": secrets.token_hex(16),
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    s = min(s, ORDER[alg] - s)
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def load_or_create_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The PEM private key at ``path``; a new secp256k1 key (what PDSes use) is written there, 0600, if none exists."""
    if os.path.exists(path):
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} holds no elliptic-curve private key")
        alg_of(key)  # p256 or secp256k1 only
        return key
    new = ec.generate_private_key(ec.SECP256K1())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pem = new.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return new


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
