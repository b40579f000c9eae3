"""atproto TIDs: 13-character record keys that sort lexically in time order.

A TID is a 64-bit integer (top bit 0, then 53 bits of Unix microseconds, then a
10-bit clock id) written in the base32-sortable alphabet, most significant
digit first. Tangled uses TIDs as rkeys for pipelines and status events.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable


ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID_LENGTH = 13
MAX_TIME_US = (1 << 53) - 1
MAX_CLOCK_ID = (1 << 10) - 1

_TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def tid_from_time_us(us: int, clock_id: int) -> str:
    """The TID for Unix microseconds ``us`` and ``clock_id`` (0-1023)."""
    if not 0 <= us <= MAX_TIME_US:
        raise ValueError(f"TID timestamp out of range: {us}")
    if not 0 <= clock_id <= MAX_CLOCK_ID:
        raise ValueError(f"TID clock id out of range: {clock_id}")
    value = (us << 10) | clock_id
    digits = []
    for _ in range(TID_LENGTH):
        digits.append(ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(digits))


def is_tid(text: str) -> bool:
    """Whether ``text`` is syntactically a TID (as indigo's ``ParseTID`` checks it)."""
    return _TID_RE.fullmatch(text) is not None


def parse_tid(tid: str) -> tuple[int, int]:
    """The ``(unix_us, clock_id)`` encoded in ``tid``; ``ValueError`` if it is not a TID."""
    if not is_tid(tid):
        raise ValueError(f"not a TID: {tid!r}")
    value = 0
    for char in tid:
        value = (value << 5) | ALPHABET.index(char)
    return value >> 10, value & MAX_CLOCK_ID


def _wall_us() -> int:
    return time.time_ns() // 1000


class TidClock:
    """Issues strictly increasing TIDs from the wall clock, like indigo's ``TIDClock``.

    If the clock stalls or steps back, the timestamp is bumped to one past the
    last one issued, so ``next()`` never repeats or goes backwards. Thread-safe.
    """

    def __init__(self, clock_id: int = 0, now_us: Callable[[], int] = _wall_us, last_us: int = 0) -> None:
        if not 0 <= clock_id <= MAX_CLOCK_ID:
            raise ValueError(f"TID clock id out of range: {clock_id}")
        self.clock_id = clock_id
        self._now_us = now_us
        self._last_us = last_us
        self._lock = threading.Lock()

    @property
    def last_us(self) -> int:
        """The timestamp of the last TID issued (0 before the first)."""
        return self._last_us

    def next(self) -> str:
        """A TID later than every TID this clock issued before."""
        with self._lock:
            us = max(self._now_us(), self._last_us + 1)
            self._last_us = us
        return tid_from_time_us(us, self.clock_id)
