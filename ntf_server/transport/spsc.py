"""A bounded FIFO between one producer task and one consumer task (STYLE 7's per-connection queues).

Why not ``asyncio.Queue``: an empty one takes ~3.3 KB (four deques and an Event), and every idle NTF
connection holds two, a fifth of its memory. This one is a few slots, and keeps its deque
only while it holds items. One producer and one consumer at a time, which is how a connection uses it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class SpscQueue(Generic[T]):
    __slots__ = ("_getter", "_items", "_maxsize", "_putter")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._maxsize = maxsize
        self._items: deque[T] | None = None
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<SpscQueue {self.qsize()}/{self._maxsize}>"

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    async def put(self, item: T) -> None:
        """Append ``item``, waiting while the queue is full (the back-pressure)."""
        while self.qsize() >= self._maxsize:
            if self._putter is not None:
                raise RuntimeError("SpscQueue has one producer")
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        _wake(self._getter)

    async def get(self) -> T:
        """Take the oldest item, waiting while the queue is empty."""
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("SpscQueue has one consumer")
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None  # an idle connection keeps no deque
        _wake(self._putter)
        return item
