"""Budgets and deferred pushes in Redis (store/budget.py): the Lua scripts decide exactly as push/policy.py,
atomically under concurrent instances, one budget per device token, nothing readable in a dump."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from store_helpers import NOW, device_token, server, token

from ntf_server.config import Overflow
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.policy import (
    Budget,
    BudgetState,
    CronDecision,
    Decision,
    PolicySettings,
    claim,
    coalesce_rank,
    cron_decide,
    decide,
)
from ntf_server.store.budget import KEEP_S, BudgetStore, Claimed, PolicyChanged
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import LastNotification, TokenRecord
from ntf_server.store.redis import RedisStore


@pytest.fixture
async def budgets(store: RedisStore) -> BudgetStore:
    return BudgetStore(store.client, store.prefix)


@pytest.fixture
async def other_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A second connection pool, as a second server process has."""
    c = redis.asyncio.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def new_token(store: RedisStore, dt: bytes | None = None) -> TokenRecord:
    t = token(dt)
    await store.create_token(t)
    return t


async def test_the_scripts_decide_exactly_as_the_pure_policy(store: RedisStore, budgets: BudgetStore) -> None:
    """Random histories of notifications, scheduler claims and periodic pushes, run through both."""
    rng = random.Random(7)
    for _ in range(40):
        b = Budget(rng.choice([0.0, 1.0, 3.0, 60.0, 3600.0]), rng.randint(1, 5), rng.choice(list(Overflow)))
        tok = await new_token(store)
        state, pending, now = BudgetState(), None, NOW
        for _ in range(25):
            now += rng.choice([0.0, 0.25, 1.0, 30.0, 600.0, 1200.0])
            op = rng.random()
            if op < 0.6:
                v = decide(b, state, now, pending)
                got = await budgets.message(tok.token_id, b, now, b"body", coalesce_rank([int(now * 1000)]))
                assert got == (v.decision, v.due), (b, now)
                state = v.state
                pending = v.due if v.decision is Decision.DEFER else (None if v.cancel_pending else pending)
            elif op < 0.8 and pending is not None and pending <= now:
                sent, state, again = claim(b, state, now)
                got_claim = await budgets.claim(tok.token_id, b, now, lease_s=5.0)
                if sent:
                    assert isinstance(got_claim, Claimed)
                    assert await budgets.done(tok.token_id, got_claim.version)
                    pending = None
                else:
                    assert got_claim == again
                    pending = again
            else:
                interval = rng.choice([300.0, 1200.0])
                decision, state = cron_decide(b, state, now, interval)
                assert await budgets.cron(tok.token_id, b, now, interval) is decision


async def test_two_instances_hammering_one_device_token_never_exceed_its_budget(
        store: RedisStore, budgets: BudgetStore, other_client: redis.asyncio.Redis) -> None:
    """Two registrations of one device token (as after a reinstall), pushed by two instances at once: one
    budget, whichever registration and whichever process."""
    dt = device_token()
    a, c = await new_token(store, dt), await new_token(store, dt)
    other = BudgetStore(other_client, store.prefix)
    b = Budget(3.0, 3, Overflow.ALERT)
    for minute in range(3):  # 3 at once, then nothing for 20 min, then 1 per 20 min
        now = NOW + 1200.0 * minute
        calls = [s.message(t.token_id, b, now) for _ in range(50) for s, t in ((budgets, a), (other, c))]
        got = Counter(d for d, _ in await asyncio.gather(*calls))
        assert got == {Decision.HIDDEN: 3 if minute == 0 else 1, Decision.ALERT: 100 - (3 if minute == 0 else 1)}
    stranger = await new_token(store)  # another device has its own budget
    assert await budgets.message(stranger.token_id, b, NOW + 2400.0) == (Decision.HIDDEN, None)


async def test_a_due_push_is_claimed_by_exactly_one_instance(
        store: RedisStore, budgets: BudgetStore, other_client: redis.asyncio.Redis) -> None:
    tok = await new_token(store)
    b = Budget(3600.0, 1, Overflow.DEFER)
    other = BudgetStore(other_client, store.prefix)
    assert (await budgets.message(tok.token_id, b, NOW))[0] is Decision.HIDDEN
    assert await budgets.message(tok.token_id, b, NOW, b"first", coalesce_rank([1])) == (Decision.DEFER, NOW + 1)
    assert await budgets.message(tok.token_id, b, NOW + 0.5, b"second", coalesce_rank([1, 2])) == (
        Decision.DEFER, NOW + 1)
    # an older list arriving late (another instance stored it first) does not replace the newer one
    await other.message(tok.token_id, b, NOW + 0.6, b"stale", coalesce_rank([1]))
    assert await budgets.due(NOW + 0.9) == [] and await budgets.due(NOW + 1) == [tok.token_id]
    results = await asyncio.gather(*[s.claim(tok.token_id, b, NOW + 1) for s in (budgets, other) for _ in range(10)])
    claimed = [r for r in results if isinstance(r, Claimed)]
    assert len(claimed) == 1 and claimed[0].body == b"second"
    assert await budgets.done(tok.token_id, claimed[0].version)
    assert await budgets.pending_count() == 0


async def test_a_notification_joining_during_the_send_keeps_the_pending_push(
        store: RedisStore, budgets: BudgetStore) -> None:
    tok = await new_token(store)
    b = Budget(3600.0, 1, Overflow.DEFER)
    await budgets.message(tok.token_id, b, NOW)
    await budgets.message(tok.token_id, b, NOW, b"one", coalesce_rank([1]))
    got = await budgets.claim(tok.token_id, b, NOW + 1)
    assert isinstance(got, Claimed)
    assert await budgets.message(tok.token_id, b, NOW + 1.5, b"two", coalesce_rank([1, 2])) == (
        Decision.DEFER, NOW + 2)  # due when the budget returns, not at the end of the lease
    assert not await budgets.done(tok.token_id, got.version)
    again = await budgets.claim(tok.token_id, b, NOW + 2)
    assert isinstance(again, Claimed) and again.body == b"two"


async def test_a_claim_not_confirmed_is_claimed_again_after_the_lease(store: RedisStore, budgets: BudgetStore) -> None:
    """A process that dies between claim and send: the push is sent again, not lost."""
    tok = await new_token(store)
    b = Budget(3600.0, 1, Overflow.DEFER)
    await budgets.message(tok.token_id, b, NOW)
    await budgets.message(tok.token_id, b, NOW, b"body", coalesce_rank([1]))
    assert isinstance(await budgets.claim(tok.token_id, b, NOW + 1, lease_s=60.0), Claimed)
    assert await budgets.claim(tok.token_id, b, NOW + 30) is None
    assert isinstance(await budgets.claim(tok.token_id, b, NOW + 61), Claimed)


async def test_budget_keys_expire_and_show_no_device_token(store: RedisStore, budgets: BudgetStore,
                                                          redis_url: str) -> None:
    tok = await new_token(store)
    b = Budget(3.0, 3, Overflow.DEFER)
    for i in range(5):
        await budgets.message(tok.token_id, b, NOW + i, b"x", coalesce_rank([i]))
    c = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [k async for k in c.scan_iter(match=store.prefix + "b:*")]
        assert len(keys) == 1
        assert 3598 + KEEP_S - 2 <= await c.ttl(keys[0]) <= 3598 + KEEP_S  # tat NOW+3600, last push at NOW+2
        dump = keys[0] + b"".join(v for kv in (await c.hgetall(keys[0])).items() for v in kv)
        assert tok.device_token not in dump and tok.device_token.lower() not in dump.lower()
    finally:
        await c.aclose()


async def test_a_deleted_token_gets_nothing(store: RedisStore, budgets: BudgetStore) -> None:
    tok = await new_token(store)
    await store.delete_token(tok.token_id)
    b = Budget(3.0, 3, Overflow.DEFER)
    assert await budgets.message(tok.token_id, b, NOW) == (None, None)
    assert await budgets.cron(tok.token_id, b, NOW, 1200.0) is None


async def test_a_policy_change_is_seen_by_the_next_read_on_another_instance(
        store: RedisStore, other_client: redis.asyncio.Redis) -> None:
    mine, theirs = PolicyStore(store.client, store.prefix), PolicyStore(other_client, store.prefix)
    assert await theirs.current() is None
    await mine.put(PolicySettings.from_json({"hidden_per_hour": 0}))
    first = await theirs.current()
    assert first is not None and first.default.parity
    assert await theirs.current() is first  # parsed once while unchanged
    await mine.put(PolicySettings.from_json({"hidden_per_hour": 6, "overflow": "drop"}))
    now = await theirs.current()
    assert now is not None and now.default == Budget(6, 3, Overflow.DROP)


async def test_cron_skips_a_device_woken_within_the_interval(store: RedisStore, budgets: BudgetStore) -> None:
    tok = await new_token(store)
    b = Budget(3.0, 3, Overflow.ALERT)
    assert await budgets.cron(tok.token_id, b, NOW, 1200.0) is CronDecision.SEND
    assert await budgets.cron(tok.token_id, b, NOW + 600, 1200.0) is CronDecision.SKIP_RECENT
    assert await budgets.cron(tok.token_id, b, NOW + 1200, 1200.0) is CronDecision.SEND
    await budgets.message(tok.token_id, b, NOW + 2000)
    assert await budgets.cron(tok.token_id, b, NOW + 2400, 1200.0) is CronDecision.SKIP_RECENT


async def test_more_concurrent_pushes_than_redis_connections_are_all_decided(store: RedisStore) -> None:
    """The 64 push workers share the store's 64 connections with everything else: a burst of decisions must
    wait for a connection, not fail with "Too many connections" (found by bench/nmsg_pipeline.py --policy)."""
    tok = await new_token(store)
    hidden = HiddenPushes(PolicyStore(store.client, store.prefix), PolicySettings.from_json({"hidden_per_hour": 3}),
                          BudgetStore(store.client, store.prefix), clock=lambda: NOW)
    ntf = [LastNotification(server(), b"n" * 24, 1_700_000_000_000, b"\x01" * 24, b"m" * 100)]
    plans = await asyncio.gather(*[hidden.plan(tok, ntf) for _ in range(200)])
    assert Counter(p.decision for p in plans if p is not None) == {Decision.HIDDEN: 3, Decision.ALERT: 197}


async def test_the_script_refuses_a_budget_taken_from_an_old_policy(store: RedisStore, budgets: BudgetStore) -> None:
    tok = await new_token(store)
    policy = PolicyStore(store.client, store.prefix)
    b = Budget(3.0, 3, Overflow.ALERT)
    assert await budgets.message(tok.token_id, b, NOW, policy=(policy.key, None)) == (Decision.HIDDEN, None)
    await policy.put(PolicySettings.from_json({"hidden_per_hour": 0}))
    changed = await budgets.message(tok.token_id, b, NOW, policy=(policy.key, None))
    assert isinstance(changed, PolicyChanged) and changed.raw == await policy.raw()
    assert await budgets.message(tok.token_id, b, NOW, policy=(policy.key, changed.raw)) == (Decision.HIDDEN, None)
