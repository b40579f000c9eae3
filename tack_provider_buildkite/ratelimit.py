"""Staying inside Buildkite's REST rate limits (docs/buildkite-api.md §1, §9.1).

Buildkite allows 200 requests/minute per organization and 50 per token user,
and says how much is left on every response. :class:`RateLimiter` (the kit's
:class:`~tack_provider_kit.pacing.Pacer` fed those answers)

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

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tack_provider_buildkite import metrics
from tack_provider_kit.pacing import Pacer


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


class RateLimiter(Pacer):
    """Shared by every request of one API token: the kit's pacer, fed Buildkite's quota headers."""

    def __init__(
        self,
        budget_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(budget_per_minute, clock)
        self.jitter = jitter

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the remaining quotas from a response."""
        for quota in quotas(headers):
            metrics.RATE_LIMIT_REMAINING.labels(quota.scope).set(quota.remaining)
            if quota.remaining <= 0:
                self.pause(min(quota.reset, MAX_WAIT_SECONDS))
            elif quota.remaining <= RESERVE:
                self.hold_background(min(quota.reset, MAX_WAIT_SECONDS))

    def throttled(self, headers: Mapping[str, str], body: bytes) -> float:
        """Record a 429; every request pauses for the returned number of seconds."""
        wait = min(retry_after(headers, body), MAX_WAIT_SECONDS) + 0.25 + 0.5 * self.jitter()
        self.pause(wait)
        return wait
