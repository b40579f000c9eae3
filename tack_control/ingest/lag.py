"""How current an input stream is: when it last delivered a frame and when it last connected.

A stream can be connected and still silent (a stuck knot, a stalled relay),
or down for a while in reconnect backoff; the health report shows both for
Jetstream and for each knot, and two gauges give the worst of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


class StreamLag:
    """One input stream's recent history (monotonic times)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since = clock()
        self.connected = False
        self.last_event: float | None = None
        self.last_connect: float | None = None
        self.last_disconnect: float | None = None

    def on_connect(self) -> None:
        """A connection was opened."""
        self.connected, self.last_connect = True, self.clock()

    def on_event(self) -> None:
        """A frame arrived."""
        self.last_event = self.clock()

    def on_disconnect(self) -> None:
        """The connection ended (or an attempt failed)."""
        if self.connected:
            self.last_disconnect = self.clock()
        self.connected = False

    def event_age(self) -> float:
        """Seconds since the last frame (since following began, when none came yet)."""
        return self.clock() - (self.last_event if self.last_event is not None else self.since)

    def disconnected_for(self) -> float:
        """Seconds without a connection: 0 while connected."""
        if self.connected:
            return 0.0
        return self.clock() - (self.last_disconnect if self.last_disconnect is not None else self.since)

    def as_json(self) -> dict[str, Any]:
        """The stream as the health report shows it."""
        now = self.clock()
        out: dict[str, Any] = {
            "connected": self.connected,
            "seconds_since_event": round(self.event_age(), 3),
            "seconds_disconnected": round(self.disconnected_for(), 3),
        }
        out["seconds_since_connect"] = (
            None if self.last_connect is None else round(now - self.last_connect, 3)
        )
        return out


def worst(lags: Iterable[StreamLag], measure: Callable[[StreamLag], float]) -> float:
    """The largest ``measure`` among ``lags`` (0 when there are none)."""
    return max((measure(lag) for lag in lags), default=0.0)
