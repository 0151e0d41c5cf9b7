"""Budgets and deferred pushes in Redis (store/budget.py, store/notices.py): the Lua scripts decide exactly as
push/policy.py, atomically under concurrent instances, one budget per device token, nothing readable in a dump."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio
from helpers.store_helpers import NOW, dataset_of, device_token, notifier_key, pending_count, server, token
from helpers.valkey_cluster import CLUSTER, SHARDS, raw_client

from ntf_server.config import Overflow
from ntf_server.push.policy import (
    Budget,
    BudgetState,
    CronDecision,
    Decision,
    PolicySettings,
    claim,
    cron_decide,
    decide,
)
from ntf_server.store.budget import KEEP_S, BudgetStore
from ntf_server.store.notices import Claimed, PolicyChanged
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import TOKEN_ACTIVE, Notice, PushProvider, TokenRecord
from ntf_server.store.redis import RedisStore


@pytest.fixture
async def budgets(store: RedisStore) -> BudgetStore:
    return store.budgets()


@pytest.fixture
async def other(store: RedisStore, redis_url: str, store_key: bytes) -> AsyncIterator[RedisStore]:
    """A second connection pool on the same data set, as a second server process has."""
    o = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, buckets=store.buckets,
                                 cluster=CLUSTER, shards=SHARDS)
    yield o
    await o.close()


@pytest.fixture
async def other_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = raw_client(redis_url)
    yield c
    await c.aclose()


def placed(store: RedisStore, t: TokenRecord) -> TokenRecord:
    """``t`` with an id as TNEW makes it (in a sharded store, in its device token's shard)."""
    return replace(t, token_id=store.new_token_id(t.provider, t.device_token))


async def new_token(store: RedisStore, dt: bytes | None = None) -> TokenRecord:
    t = placed(store, token(dt))
    await store.create_token(t)
    await store.activate_token(t.token_id)
    await store.create_subscription(t.token_id, server(1), t.token_id, notifier_key())
    return t


Decided = tuple[Decision | None, float | None]


async def message(store: RedisStore, tok: TokenRecord, b: Budget, now: float, meta: bytes = b"m",
                  policy: tuple[str, bytes | None] | None = None) -> Decided | PolicyChanged:
    """One notice of ``tok``'s queue decided as the pipeline does it (no outbox entry)."""
    n = Notice(server(1), tok.token_id, int(now * 1000), os.urandom(24), meta)
    res = await store.notify([n], dict.fromkeys(PushProvider, b), now, policy, 0.0)
    if isinstance(res, PolicyChanged):
        return res
    [d] = res
    return d.decision, d.due


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
                got = await message(store, tok, b, now)
                assert got == (v.decision, v.due), (b, now)
                state = v.state
                pending = v.due if v.decision is Decision.DEFER else (None if v.cancel_pending else pending)
            elif op < 0.8 and pending is not None and pending <= now:
                sent, state, again = claim(b, state, now)
                got_claim = await store.claim_deferred(tok.token_id, b, now, 5.0)
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
        store: RedisStore, other: RedisStore) -> None:
    """Two registrations of one device token (before one is verified, the other is not deleted yet), pushed
    by two instances at once: one budget, whichever registration and whichever process."""
    dt = device_token()
    a = await new_token(store, dt)
    c = placed(store, token(dt))
    await store.create_token(c)
    await store.set_token_status(c.token_id, TOKEN_ACTIVE)  # without activate_token, which would delete a
    await store.create_subscription(c.token_id, server(1), c.token_id, notifier_key())
    b = Budget(3.0, 3, Overflow.ALERT)
    for minute in range(3):  # 3 at once, then nothing for 20 min, then 1 per 20 min
        now = NOW + 1200.0 * minute
        calls = [message(s, t, b, now) for _ in range(50) for s, t in ((store, a), (other, c))]
        got = Counter(r[0] for r in await asyncio.gather(*calls) if isinstance(r, tuple))
        assert got == {Decision.HIDDEN: 3 if minute == 0 else 1, Decision.ALERT: 100 - (3 if minute == 0 else 1)}
    stranger = await new_token(store)  # another device has its own budget
    assert await message(store, stranger, b, NOW + 2400.0) == (Decision.HIDDEN, None)


async def test_a_due_push_is_claimed_by_exactly_one_instance(
        store: RedisStore, budgets: BudgetStore, other: RedisStore) -> None:
    tok = await new_token(store)
    b = Budget(3600.0, 1, Overflow.DEFER)
    assert (await message(store, tok, b, NOW))[0] is Decision.HIDDEN
    assert await message(store, tok, b, NOW, b"first") == (Decision.DEFER, NOW + 1)
    assert await message(other, tok, b, NOW + 0.5, b"second") == (Decision.DEFER, NOW + 1)
    assert await budgets.due(NOW + 0.9) == [] and await budgets.due(NOW + 1) == [tok.token_id]
    results = await asyncio.gather(*[s.claim_deferred(tok.token_id, b, NOW + 1, 60.0)
                                     for s in (store, other) for _ in range(10)])
    claimed = [r for r in results if isinstance(r, Claimed)]
    # the push is built when claimed: it carries the token's newest notice (one queue: its last one)
    assert len(claimed) == 1 and [n.enc_meta for n in claimed[0].notices] == [b"second"]
    assert await budgets.done(tok.token_id, claimed[0].version)
    assert await pending_count(store) == 0


async def test_a_notification_joining_during_the_send_keeps_the_pending_push(
        store: RedisStore, budgets: BudgetStore) -> None:
    tok = await new_token(store)
    b = Budget(3600.0, 1, Overflow.DEFER)
    await message(store, tok, b, NOW)
    await message(store, tok, b, NOW, b"one")
    got = await store.claim_deferred(tok.token_id, b, NOW + 1, 60.0)
    assert isinstance(got, Claimed)
    assert await message(store, tok, b, NOW + 1.5, b"two") == (
        Decision.DEFER, NOW + 2)  # due when the budget returns, not at the end of the lease
    assert not await budgets.done(tok.token_id, got.version)
    again = await store.claim_deferred(tok.token_id, b, NOW + 2, 60.0)
    assert isinstance(again, Claimed) and [n.enc_meta for n in again.notices] == [b"two"]


async def test_a_claim_not_confirmed_is_claimed_again_after_the_lease(store: RedisStore, budgets: BudgetStore) -> None:
    """A process that dies between claim and send: the push is sent again, not lost."""
    tok = await new_token(store)
    b = Budget(3600.0, 1, Overflow.DEFER)
    await message(store, tok, b, NOW)
    await message(store, tok, b, NOW, b"body")
    assert isinstance(await store.claim_deferred(tok.token_id, b, NOW + 1, 60.0), Claimed)
    assert await store.claim_deferred(tok.token_id, b, NOW + 30, 60.0) is None
    assert isinstance(await store.claim_deferred(tok.token_id, b, NOW + 61, 60.0), Claimed)


async def test_budget_keys_expire_and_show_no_device_token(store: RedisStore, budgets: BudgetStore,
                                                          redis_url: str) -> None:
    tok = await new_token(store)
    b = Budget(3.0, 3, Overflow.DEFER)
    for i in range(5):
        await message(store, tok, b, NOW + i)
    c = raw_client(redis_url)
    try:
        keys = [k for d in store.datasets async for k in c.scan_iter(match=d.keys.prefix + "b:*")]
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
    assert await message(store, tok, b, NOW) == (None, None)
    assert await budgets.cron(tok.token_id, b, NOW, 1200.0) is None


async def test_a_policy_change_is_seen_by_the_next_read_on_another_instance(
        store: RedisStore, other_client: redis.asyncio.Redis) -> None:
    mine, theirs = PolicyStore(store.dataset), PolicyStore(dataset_of(other_client, store.prefix))
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
    await message(store, tok, b, NOW + 2000)
    assert await budgets.cron(tok.token_id, b, NOW + 2400, 1200.0) is CronDecision.SKIP_RECENT


async def test_a_batch_of_notices_of_one_token_is_decided_in_order(store: RedisStore) -> None:
    """One script decides a whole batch: within it, the budget is spent notice by notice, in order."""
    tok = await new_token(store)
    b = Budget(3.0, 3, Overflow.ALERT)
    batch = [Notice(server(1), tok.token_id, 1_700_000_000_000 + i, os.urandom(24), b"m%d" % i) for i in range(200)]
    res = await store.notify(batch, dict.fromkeys(PushProvider, b), NOW, None, 0.0)
    assert isinstance(res, list)
    assert [d.decision for d in res] == [Decision.HIDDEN] * 3 + [Decision.ALERT] * 197
    assert all(d.notices[-1].enc_meta == b"m%d" % i for i, d in enumerate(res))  # each push carries its notice


async def test_the_script_refuses_a_budget_taken_from_an_old_policy(store: RedisStore, budgets: BudgetStore) -> None:
    tok = await new_token(store)
    policy = PolicyStore(store.dataset)
    b = Budget(3.0, 3, Overflow.ALERT)
    assert await message(store, tok, b, NOW, policy=(policy.key, None)) == (Decision.HIDDEN, None)
    await policy.put(PolicySettings.from_json({"hidden_per_hour": 0}))
    changed = await message(store, tok, b, NOW, policy=(policy.key, None))
    assert isinstance(changed, PolicyChanged) and changed.raw == await policy.raw()
    assert await message(store, tok, b, NOW, policy=(policy.key, changed.raw)) == (Decision.HIDDEN, None)
