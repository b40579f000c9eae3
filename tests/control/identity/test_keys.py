"""atproto keys: the reference implementation's test vectors decode and verify; bad keys and signatures are refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tack_control.identity.keys import (
    ORDER,
    BadKey,
    b58decode,
    b58encode,
    from_crypto,
    parse_legacy,
    parse_multikey,
)


# From bluesky-social/atproto packages/crypto/tests/signature-fixtures.json: a valid (low-S) signature of
# the same message per curve, the key as did:key (Multikey) and as a bare multibase point.
FIXTURES = [
    (
        "ES256",
        "zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo",
        "zxdM8dSstjrpZaRUwBmDvjGXweKuEMVN95A9oJBFjkWMh",
        "2vZNsG3UKvvO/CDlrdvyZRISOFylinBh0Jupc6KcWoJWExHptCfduPleDbG3rko3YZnn9Lw0IjpixVmexJDegg",
    ),
    (
        "ES256K",
        "zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc",
        "z25z9DTpsiYYJKGsWmSPJK2NFN8PcJtZig12K59UgW7q5t",
        "5WpdIuEUUfVUYaozsi8G0B3cWO09cgZbIIwg1t2YKdUn/FEznOndsz/qgiYb89zwxYCbB71f7yQK5Lr7NasfoA",
    ),
]
MESSAGE = base64.b64decode("oWVoZWxsb2V3b3JsZA==")
# W3C did:key secp256k1 vectors (private seed → did:key), as used by the same test suite.
SECP_SEEDS = [
    (
        "9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c",
        "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
    ),
    (
        "f0f4df55a2b3ff13051ea814a8f24ad00f2e469af73c363ac7e9fb999a9072ed",
        "zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2",
    ),
]


def _raw(sig_b64: str) -> bytes:
    return base64.b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))


@pytest.mark.parametrize(("alg", "multikey", "legacy", "sig"), FIXTURES)
def test_reference_vectors_decode_and_verify(alg: str, multikey: str, legacy: str, sig: str) -> None:
    """Each fixture key decodes from both encodings to the same key of its curve, and its signature verifies."""
    key = parse_multikey(multikey)
    legacy_type = (
        "EcdsaSecp256r1VerificationKey2019" if alg == "ES256" else "EcdsaSecp256k1VerificationKey2019"
    )
    assert key.alg == alg
    assert parse_legacy(legacy_type, legacy) == key
    assert key.multikey() == multikey
    assert key.verify(MESSAGE, _raw(sig))
    assert not key.verify(MESSAGE + b"!", _raw(sig))


@pytest.mark.parametrize(("seed", "did_key"), SECP_SEEDS)
def test_private_seed_gives_the_w3c_did_key(seed: str, did_key: str) -> None:
    """A secp256k1 private key's public Multikey matches the W3C vector."""
    private = ec.derive_private_key(int(seed, 16), ec.SECP256K1())
    assert from_crypto(private.public_key()).multikey() == did_key


@pytest.mark.parametrize(("alg", "multikey", "legacy", "sig"), FIXTURES)
def test_high_s_is_accepted_but_not_other_encodings(alg: str, multikey: str, legacy: str, sig: str) -> None:
    """The high-S twin of a signature verifies (JWT verifiers are lenient); 65 bytes, DER-length junk and r=0 do not."""
    key = parse_multikey(multikey)
    raw = _raw(sig)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    high = r + (ORDER[key.alg] - s).to_bytes(32, "big")
    assert key.verify(MESSAGE, high)
    assert not key.verify(MESSAGE, raw[:32] + b"\x00" + raw[32:])
    assert not key.verify(MESSAGE, raw[:63])
    assert not key.verify(MESSAGE, bytes(32) + raw[32:])
    assert not key.verify(MESSAGE, r + ORDER[key.alg].to_bytes(32, "big"))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("fQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "base58btc"),
        ("zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJw0", "base58btc character"),
        ("z" + b58encode(b"\xed\x01" + bytes(32)), "unknown multicodec"),
        ("z" + b58encode(b"\xe7\x01" + b"\x02" + bytes(31)), "33 bytes"),
        ("z" + b58encode(b"\xe7\x01" + b"\x05" + bytes(32)), "not a point"),
        ("z" + "1" * 300, "short"),
    ],
)
def test_bad_multikeys_are_refused_with_the_reason(value: str, why: str) -> None:
    """Wrong multibase, alphabet, codec, length or a point off the curve: BadKey saying so."""
    with pytest.raises(BadKey, match=why):
        parse_multikey(value)


def test_base58_round_trips_with_leading_zeros() -> None:
    """Leading zero bytes survive as leading '1's."""
    for data in (b"", b"\x00", b"\x00\x00\x01\x02", bytes(range(40))):
        assert b58decode(b58encode(data)) == data
