"""The sharded store's front (store/sharded.py, sharded_parts.py) replaces every public method of the one-shard
classes it stands for (an inherited one would silently run on the home shard alone), and its NOTIFY finds a
queue whose subscription moved to another shard after the front learnt where it was."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from helpers.store_helpers import add_notices, notifier_key, server, token, wipe
from helpers.valkey_cluster import CLUSTER

from ntf_server.store.budget import BudgetStore
from ntf_server.store.census import CensusTaker
from ntf_server.store.importing import StoreImporter
from ntf_server.store.leases import RedisLeases
from ntf_server.store.outbox import RedisOutbox
from ntf_server.store.records import TOKEN_ACTIVE, Notice, TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.store.sharded import ShardedStore
from ntf_server.store.sharded_import import ShardedImporter
from ntf_server.store.sharded_parts import ShardedBudgets, ShardedCensus, ShardedLeases, ShardedOutbox
from ntf_server.store.shards import shard_of

PAIRS = [(RedisStore, ShardedStore), (RedisOutbox, ShardedOutbox), (RedisLeases, ShardedLeases),
         (BudgetStore, ShardedBudgets), (CensusTaker, ShardedCensus), (StoreImporter, ShardedImporter)]
# inherited on purpose: works through the methods it calls, which are routed
INHERITED = {CensusTaker: {"run"}}  # the loop around take()


@pytest.mark.parametrize(("base", "sharded"), PAIRS, ids=[s.__name__ for _, s in PAIRS])
def test_every_public_method_is_routed(base: type, sharded: type) -> None:
    public = {n for n in vars(base) if not n.startswith("_") and n != "connect"}
    assert public - set(vars(sharded)) == INHERITED.get(base, set())


@pytest.fixture
async def sharded(redis_url: str, store_key: bytes) -> AsyncIterator[ShardedStore]:
    s = await RedisStore.connect(redis_url, store_key, prefix=f"test:{secrets.token_hex(6)}:", buckets=16,
                                 cluster=CLUSTER, shards=3)
    assert isinstance(s, ShardedStore)
    yield s
    await s.close()
    await wipe(redis_url, [d.keys.prefix for d in s.datasets])


async def active_in(store: ShardedStore, k: int) -> TokenRecord:
    while True:
        t = replace(token(), status=TOKEN_ACTIVE)
        if shard_of(t.token_id, 3) == k:
            await store.create_token(t)
            return t


async def test_notify_follows_a_queue_to_its_new_shard(sharded: ShardedStore) -> None:
    srv, nid = server(1), secrets.token_bytes(24)
    first, second = await active_in(sharded, 0), await active_in(sharded, 2)
    await sharded.create_subscription(first.token_id, srv, nid, notifier_key())
    [a] = await add_notices(sharded, [Notice(srv, nid, 1_000, b"n" * 24, b"m" * 144)])
    assert a.token is not None and a.token.token_id == first.token_id  # the front learnt shard 0
    sub = await sharded.token_subscriptions(first.token_id)
    assert await sharded.delete_subscription(sub[0].sub_id) is not None
    await sharded.create_subscription(second.token_id, srv, nid, notifier_key())  # now in shard 2
    [b] = await add_notices(sharded, [Notice(srv, nid, 2_000, b"n" * 24, b"m" * 144)])
    assert b.token is not None and b.token.token_id == second.token_id
    assert await sharded.delete_subscription((await sharded.token_subscriptions(second.token_id))[0].sub_id)
    [c] = await add_notices(sharded, [Notice(srv, nid, 3_000, b"n" * 24, b"m" * 144)])
    assert c.token is None and c.outcome.value == "no subscription"


async def test_the_sharded_census_runs_as_the_one_shard_loop(sharded: ShardedStore) -> None:
    t = await active_in(sharded, 1)
    await sharded.create_subscription(t.token_id, server(1), secrets.token_bytes(24), notifier_key())

    async def sleep(s: float) -> None:
        if s == 999:  # the loop's wait between two censuses: stop there
            raise asyncio.CancelledError

    census = sharded.census_taker(sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await census.run(999)
    assert census.latest is not None and dict(census.latest.subscriptions) == {"NEW": 1}
