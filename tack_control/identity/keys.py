"""atproto public keys (p256 and secp256k1) as DID documents publish them, and ECDSA signature checks.

The elliptic-curve work is ``cryptography``'s; this module only decodes the
key encodings (base58btc multibase, multicodec prefixes) and turns a JOSE
signature (fixed-width ``r‖s``) into the DER form ``cryptography`` verifies.
High-S signatures are accepted, as the reference verifiers do for JWTs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


Alg = Literal["ES256", "ES256K"]

# Multicodec varint prefixes of compressed public keys: p256-pub (0x1200), secp256k1-pub (0xe7).
_PREFIX: dict[Alg, bytes] = {"ES256": b"\x80\x24", "ES256K": b"\xe7\x01"}
_CURVE: dict[Alg, ec.EllipticCurve] = {"ES256": ec.SECP256R1(), "ES256K": ec.SECP256K1()}
# Group orders: a signature's r and s must lie in [1, n).
ORDER: dict[Alg, int] = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
# Legacy verification-method types (the key bytes carry no multicodec prefix).
LEGACY_TYPES: dict[str, Alg] = {
    "EcdsaSecp256r1VerificationKey2019": "ES256",
    "EcdsaSecp256k1VerificationKey2019": "ES256K",
}
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
MAX_MULTIBASE = 256


class BadKey(ValueError):
    """A key that cannot be decoded or is not a point of its curve; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    """A verification key and the JWT ``alg`` it signs with."""

    alg: Alg
    point: bytes  # compressed SEC1, 33 bytes: equality means the same key
    key: ec.EllipticCurvePublicKey = field(compare=False, repr=False)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes ``r‖s``) signs SHA-256 of ``message`` with this key."""
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        order = ORDER[self.alg]
        if not (0 < r < order and 0 < s < order):
            return False
        try:
            self.key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def multikey(self) -> str:
        """The key as a ``Multikey`` ``publicKeyMultibase`` value."""
        return "z" + b58encode(_PREFIX[self.alg] + self.point)


def from_point(alg: Alg, point: bytes) -> PublicKey:
    """The key at SEC1 ``point`` (33 bytes compressed or 65 uncompressed) on ``alg``'s curve."""
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE[alg], point)
    except ValueError:
        raise BadKey(f"not a point on the {alg} curve") from None
    return PublicKey(alg, key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint), key)


def from_crypto(key: ec.EllipticCurvePublicKey) -> PublicKey:
    """A ``cryptography`` key of either supported curve."""
    for alg, curve in _CURVE.items():
        if key.curve.name == curve.name:
            return from_point(alg, key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint))
    raise BadKey(f"curve {key.curve.name} is neither p256 nor secp256k1")


def alg_of(key: ec.EllipticCurvePrivateKey) -> Alg:
    """The JWT ``alg`` a private key signs with."""
    return from_crypto(key.public_key()).alg


def parse_multikey(value: str) -> PublicKey:
    """A ``Multikey`` ``publicKeyMultibase``: ``z`` + base58btc(multicodec prefix + compressed point)."""
    raw = _multibase(value)
    for alg, prefix in _PREFIX.items():
        if raw.startswith(prefix):
            point = raw[len(prefix) :]
            if len(point) != 33:
                raise BadKey(f"a compressed {alg} key has 33 bytes, this one {len(point)}")
            return from_point(alg, point)
    raise BadKey("unknown multicodec prefix (expected p256-pub or secp256k1-pub)")


def parse_legacy(key_type: str, value: str) -> PublicKey:
    """A legacy ``EcdsaSecp256{r,k}1VerificationKey2019`` key: multibase of the bare point."""
    return from_point(LEGACY_TYPES[key_type], _multibase(value))


def _multibase(value: str) -> bytes:
    if not value.startswith("z") or len(value) > MAX_MULTIBASE:
        raise BadKey("publicKeyMultibase must be base58btc ('z' prefix) and short")
    return b58decode(value[1:])


def b58decode(text: str) -> bytes:
    """Bitcoin-alphabet base58; BadKey for characters outside it."""
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise BadKey(f"{char!r} is not a base58btc character")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58."""
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _B58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + out
