"""Pacing requests to a CI's API: the background budget, foreground requests that never wait, pauses."""

from __future__ import annotations

from tack_provider_kit.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_background_requests_spend_a_burst_then_wait_for_the_rate() -> None:
    """60/minute: a burst of 10 goes at once, the 11th waits one second, and time refills the bucket."""
    clock = Clock()
    pacer = Pacer(60, clock)
    assert [pacer.delay(background=True) for _ in range(10)] == [0.0] * 10
    assert pacer.delay(background=True) == 1.0
    clock.now += 1.0
    assert pacer.delay(background=True) == 0.0


def test_foreground_requests_never_wait_for_the_budget_but_spend_it() -> None:
    """A create or cancel goes even with the bucket empty; background work then waits longer."""
    clock = Clock()
    pacer = Pacer(60, clock)
    for _ in range(10):
        pacer.delay(background=True)
    assert pacer.delay(background=False) == 0.0
    assert pacer.delay(background=True) == 2.0


def test_a_pause_holds_everything_and_a_background_hold_only_background_work() -> None:
    """After a 429, every request waits out the pause; a nearly spent quota holds only polls."""
    clock = Clock()
    pacer = Pacer(600, clock)
    pacer.pause(5)
    pacer.pause(2)
    assert pacer.delay(background=False) == 5.0
    clock.now += 5
    pacer.hold_background(3)
    assert pacer.delay(background=False) == 0.0
    assert pacer.delay(background=True) == 3.0
