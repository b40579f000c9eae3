"""Retry delays: exponential with full jitter, capped."""

from __future__ import annotations

import random


def delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): up to base·2^(attempt-1), at most ``cap``."""
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    return random.uniform(ceiling / 2, ceiling)
