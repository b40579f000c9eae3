"""Webhook authentication by token or HMAC signature (tack_provider_buildkite.webhook_auth)."""

from __future__ import annotations

import pytest

from tack_provider_buildkite import webhook_auth


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


# Webhook authentication

VECTOR_BODY = (
    b'{"event":"ping","service":{"id":"9f0f9a19-1b88-4e37-98d8-c5a0cebcdb9a","provider":"webhook",'
    b'"settings":{"url":"http://127.0.0.1:8080/hooks/buildkite"}},"organization":{"id":'
    b'"4a1a6c2e-0a8b-4b8e-9d57-2f3c2e1d9a10","slug":"acme"},"sender":{"id":'
    b'"3d3c3bf0-7d58-4afe-8fe7-b3017d5504de","name":"Fake Admin"}}'
)
VECTOR_SECRET = "bk-webhook-token-123"
VECTOR_TS = 1767225600
VECTOR_SIG = "b49a834addacee171ba88338ee5e9b568b022a6ac53e7e01f1ee8c8f36d108e9"


def test_signature_test_vector() -> None:
    """The §6 test vector verifies: 302-byte body, documented header."""
    assert len(VECTOR_BODY) == 302
    assert webhook_auth.sign(VECTOR_SECRET, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    headers = [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")]
    assert (
        webhook_auth.authenticate("signature", headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_TS + 10)
        == VECTOR_SIG
    )


@pytest.mark.parametrize(
    "value",
    [
        f"signature={VECTOR_SIG},timestamp={VECTOR_TS}",
        f" timestamp = {VECTOR_TS} , signature = {VECTOR_SIG.upper()} ",
        f"timestamp={VECTOR_TS},signature=deadbeef,signature={VECTOR_SIG}",
        f"timestamp={VECTOR_TS},v=1,signature={VECTOR_SIG}",
    ],
)
def test_signature_header_is_parsed_tolerantly(value: str) -> None:
    """Reordered parts, spaces, hex case, extra parts and several signatures are accepted."""
    headers = [("x-buildkite-signature", value)]
    webhook_auth.authenticate("signature", headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_TS)


@pytest.mark.parametrize(
    ("headers", "body", "now", "reason"),
    [
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")],
            VECTOR_BODY + b" ",
            0,
            "match",
        ),
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS + 1},signature={VECTOR_SIG}")],
            VECTOR_BODY,
            0,
            "match",
        ),
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")],
            VECTOR_BODY,
            301,
            "from now",
        ),
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")],
            VECTOR_BODY,
            -301,
            "from now",
        ),
        ([("X-Buildkite-Signature", f"signature={VECTOR_SIG}")], VECTOR_BODY, 0, "needs timestamp"),
        ([("X-Buildkite-Signature", f"timestamp=soon,signature={VECTOR_SIG}")], VECTOR_BODY, 0, "malformed"),
        ([("X-Buildkite-Token", VECTOR_SECRET)], VECTOR_BODY, 0, "missing"),
        (
            [
                ("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}"),
                ("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature=00"),
            ],
            VECTOR_BODY,
            0,
            "conflicting",
        ),
    ],
)
def test_bad_signatures_are_refused(
    headers: list[tuple[str, str]], body: bytes, now: int, reason: str
) -> None:
    """Tampered bodies, wrong timestamps, stale or future deliveries and bad headers fail authentication."""
    with pytest.raises(webhook_auth.AuthError, match=reason):
        webhook_auth.authenticate("signature", headers, body, VECTOR_SECRET, VECTOR_TS + now)


def test_token_mode() -> None:
    """Token mode needs X-Buildkite-Token equal to the secret, in any header-name case."""
    webhook_auth.authenticate("token", [("x-buildkite-token", "sekret")], b"{}", "sekret", 0)
    for headers in ([("X-Buildkite-Token", "sekret2")], [("X-Buildkite-Token", "")], []):
        with pytest.raises(webhook_auth.AuthError):
            webhook_auth.authenticate("token", headers, b"{}", "sekret", 0)
    with pytest.raises(webhook_auth.AuthError):
        webhook_auth.authenticate("signature", [("X-Buildkite-Token", "sekret")], b"{}", "sekret", 0)
