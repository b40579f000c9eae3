"""Staying inside Buildkite's REST rate limits (tack_provider_buildkite.ratelimit)."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict

from tack_provider_buildkite import ratelimit
from tack_provider_buildkite.logs import content_range


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


# Rate limits


def test_retry_after_follows_the_scope_named_by_the_body() -> None:
    """A 429 waits RateLimit-User-Reset for rest_user and RateLimit-Reset for rest."""
    headers = CIMultiDict({"RateLimit-Reset": "40", "RateLimit-User-Reset": "7"})
    assert ratelimit.retry_after(headers, json.dumps({"scope": "rest_user", "reset": 9}).encode()) == 7
    assert ratelimit.retry_after(headers, json.dumps({"scope": "rest", "reset": 9}).encode()) == 40
    assert ratelimit.retry_after(CIMultiDict(), json.dumps({"scope": "rest", "reset": 9}).encode()) == 9
    assert ratelimit.retry_after(headers, b"not json") == 40


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_pauses_after_429_with_cap_and_jitter() -> None:
    """After a 429 every request waits the reset (capped at 60 s) plus 0.25-0.75 s of jitter."""
    clock = FakeClock()
    limiter = ratelimit.RateLimiter(6000, clock=clock, jitter=lambda: 0.25)
    wait = limiter.throttled(CIMultiDict({"RateLimit-User-Reset": "5"}), b'{"scope":"rest_user"}')
    assert wait == 5.375
    assert limiter.delay(background=False) == pytest.approx(5.375)
    assert limiter.throttled(CIMultiDict({"RateLimit-Reset": "500"}), b'{"scope":"rest"}') == 60.375
    clock.now += 61
    assert limiter.delay(background=False) == 0


def test_limiter_paces_background_and_keeps_a_reserve() -> None:
    """Background requests follow the budget and hold back when the quota is nearly spent; foreground never waits."""
    clock = FakeClock()
    limiter = ratelimit.RateLimiter(60, clock=clock, jitter=lambda: 0.0)
    taken = 0
    while limiter.delay(background=True) == 0:
        taken += 1
    assert taken == 10
    assert limiter.delay(background=True) == pytest.approx(1.0)
    assert limiter.delay(background=False) == 0
    clock.now += 5
    limiter.observe(CIMultiDict({"RateLimit-User-Remaining": "2", "RateLimit-User-Reset": "30"}))
    assert limiter.delay(background=True) == pytest.approx(30)
    assert limiter.delay(background=False) == 0
    limiter.observe(CIMultiDict({"RateLimit-Remaining": "0", "RateLimit-Reset": "12"}))
    assert limiter.delay(background=False) == pytest.approx(12)


def test_content_range() -> None:
    """Content-Range headers give (first byte, total)."""
    assert content_range("bytes 900-999/1000") == (900, 1000)
    assert content_range("bytes */1000") is None
    assert content_range(None) is None
