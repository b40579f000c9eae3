"""Retry delays: exponential, capped, with jitter so that many retrying clients spread out."""

from __future__ import annotations

import random


def delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Uniformly random between half and all of ``min(cap, base·2^(attempt-1))``
    ("equal jitter"): never less than half the exponential step, never more than ``cap``.
    """
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    return random.uniform(ceiling / 2, ceiling)
