"""A broadcast wake-up for many waiters on one event loop."""

from __future__ import annotations

import asyncio


class Notifier:
    """Waiters await :meth:`wait`; :meth:`notify` wakes all of them at once.

    One future is shared by every waiter, so waking a thousand of them costs one
    ``set_result``. Nothing is remembered: check for work before waiting.
    """

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        """Wake every current waiter."""
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the next :meth:`notify`; False when ``timeout`` seconds pass first."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            return False
        return True
