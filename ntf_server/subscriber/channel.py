"""A bounded, closable FIFO between an SMP connection and its one consumer (the pool).

Why not ``asyncio.Queue``: the end of the connection must reach the consumer *after* everything queued
before it, without waiting for room (a full queue is exactly when the producer must not block forever);
so :meth:`close` never blocks and the iterator ends once the items are drained.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Self, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be ≥ 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._closed = False
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Channel {len(self._items)}/{self.maxsize}{' closed' if self._closed else ''}>"

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T) -> None:
        """Wait for room, then append. After :meth:`close` the item is still kept (nothing is lost)."""
        while self.full and not self._closed:
            self._not_full.clear()
            await self._not_full.wait()
        self._items.append(item)
        self._not_empty.set()

    async def get(self) -> T:
        """The next item; :class:`StopAsyncIteration` once closed and drained."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._not_empty.clear()
            await self._not_empty.wait()
        item = self._items.popleft()
        self._not_full.set()
        return item

    def get_nowait(self) -> T | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self._not_full.set()
        return item

    def close(self) -> None:
        self._closed = True
        self._not_empty.set()
        self._not_full.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self.get()
