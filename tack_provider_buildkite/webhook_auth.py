"""Authenticating Buildkite webhooks (docs/buildkite-api.md §6), free of I/O.

``token`` mode: ``X-Buildkite-Token`` must equal the secret. ``signature`` mode:
``X-Buildkite-Signature: timestamp=<unix s>,signature=<hex>`` where the hex is
HMAC-SHA256(secret, ``"<timestamp>.<raw body>"``), parsed tolerantly (spaces,
any order) and fresh within ±5 minutes. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


TOLERANCE_SECONDS = 300
TOKEN_HEADER = "x-buildkite-token"
SIGNATURE_HEADER = "x-buildkite-signature"


class AuthError(Exception):
    """The request is not from Buildkite; the message says why (safe to log, never holds the secret)."""


def header_values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), in order."""
    wanted = name.lower()
    return [value for key, value in headers if key.lower() == wanted]


def _single(headers: Sequence[tuple[str, str]], name: str) -> str:
    values = header_values(headers, name)
    if not values:
        raise AuthError(f"missing {name} header")
    if len(set(values)) > 1:
        raise AuthError(f"conflicting {name} headers")
    return values[0].strip()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex signature Buildkite sends for ``body`` at ``timestamp``."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_signature(value: str) -> tuple[int, list[str]]:
    """(timestamp, signatures) of a signature header; AuthError when malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        name, sep, item = part.partition("=")
        name, item = name.strip().lower(), item.strip()
        if not sep:
            continue
        if name == "timestamp":
            if not item.isdigit() or timestamp is not None:
                raise AuthError("malformed signature timestamp")
            timestamp = int(item)
        elif name == "signature" and item:
            signatures.append(item.lower())
    if timestamp is None or not signatures:
        raise AuthError("signature header needs timestamp= and signature=")
    return timestamp, signatures


def verify_token(headers: Sequence[tuple[str, str]], secret: str) -> None:
    """AuthError unless ``X-Buildkite-Token`` equals ``secret``."""
    given = _single(headers, TOKEN_HEADER)
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise AuthError("wrong webhook token")


def verify_signature(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    secret: str,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check the HMAC over the raw body, then freshness; returns the matching signature (a replay key)."""
    timestamp, signatures = parse_signature(_single(headers, SIGNATURE_HEADER))
    expected = sign(secret, timestamp, body).encode()
    match = None
    for candidate in signatures:
        if hmac.compare_digest(candidate.encode(), expected):
            match = candidate
    if match is None:
        raise AuthError("signature does not match the body")
    if abs(now - timestamp) > tolerance:
        raise AuthError(f"signature timestamp is {int(now - timestamp)}s from now (allowed ±{tolerance}s)")
    return match


def authenticate(mode: str, headers: Sequence[tuple[str, str]], body: bytes, secret: str, now: float) -> str:
    """Authenticate a delivery in ``mode``; returns a replay key for signed deliveries, else ""."""
    if mode == "signature":
        return verify_signature(headers, body, secret, now)
    verify_token(headers, secret)
    return ""
