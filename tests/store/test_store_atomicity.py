"""Connections cut at random bytes in the middle of store operations never leave a broken data set:
every index points at a record, every record is indexed, counters match (each change is one Lua script)."""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.fault_proxy import FaultProxy
from helpers.store_helpers import (
    NOW,
    add_notice,
    check_invariants,
    device_token,
    find_subscription,
    notifier_key,
    server,
    token,
)
from helpers.valkey_cluster import CLUSTER, SHARDS, raw_client

from ntf_server.store.errors import StoreError, StoreUnavailable
from ntf_server.store.records import DAY_S, SUB_ACTIVE, TOKEN_ACTIVE
from ntf_server.store.redis import RedisStore


@pytest.fixture
async def proxy(redis_url: str, tmp_path: Path) -> AsyncIterator[FaultProxy]:
    p = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "proxy.sock")
    await p.start()
    yield p
    await p.stop()


async def test_random_cuts_leave_consistent_data(
    proxy: FaultProxy, store: RedisStore, store_key: bytes, redis_url: str
) -> None:
    rng = random.Random(20261121)
    flaky = await RedisStore.connect(proxy.url, store_key, prefix=store.prefix, buckets=store.buckets, retries=0,
                                     shards=SHARDS)
    devices = [device_token() for _ in range(6)]
    tids: list[bytes] = []
    subs: list[tuple[int, bytes]] = []
    failures = 0

    async def op() -> None:
        k = rng.randrange(9)
        if k <= 1 or not tids:
            t = replace(
                token(rng.choice(devices)), status=TOKEN_ACTIVE, last_used_day=int(NOW) - rng.randrange(3) * DAY_S
            )
            tids.append(t.token_id)
            await flaky.create_token(t)
        elif k <= 3:
            n, nid = rng.randrange(1, 4), secrets.token_bytes(24)
            subs.append((n, nid))
            await flaky.create_subscription(rng.choice(tids), server(n), nid, notifier_key())
        elif k == 4:
            await flaky.activate_token(rng.choice(tids))
        elif k == 5:
            await flaky.delete_token(rng.choice(tids))
        elif k == 6 and subs:
            n, nid = rng.choice(subs)
            await add_notice(flaky, server(n), nid, rng.randrange(10**12), b"n" * 24, b"m" * 144)
        elif k == 7 and subs:
            n, _ = rng.choice(subs)
            await flaky.set_subscription_statuses(server(n), [s for m, s in subs if m == n], SUB_ACTIVE)
        elif k == 8:
            await flaky.expire_tokens(NOW, unused_days=1, batch=2)

    try:
        for _ in range(600):
            if rng.random() < 0.4:
                if rng.random() < 0.5:
                    proxy.up_budget = rng.randrange(1, 600)
                else:
                    proxy.down_budget = rng.randrange(0, 200)
            try:
                await op()
            except StoreUnavailable:
                failures += 1
            proxy.up_budget = proxy.down_budget = None
        final = await check_invariants(store, redis_url)
    finally:
        await flaky.close()
    # the test really cut operations midway (a sharded call may lose several of its connections at once)
    assert proxy.cuts > 60 and failures * SHARDS >= proxy.cuts
    assert final["tokens"] > 0 and final["subscriptions"] > 0


async def test_connection_errors_are_retried(proxy: FaultProxy, store: RedisStore, store_key: bytes) -> None:
    robust = await RedisStore.connect(proxy.url, store_key, prefix=store.prefix, buckets=store.buckets, shards=SHARDS)
    try:
        t = token()
        proxy.up_budget = 40  # the first attempt dies inside the command; the retry goes through
        await robust.create_token(t)
        assert proxy.cuts == 1
        assert await store.get_token(t.token_id) == t
    finally:
        await robust.close()


async def test_unreachable_redis_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await RedisStore.connect(f"unix://{tmp_path}/nothing.sock", b"k" * 32, retries=1)


async def test_server_errors_become_store_error(store: RedisStore, redis_url: str) -> None:
    c = raw_client(redis_url)
    await c.set(store.prefix + "used", "not a sorted set")
    await c.aclose()
    with pytest.raises(StoreError) as e:
        await store.counts()
    assert not isinstance(e.value, StoreUnavailable)


async def test_wrong_store_key_or_bucket_count_refused(store: RedisStore, redis_url: str, store_key: bytes) -> None:
    with pytest.raises(StoreError, match="store key"):
        await RedisStore.connect(redis_url, b"x" * 32, prefix=store.prefix, buckets=store.buckets,
                                 cluster=CLUSTER, shards=SHARDS)
    with pytest.raises(StoreError, match="buckets"):
        await RedisStore.connect(redis_url, store_key, prefix=store.prefix, buckets=8, cluster=CLUSTER, shards=SHARDS)


async def test_invariant_checker_catches_a_dangling_index(store: RedisStore, redis_url: str) -> None:
    """The checker above is only worth something if it fails on a broken data set."""
    t = token()
    await store.create_token(t)
    _, sub = await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key())
    assert sub is not None
    await check_invariants(store, redis_url)
    c = raw_client(redis_url)
    keys = [k for d in store.datasets async for k in c.scan_iter(match=d.keys.prefix + "s:*")]
    await c.delete(*keys)  # records gone, token index still lists them: what a split write would leave
    await c.aclose()
    with pytest.raises(AssertionError, match="not there"):
        await check_invariants(store, redis_url)


async def test_bucket_count_is_adopted_from_the_data_set(store: RedisStore, redis_url: str, store_key: bytes) -> None:
    t = token()
    await store.create_token(t)
    _, sub = await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key())
    again = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, cluster=CLUSTER, shards=SHARDS)
    try:
        assert again.buckets == store.buckets != 1024
        assert await find_subscription(again, server(1), b"N" * 24) == sub
    finally:
        await again.close()
