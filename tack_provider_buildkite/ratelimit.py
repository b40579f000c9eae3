"""Staying inside Buildkite's REST rate limits (docs/buildkite-api.md §1, §9.1).

Buildkite allows 200 requests/minute per organization and 50 per token user,
and says how much is left on every response. :class:`RateLimiter`

- pauses every request after a 429 for the reset of the limit that was hit
  (``RateLimit-User-Reset`` for ``scope: rest_user``, ``RateLimit-Reset`` for
  ``rest``), capped at 60 s, plus 0.25-0.75 s of jitter;
- paces *background* requests (status polls, log tails) with a token bucket of
  ``budget`` requests/minute, and holds them back while the remaining quota is
  nearly spent, so foreground requests (create, cancel) always find room.

Foreground requests take from the same bucket (possibly into debt) but never
wait for it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tack_provider_buildkite import metrics


MAX_WAIT_SECONDS = 60.0
RESERVE = 3


@dataclass(frozen=True)
class Quota:
    """What one limit (``rest`` org-wide or ``rest_user``) has left."""

    scope: str
    remaining: int
    reset: float


def _number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def quotas(headers: Mapping[str, str]) -> list[Quota]:
    """The org and user quotas a response reports (either may be absent)."""
    out = []
    for scope, prefix in (("rest", "RateLimit"), ("rest_user", "RateLimit-User")):
        remaining = _number(headers, f"{prefix}-Remaining")
        if remaining is not None:
            out.append(Quota(scope, int(remaining), _number(headers, f"{prefix}-Reset") or 0.0))
    return out


def retry_after(headers: Mapping[str, str], body: bytes) -> float:
    """Seconds to wait after a 429: the reset of the limit named by the body's ``scope``."""
    scope = ""
    body_reset: float | None = None
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        scope = str(decoded.get("scope") or "")
        if isinstance(decoded.get("reset"), int | float):
            body_reset = float(decoded["reset"])
    user, org = _number(headers, "RateLimit-User-Reset"), _number(headers, "RateLimit-Reset")
    if scope == "rest_user":
        chosen = user if user is not None else body_reset
    elif scope == "rest":
        chosen = org if org is not None else body_reset
    else:
        known = [v for v in (user, org, body_reset) if v is not None]
        chosen = max(known) if known else None
    return 5.0 if chosen is None else max(0.0, chosen)


class RateLimiter:
    """Shared by every request of one API token."""

    def __init__(
        self,
        budget_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.rate = budget_per_minute / 60.0
        self.capacity = max(1.0, budget_per_minute / 6.0)
        self.tokens = self.capacity
        self.clock = clock
        self.jitter = jitter
        self._refilled = clock()
        self.paused_until = 0.0
        self._background_until = 0.0

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._refilled) * self.rate)
        self._refilled = now

    def delay(self, background: bool) -> float:
        """Seconds to wait before the next request may go; 0 takes a token."""
        now = self.clock()
        until = max(self.paused_until, self._background_until) if background else self.paused_until
        if now < until:
            return until - now
        self._refill()
        if not background:
            self.tokens = max(-self.capacity, self.tokens - 1)
            return 0.0
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    async def acquire(self, background: bool) -> None:
        """Wait until a request may go."""
        while True:
            wait = self.delay(background)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the remaining quotas from a response."""
        now = self.clock()
        for quota in quotas(headers):
            metrics.RATE_LIMIT_REMAINING.labels(quota.scope).set(quota.remaining)
            if quota.remaining <= 0:
                self.paused_until = max(self.paused_until, now + min(quota.reset, MAX_WAIT_SECONDS))
            elif quota.remaining <= RESERVE:
                self._background_until = max(self._background_until, now + min(quota.reset, MAX_WAIT_SECONDS))

    def throttled(self, headers: Mapping[str, str], body: bytes) -> float:
        """Record a 429; every request pauses for the returned number of seconds."""
        wait = min(retry_after(headers, body), MAX_WAIT_SECONDS) + 0.25 + 0.5 * self.jitter()
        self.paused_until = max(self.paused_until, self.clock() + wait)
        return wait
