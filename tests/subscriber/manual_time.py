"""A clock and a sleep for the SMP client that only move when a test says so (STYLE 9)."""

from __future__ import annotations

import asyncio

SETTLE_YIELDS = 10  # event-loop turns after each timer firing: enough for a tick and its writes to run


class ManualTime:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer due on the way at its own time, in order."""
        target = self.now + seconds
        while True:
            self._sleepers = [(t, f) for t, f in self._sleepers if not f.done()]
            due = [(t, f) for t, f in self._sleepers if t <= target]
            if not due:
                break
            t, fut = min(due, key=lambda s: s[0])
            self.now = max(self.now, t)
            fut.set_result(None)
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    for _ in range(SETTLE_YIELDS):
        await asyncio.sleep(0)
