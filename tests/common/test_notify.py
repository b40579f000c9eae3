"""The broadcast wake-up (tack_common.notify)."""

from __future__ import annotations

import asyncio

from tack_common.notify import Notifier


# notify


async def test_notifier_wakes_every_waiter_and_times_out() -> None:
    """notify wakes all current waiters at once; wait returns False when the timeout passes first."""
    notifier = Notifier()
    waiters = [asyncio.create_task(notifier.wait(5)) for _ in range(3)]
    await asyncio.sleep(0)
    notifier.notify()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await notifier.wait(0.01) is False
