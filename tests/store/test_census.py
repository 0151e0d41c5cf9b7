"""The census of tokens and subscriptions by status (store/census.py) and the active-token HyperLogLogs
(store/activity.py), against a real Redis."""

from __future__ import annotations

import secrets

import pytest
import redis.asyncio
from helpers.store_helpers import NOW, dataset_of, notifier_key, server, token

from ntf_server.store.activity import ActiveTokens, ActivityStore, period_keys
from ntf_server.store.census import BUCKETS_PER_CALL, CensusTaker
from ntf_server.store.errors import StoreError
from ntf_server.store.records import TOKEN_ACTIVE, SubStatus, SubStatusKind
from ntf_server.store.redis import RedisStore


async def no_sleep(_: float) -> None:
    return None


async def test_census_counts_tokens_and_subscriptions_by_status_per_server(store: RedisStore) -> None:
    active = [token(status=TOKEN_ACTIVE) for _ in range(3)]
    registered = [token() for _ in range(2)]
    for t in active + registered:
        await store.create_token(t, now=NOW)
    s1, s2 = server(1), server(2)
    nids: dict[int, list[bytes]] = {1: [], 2: []}
    for i in range(40):  # spread over many buckets, so several script calls per server
        srv = s1 if i % 4 else s2
        nid = secrets.token_bytes(24)
        await store.create_subscription(active[i % 3].token_id, srv, nid, notifier_key())
        nids[1 if srv is s1 else 2].append(nid)
    await store.set_subscription_statuses(s1, nids[1][:10], SubStatus(SubStatusKind.ACTIVE))
    await store.set_subscription_statuses(s2, nids[2][:2], SubStatus.error("BLOCKED something"))
    census = await store.census_taker(sleep=no_sleep).take()
    assert dict(census.tokens) == {"ACTIVE": 3, "REGISTERED": 2}
    assert dict(census.subscriptions) == {"ACTIVE": 10, "NEW": 28, "ERR": 2}
    assert dict(census.per_server[s1]) == {"ACTIVE": 10, "NEW": 20}
    assert dict(census.per_server[s2]) == {"ERR": 2, "NEW": 8}
    assert census.duration_s >= 0


async def test_census_paces_itself(store: RedisStore) -> None:
    """After every Redis call it sleeps (1 - duty) / duty times the call's duration."""
    t = token(status=TOKEN_ACTIVE)
    await store.create_token(t, now=NOW)
    await store.create_subscription(t.token_id, server(1), secrets.token_bytes(24), notifier_key())
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    census = await store.census_taker(duty=0.5, sleep=sleep).take()
    assert dict(census.subscriptions) == {"NEW": 1}
    # one call for the tokens, one per BUCKETS_PER_CALL buckets of the one SMP server
    # (in each shard: one call for its tokens; the one server's buckets in the shard of its subscription)
    assert len(slept) == len(store.datasets) + store.buckets // BUCKETS_PER_CALL and all(s > 0 for s in slept)


async def test_census_of_an_unreachable_redis_is_a_store_error() -> None:
    client = redis.asyncio.Redis.from_url("unix:///nonexistent/redis.sock")
    try:
        with pytest.raises(StoreError):
            await CensusTaker(dataset_of(client, "x:"), sleep=no_sleep).take()
    finally:
        await client.aclose()


async def test_active_tokens_are_distinct_keyed_hashes_per_period(store: RedisStore) -> None:
    # Fixed ids and key: a HyperLogLog counts 50 items exactly only when no two land in one register, which about
    # 7% of random sets miss (CI once saw 49); this set has no such pair, in Valkey and Redis alike (same hash).
    activity = ActivityStore(store.dataset, bytes(range(32)), clock=lambda: NOW)
    tids = [i.to_bytes(24, "big") for i in range(1, 51)]
    for tid in tids + tids[:10]:  # repeats count once
        activity.record(tid)
    await activity.flush()
    counts = await activity.counts()
    assert counts.day == counts.week == counts.month == 50
    for tid in tids:  # the same ids again change nothing
        activity.record(tid)
    await activity.flush()
    assert await activity.counts() == counts
    # what Redis holds says nothing about the ids: a PFADD of a real id changes the estimate as a new one
    key = period_keys(store.prefix, NOW)["d"]
    assert await store.client.pfadd(key, *tids[:5]) == 1
    ttl = await store.client.ttl(key)
    assert 0 < ttl <= 3 * 86400


async def test_active_tokens_next_day_start_again(store: RedisStore) -> None:
    now = [NOW]
    activity = ActivityStore(store.dataset, secrets.token_bytes(32), clock=lambda: now[0])
    activity.record(b"a" * 24)
    await activity.flush()
    now[0] += 86400
    activity.record(b"b" * 24)
    await activity.flush()
    assert await activity.counts() == ActiveTokens(day=1, week=2, month=2)  # Friday, then Saturday


def test_period_keys_are_utc_calendar_periods() -> None:
    keys = period_keys("p:", 1_767_225_600.0)  # 2026-01-01 00:00 UTC, a Thursday of ISO week 1
    assert keys == {"d": "p:act:d:20260101", "w": "p:act:w:2026W01", "m": "p:act:m:202601"}
