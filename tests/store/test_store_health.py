"""The store's health switch against a real Redis behind a proxy that can take it away (store/health.py)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fault_proxy import FaultProxy

from ntf_server.store.errors import StoreUnavailable
from ntf_server.store.redis import RedisStore

TOKEN_ID = b"\x01" * 24


def no_wait() -> Iterator[float]:
    return itertools.repeat(0.01)


async def until_healthy(store: RedisStore) -> None:
    async with asyncio.timeout(10):
        while True:
            if store.healthy:
                return
            await asyncio.sleep(0.01)


async def test_watched_store_fails_fast_while_down_and_recovers_in_background(
    tmp_path: Path, redis_url: str, store_key: bytes
) -> None:
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "p.sock")
    await proxy.start()
    store = await RedisStore.connect(proxy.url, store_key, prefix=f"health:{secrets.token_hex(6)}:", retries=0)
    watcher = asyncio.create_task(store.watch_health(no_wait))
    try:
        assert await store.get_token(TOKEN_ID) is None
        await proxy.stop()
        with pytest.raises(StoreUnavailable, match="redis unreachable: "):
            await store.get_token(TOKEN_ID)
        assert not store.healthy
        for _ in range(3):  # refused at once, without a round trip: the message says so
            with pytest.raises(StoreUnavailable, match="reconnecting in the background"):
                await store.get_token(TOKEN_ID)
        await proxy.start()
        await until_healthy(store)
        assert await store.get_token(TOKEN_ID) is None
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await store.close()
        await proxy.stop()


async def test_unwatched_store_never_locks_callers_out(tmp_path: Path, redis_url: str, store_key: bytes) -> None:
    """Tools and tests use the store without the server's watcher: a failure must not stick."""
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "p.sock")
    await proxy.start()
    store = await RedisStore.connect(proxy.url, store_key, prefix=f"health:{secrets.token_hex(6)}:", retries=0)
    try:
        await proxy.stop()
        with pytest.raises(StoreUnavailable):
            await store.get_token(TOKEN_ID)
        assert store.healthy
        await proxy.start()
        assert await store.get_token(TOKEN_ID) is None
    finally:
        await store.close()
        await proxy.stop()


async def test_a_swallowed_cancel_comes_back_at_the_store_edge(store: RedisStore) -> None:
    """Python 3.11's wait_for (inside redis-py) can swallow a cancel; the task must not carry on as if
    nothing happened (a server part would then never stop, and shutdown would hang)."""
    reached: list[str] = []

    async def part() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # swallowed, as asyncio.wait_for can do in 3.11
        await store.get_token(TOKEN_ID)
        reached.append("carried on")

    task = asyncio.create_task(part())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reached == []
