"""Logging a recurring failure once per interval instead of once per occurrence."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class LogThrottle:
    """Lets one log record per key through every ``interval`` seconds and counts the ones held back.

    A full disk or a provider that is down fails every event the same way;
    one line a minute saying how many times it happened tells the operator as
    much as thousands of identical lines, and keeps the log readable.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None when this occurrence should not be logged; else how many were held back since the last one."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 1000:
            # Keys are bounded by design (kinds, error types); this only guards against a caller's mistake.
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)

    def reset(self, key: Hashable) -> int:
        """Forget ``key`` (the failure is over); returns how many occurrences were held back."""
        self._last.pop(key, None)
        return self._held.pop(key, 0)
