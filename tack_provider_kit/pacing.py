"""Pacing a provider's requests to its CI's API: a token bucket for background work and pauses after throttling.

*Background* requests (status polls, log reads) take from a bucket of ``budget`` requests per
minute and wait when it is empty; *foreground* requests (create, cancel) take from it too (possibly
into debt) but never wait for it, so they always find room. :meth:`Pacer.pause` holds every request
(after a 429 or 503); :meth:`Pacer.hold_background` holds only background ones (a quota nearly spent).
Free of I/O but for the sleep in :meth:`Pacer.acquire`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    """Shared by every request to one API with one credential."""

    def __init__(self, budget_per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = budget_per_minute / 60.0
        self.capacity = max(1.0, budget_per_minute / 6.0)
        self.tokens = self.capacity
        self.clock = clock
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

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (from now; a longer pause already set stays)."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    def hold_background(self, seconds: float) -> None:
        """Hold background requests for ``seconds``; foreground ones still go."""
        self._background_until = max(self._background_until, self.clock() + seconds)
