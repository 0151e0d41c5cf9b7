"""The bounded event channel between an SMP connection and the pool (subscriber/channel.py)."""

from __future__ import annotations

import asyncio

import pytest

from ntf_server.subscriber.channel import Channel


async def test_put_waits_for_room_and_order_is_kept() -> None:
    ch: Channel[int] = Channel(2)
    await ch.put(1)
    await ch.put(2)
    assert ch.full
    blocked = asyncio.create_task(ch.put(3))
    await asyncio.sleep(0)
    assert not blocked.done() and len(ch) == 2
    assert await ch.get() == 1
    await asyncio.wait_for(blocked, 1)
    assert [await ch.get(), await ch.get()] == [2, 3]


async def test_close_ends_the_iteration_after_the_items() -> None:
    ch: Channel[int] = Channel(2)
    await ch.put(1)
    await ch.put(2)
    ch.close()
    await asyncio.wait_for(ch.put(3), 1)  # never blocks once closed: nothing is lost either
    assert [i async for i in ch] == [1, 2, 3]
    with pytest.raises(StopAsyncIteration):
        await ch.get()


async def test_close_wakes_a_waiting_consumer() -> None:
    ch: Channel[int] = Channel(1)
    waiter = asyncio.create_task(ch.get())
    await asyncio.sleep(0)
    ch.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 1)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Channel(0)
