"""The per-connection bounded queue: FIFO order, back-pressure when full, one producer and one consumer."""

from __future__ import annotations

import asyncio

import pytest

from ntf_server.transport.spsc import SpscQueue


async def test_fifo_across_waits() -> None:
    q: SpscQueue[int] = SpscQueue(4)
    got: list[int] = []

    async def consume() -> None:
        for _ in range(10):
            got.append(await q.get())

    consumer = asyncio.create_task(consume())
    for i in range(10):
        await q.put(i)
    await consumer
    assert got == list(range(10)) and q.qsize() == 0


async def test_a_full_queue_holds_the_producer_until_the_consumer_takes_one() -> None:
    q: SpscQueue[int] = SpscQueue(2)
    await q.put(1)
    await q.put(2)
    producer = asyncio.create_task(q.put(3))
    await asyncio.sleep(0)
    assert not producer.done() and q.qsize() == 2
    assert await q.get() == 1
    await producer
    assert [await q.get(), await q.get()] == [2, 3]


async def test_a_second_consumer_is_a_programming_error() -> None:
    q: SpscQueue[int] = SpscQueue(1)
    first = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one consumer"):
        await q.get()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await q.put(7)  # a cancelled wait leaves the queue usable
    assert await q.get() == 7


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SpscQueue(0)
