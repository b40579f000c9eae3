"""The service-auth claim checks, free of I/O: each violation is refused with its own reason."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tack_control.identity.keys import from_crypto
from tack_control.identity.tokens import AuthError, audiences, bearer, check, check_signature
from tests.support.atproto import AUDIENCE, HOSTNAME, Account, b64, claims_of, sign_compact


LXM = "sh.tangled.repo.listSecrets"
AUD = audiences(HOSTNAME)


def reason(token: str, lxm: str = LXM, now: float | None = None) -> str:
    """The reason ``check`` refuses ``token`` for (fails the test if it accepts it)."""
    with pytest.raises(AuthError) as caught:
        check(token, audience=AUD, lxm=lxm, now=time.time() if now is None else now)
    return caught.value.reason


def test_a_pds_style_token_passes_and_names_its_issuer() -> None:
    """A getServiceAuth-shaped token for this spindle and method passes; the issuer and jti are read."""
    account = Account()
    token = check(account.token(LXM), audience=AUD, lxm=LXM, now=time.time())
    assert token.iss == account.did
    assert len(token.jti) == 32
    check_signature(token, from_crypto(account.key.public_key()))


def test_audience_forms() -> None:
    """did:web of the hostname (port as %3A), optionally #tangled_spindle; nothing else."""
    assert audiences("host.example:8080") == {
        "did:web:host.example%3A8080",
        "did:web:host.example%3A8080#tangled_spindle",
    }
    account = Account()
    check(account.token(aud=AUDIENCE + "#tangled_spindle"), audience=AUD, lxm=LXM, now=time.time())
    assert reason(account.token(aud="did:web:other.example")) == "bad_aud"
    assert reason(account.token(aud="did:web:spindle.example.com#atproto_pds")) == "bad_aud"
    assert reason(account.token(extra={"aud": [AUDIENCE]})) == "bad_aud"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda a: a.token("sh.tangled.repo.addSecret"), "bad_lxm"),
        (lambda a: a.token(None), "bad_lxm"),
        (lambda a: a.token(lifetime=-10), "expired"),
        (lambda a: a.token(iat_offset=-4000, lifetime=3600), "expired"),
        (lambda a: a.token(iat_offset=120), "not_yet_valid"),
        (lambda a: a.token(extra={"nbf": int(time.time()) + 60}), "not_yet_valid"),
        (lambda a: a.token(lifetime=3601), "too_long_lived"),
        (lambda a: a.token(drop=("jti",)), "bad_jti"),
        (lambda a: a.token(extra={"jti": ""}), "bad_jti"),
        (lambda a: a.token(extra={"jti": "x" * 257}), "bad_jti"),
        (lambda a: a.token(extra={"jti": "has space"}), "bad_jti"),
        (lambda a: a.token(drop=("exp",)), "malformed"),
        (lambda a: a.token(drop=("iat",)), "malformed"),
        (lambda a: a.token(extra={"exp": 1e12}), "malformed"),
        (lambda a: a.token(extra={"iat": True}), "malformed"),
        (lambda a: a.token(drop=("iss",)), "bad_iss"),
        (lambda a: a.token(extra={"iss": a.did + "#atproto_labeler"}), "bad_iss"),
        (
            lambda a: a.token(extra={"iss": "did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc"}),
            "bad_iss",
        ),
        (lambda a: a.token(extra={"iss": "alice.example.com"}), "bad_iss"),
        (lambda a: a.token(header={"alg": "none", "typ": "JWT"}), "bad_alg"),
        (lambda a: a.token(header={"alg": "HS256", "typ": "JWT"}), "bad_alg"),
        (lambda a: a.token(header={"typ": "JWT"}), "bad_alg"),
        (lambda a: a.token(header={"alg": "ES256K", "typ": "at+jwt"}), "bad_typ"),
        (lambda a: a.token(header={"alg": "ES256K", "crit": ["b64"]}), "malformed"),
        (lambda a: a.token(header={"alg": "ES256K", "kid": "#atproto_label"}), "bad_kid"),
        (
            lambda a: a.token(header={"alg": "ES256K", "kid": "did:plc:other0000000000000000000#atproto"}),
            "bad_kid",
        ),
        (lambda a: a.token(header={"alg": "ES256K", "kid": 1}), "bad_kid"),
    ],
)
def test_each_bad_claim_has_its_reason(make: Any, expected: str) -> None:
    """Wrong method, expired, future, too long-lived, no/odd jti, non-integer times, bad issuer, alg, typ, crit, kid."""
    assert reason(make(Account())) == expected


def test_typ_may_be_absent() -> None:
    """A header without typ is accepted (the stock spindle ignores it)."""
    account = Account()
    check(account.token(header={"alg": "ES256K"}), audience=AUD, lxm=LXM, now=time.time())


def test_kid_may_name_the_atproto_key() -> None:
    """kid #atproto, or the issuer's DID with #atproto, is the key tack checks anyway: accepted."""
    account = Account()
    for kid in ("#atproto", f"{account.did}#atproto"):
        token = account.token(header={"alg": "ES256K", "typ": "JWT", "kid": kid})
        assert check(token, audience=AUD, lxm=LXM, now=time.time()).iss == account.did


def test_alg_none_with_no_signature_is_refused() -> None:
    """The classic unsigned token (alg none, empty signature) is refused for its alg."""
    account = Account()
    claims = claims_of(account.token())
    unsigned = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}."
    assert reason(unsigned) == "bad_alg"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + ".extra",
        lambda t: t.rsplit(".", 1)[0],
        lambda t: "not a token",
        lambda t: t.replace(".", "=.", 1),
        lambda t: "!" + t,
        lambda t: b64(b"[1, 2]") + t[t.index(".") :],
        lambda t: b64(b'{"alg": "ES256K", "alg": "none"}') + t[t.index(".") :],
        lambda t: b64(b"\xff\xfe") + t[t.index(".") :],
    ],
)
def test_malformed_tokens_are_refused(mangle: Any) -> None:
    """Wrong part count, padding, non-base64url, non-object or duplicate-member JSON, invalid UTF-8: malformed or bad_alg, never a crash."""
    assert reason(mangle(Account().token())) in ("malformed", "bad_alg")


def test_non_canonical_base64_is_refused() -> None:
    """A segment with non-zero trailing bits (a second spelling of the same bytes) is malformed."""
    token = Account().token()
    head, body, sig = token.split(".")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(sig[-1])
    twin = sig[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
    assert twin != sig
    assert reason(f"{head}.{body}.{twin}") == "malformed"


def test_bearer_header_rules() -> None:
    """No header, two headers, another scheme or an oversize header are each refused; 'bearer' in any case works."""
    for values, expected in (
        ([], "missing"),
        (["Bearer a", "Bearer b"], "bad_scheme"),
        (["Basic abc"], "bad_scheme"),
        (["Bearer "], "bad_scheme"),
        (["Bearer " + "x" * 7000], "too_large"),
    ):
        with pytest.raises(AuthError) as caught:
            bearer(values)
        assert caught.value.reason == expected
    assert bearer(["bearer abc.def.ghi"]) == "abc.def.ghi"


def test_key_curve_must_match_alg_and_signature_must_verify() -> None:
    """An ES256 header against a k256 key is key_mismatch; another key's signature is bad_signature."""
    account = Account(curve="k256")
    k256 = from_crypto(account.key.public_key())
    lying = account.token(header={"alg": "ES256", "typ": "JWT"})
    with pytest.raises(AuthError, match="key_mismatch"):
        check_signature(check(lying, audience=AUD, lxm=LXM, now=time.time()), k256)
    stranger = Account(did=account.did, curve="k256")
    with pytest.raises(AuthError, match="bad_signature"):
        check_signature(check(stranger.token(), audience=AUD, lxm=LXM, now=time.time()), k256)
    high = account.token(high_s=True)
    check_signature(check(high, audience=AUD, lxm=LXM, now=time.time()), k256)


def test_leeway_bounds() -> None:
    """exp up to 5 s in the past and iat up to 30 s ahead are tolerated (clock skew); one second more is not."""
    token = Account().token(lifetime=60)
    exp, iat = claims_of(token)["exp"], claims_of(token)["iat"]
    check(token, audience=AUD, lxm=LXM, now=exp + 4)
    assert reason(token, now=exp + 6) == "expired"
    check(token, audience=AUD, lxm=LXM, now=iat - 30)
    assert reason(token, now=iat - 31) == "not_yet_valid"


def test_signature_of_other_content_fails() -> None:
    """A signature moved onto different claims does not verify."""
    account = Account()
    key = from_crypto(account.key.public_key())
    good = account.token().split(".")
    other = sign_compact(account.key, {"alg": "ES256K"}, {"x": 1}).split(".")
    forged = f"{good[0]}.{good[1]}.{other[2]}"
    with pytest.raises(AuthError, match="bad_signature"):
        check_signature(check(forged, audience=AUD, lxm=LXM, now=time.time()), key)
