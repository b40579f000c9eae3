"""Buildkite's two REST rate limits (docs/buildkite-api.md §1): one org bucket and one bucket per token user.

Each bucket is a fixed window that opens with its first request and lasts
``window_s``. Every request counts, rejected ones included, so a 429 body's
``current`` can exceed ``limit``. Headers go on every response; the
``*-Warning`` headers only while that limit is exceeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.buildkite.config import JsonObject, RateLimitScope


WARNING = "You have exceeded your API rate limit."


@dataclass
class _Window:
    started: float | None = None
    count: int = 0


@dataclass(frozen=True)
class Bucket:
    """One limit as seen by one request."""

    scope: RateLimitScope
    limit: int
    current: int
    reset: int

    @property
    def remaining(self) -> int:
        """Requests left in the window."""
        return max(0, self.limit - self.current)

    @property
    def exceeded(self) -> bool:
        """This request went over the limit."""
        return self.current > self.limit

    def body(self) -> JsonObject:
        """The 429 body for this scope."""
        return {
            "message": f"{WARNING} Please wait {self.reset} seconds before making more requests.",
            "scope": self.scope,
            "limit": self.limit,
            "current": self.current,
            "reset": self.reset,
        }


@dataclass(frozen=True)
class Verdict:
    """Both buckets after a request."""

    org: Bucket
    user: Bucket

    def exceeded(self) -> Bucket | None:
        """The limit this request broke (the user one when both did), or None."""
        if self.user.exceeded:
            return self.user
        return self.org if self.org.exceeded else None

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` and ``RateLimit-User-*`` response headers."""
        out = {
            "RateLimit-Scope": "rest",
            "RateLimit-Remaining": str(self.org.remaining),
            "RateLimit-Limit": str(self.org.limit),
            "RateLimit-Reset": str(self.org.reset),
            "RateLimit-User-Scope": "rest_user",
            "RateLimit-User-Remaining": str(self.user.remaining),
            "RateLimit-User-Limit": str(self.user.limit),
            "RateLimit-User-Reset": str(self.user.reset),
        }
        if self.org.exceeded:
            out["RateLimit-Warning"] = WARNING
        if self.user.exceeded:
            out["RateLimit-User-Warning"] = WARNING
        return out

    def forced(self, scope: RateLimitScope) -> Verdict:
        """This verdict with ``scope`` pushed over its limit (fault injection)."""
        if scope == "rest":
            bucket = self.org
            return Verdict(
                Bucket("rest", bucket.limit, max(bucket.current, bucket.limit + 1), bucket.reset), self.user
            )
        bucket = self.user
        user = Bucket("rest_user", bucket.limit, max(bucket.current, bucket.limit + 1), bucket.reset)
        return Verdict(self.org, user)


class RateLimiter:
    """The org window and the per-user windows."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._org = _Window()
        self._users: dict[str, _Window] = {}

    def hit(self, user: str | None, org_limit: int, user_limit: int, window_s: float) -> Verdict:
        """Count one request (``user=None``: an unauthenticated one, which counts nowhere)."""
        now = self._clock()
        org = self._view(self._org, "rest", org_limit, window_s, now, count=user is not None)
        window = self._users.setdefault(user, _Window()) if user is not None else _Window()
        return Verdict(
            org, self._view(window, "rest_user", user_limit, window_s, now, count=user is not None)
        )

    @staticmethod
    def _view(
        window: _Window, scope: RateLimitScope, limit: int, window_s: float, now: float, *, count: bool
    ) -> Bucket:
        if window.started is not None and now >= window.started + window_s:
            window.started, window.count = None, 0
        if count:
            if window.started is None:
                window.started = now
            window.count += 1
        left = window_s if window.started is None else window.started + window_s - now
        return Bucket(scope, limit, window.count, max(1, math.ceil(left)))
