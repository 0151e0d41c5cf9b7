"""A data set in shards (store/shards.py, sharded.py, sharded_parts.py) on the real Redis: where shards and tokens
go, the shard count fixed at creation, and what spans shards (a device's registrations, a queue's uniqueness,
NOTIFY, subscription and outbox ids, leases' copies). Each test makes its own data sets of three shards."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from helpers.store_helpers import PARITY, Outcome, add_notices, check_invariants, notifier_key, server, token, wipe
from helpers.valkey_cluster import CLUSTER, raw_client
from hypothesis import given, settings, strategies as st

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import StoreCounts, SubCreate, TokenCreate
from ntf_server.store.errors import FencedOut, StoreError
from ntf_server.store.leases import fence
from ntf_server.store.outbox import PushKindCode
from ntf_server.store.records import SUB_ACTIVE, SUB_INACTIVE, TOKEN_ACTIVE, Notice, SubscriptionRecord, TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.store.sharded import ShardedStore
from ntf_server.store.sharded_parts import MIRROR
from ntf_server.store.shards import shard_of, shard_prefixes, slot_of, token_id_in

N, SLOTS, AT = 3, 16384, 1_800_000_000.0
Open = Callable[..., Awaitable[RedisStore]]


@settings(max_examples=40, deadline=None)
@given(st.text("abcxyz:0123456789", min_size=1, max_size=12), st.integers(1, 64))
def test_cluster_shards_take_one_slot_each_in_its_own_nth_of_the_slots(prefix: str, n: int) -> None:
    ps = shard_prefixes(prefix, n, cluster=True)
    assert ps[0] == "{" + prefix + "}" and shard_prefixes(prefix, n, cluster=True) == ps
    width = SLOTS / n
    for p in ps:
        assert p.startswith("{") and p.endswith("}") and slot_of(p + "t{ab}:subs") == slot_of(p)
    for p in ps[1:]:  # the middle half of its segment: no nearer than a quarter segment to a primary's edge
        assert width / 4 - 1 <= slot_of(p) % width <= 3 * width / 4 + 1
    assert sorted(min(int(slot_of(p) // width), n - 1) for p in ps) == list(range(n))  # one shard per segment


def test_three_shards_in_the_three_thirds_in_a_cluster_and_under_prefixes_of_their_own_on_one_redis() -> None:
    ps = shard_prefixes("ntf:", N, cluster=True)
    assert ps[0] == "{ntf:}" and sorted(slot_of(p) * N // SLOTS for p in ps) == [0, 1, 2]
    assert shard_prefixes("ntf:", N, cluster=False) == ["ntf:", "ntf:1:", "ntf:2:"]
    with pytest.raises(StoreError):
        shard_prefixes("ntf:", 257, cluster=False)


@given(st.text("0123456789abcdef", min_size=8, max_size=64), st.integers(1, 256))
def test_token_id_in_lands_in_the_device_indexs_shard(index: str, n: int) -> None:
    tid = token_id_in(index, n)
    assert len(tid) == 24
    assert int.from_bytes(tid[:4], "big") % n == int(index[:8], 16) % n == shard_of(tid, n)


def test_token_id_in_near_the_top_of_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("secrets.token_bytes", lambda k: b"\xff" * k)  # the head moved up would pass 2**32
    for n, want in [(m, want) for m in (3, 7, 255, 256) for want in range(m)]:
        tid = token_id_in(f"{want:08x}", n)
        assert len(tid) == 24 and tid[4:] == b"\xff" * 20 and shard_of(tid, n) == want


@pytest.fixture
async def open_store(redis_url: str, store_key: bytes) -> AsyncIterator[Open]:
    """Opens stores (three shards unless told); every key of every shard of theirs is removed afterwards."""
    opened, prefixes = list[RedisStore](), set[str]()

    async def open_(prefix: str | None = None, shards: int = N) -> RedisStore:
        prefix = prefix or f"test:{secrets.token_hex(6)}:"
        prefixes.update(shard_prefixes(prefix, N, cluster=CLUSTER))
        s = await RedisStore.connect(redis_url, store_key, prefix=prefix, buckets=16, cluster=CLUSTER, shards=shards)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        await s.close()
    await wipe(redis_url, prefixes)


@pytest.fixture
async def sharded(open_store: Open) -> ShardedStore:
    s = await open_store()
    assert isinstance(s, ShardedStore) and len(s.shards) == N
    return s


def tid_in(k: int) -> bytes:
    """A random token id of shard k (as import-simplex keeps a token's id whatever its device's shard)."""
    tid = secrets.token_bytes(24)
    return tid if shard_of(tid, N) == k else tid_in(k)


async def made(store: RedisStore, k: int, dt: bytes | None = None, *, active: bool = True) -> TokenRecord:
    t = replace(token(dt, status=TOKEN_ACTIVE) if active else token(dt), token_id=tid_in(k))
    assert await store.create_token(t) is TokenCreate.CREATED
    return t


async def subscribe(store: RedisStore, t: TokenRecord, srv: SMPServer, nid: bytes | None = None) -> SubscriptionRecord:
    res, sub = await store.create_subscription(t.token_id, srv, nid or secrets.token_bytes(24), notifier_key())
    assert res is SubCreate.CREATED and sub is not None
    return sub


async def test_a_data_set_keeps_the_shard_count_it_was_created_with(open_store: Open) -> None:
    first = await open_store()
    t = await made(first, 2)
    for other in (1, 2, 4):
        with pytest.raises(StoreError, match=f"has 3 shards, configured {other}"):
            await open_store(first.prefix, shards=other)
    assert await (await open_store(first.prefix)).get_token(t.token_id) == t
    one = await open_store(shards=1)
    await one.create_token(t)
    meta = one.dataset.keys.g("meta")
    assert await one.client.hget(meta, "shards") == b"1"
    await one.client.hdel(meta, "shards")  # as a data set written before shards existed has it
    assert await one.client.hget(meta, "keycheck") is not None
    with pytest.raises(StoreError, match="has 1 shard, configured 3"):
        await open_store(one.prefix, shards=3)
    assert await (await open_store(one.prefix, shards=1)).get_token(t.token_id) == t


async def test_new_token_ids_spread_devices_over_the_shards_and_keep_a_device_in_one(sharded: ShardedStore,
                                                                                     redis_url: str) -> None:
    async def created(tokens: list[TokenRecord]) -> list[int]:  # with new_token_id's ids; then records per shard
        for t in tokens:
            placed = replace(t, token_id=sharded.new_token_id(t.provider, t.device_token))
            assert await sharded.create_token(placed) is TokenCreate.CREATED
        async with raw_client(redis_url) as c:
            return [len([k async for k in c.scan_iter(match=d.keys.prefix + "t{*}")]) for d in sharded.datasets]

    spread = await created([token() for _ in range(60)])
    assert sum(spread) == 60 and all(spread), spread  # a shard left empty by chance: 3 * (2/3)**60, about 1e-10
    dt = token().device_token
    after = await created([token(dt) for _ in range(6)])
    assert sorted(a - b for a, b in zip(after, spread, strict=True)) == [0, 0, 6]


async def test_a_queue_subscribed_in_one_shard_is_a_conflict_for_a_token_of_another(sharded: ShardedStore) -> None:
    a, b = await made(sharded, 0), await made(sharded, 2)
    srv, nid = server(1), secrets.token_bytes(24)
    sub = await subscribe(sharded, a, srv, nid)
    assert await sharded.create_subscription(b.token_id, srv, nid, notifier_key()) == (SubCreate.CONFLICT, None)
    assert await sharded.token_subscriptions(b.token_id) == []
    await subscribe(sharded, b, server(2), nid)  # the same notifier id on another SMP server is another queue
    assert await sharded.delete_subscription(sub.sub_id) == sub
    await subscribe(sharded, b, srv, nid)  # the queue is free again


async def test_a_devices_registrations_in_other_shards_count_for_a_repeat_and_the_cap(sharded: ShardedStore) -> None:
    dt = token().device_token
    placed = replace(token(dt), token_id=sharded.new_token_id(token().provider, dt))
    k = shard_of(placed.token_id, N)
    assert await sharded.create_token(placed) is TokenCreate.CREATED
    repeat = replace(token(dt, vk=placed.verify_key), token_id=tid_in((k + 1) % N))  # an imported id
    assert await sharded.create_token(repeat) is TokenCreate.DUPLICATE
    second = replace(token(dt), token_id=tid_in((k + 1) % N))
    assert await sharded.create_token(second, max_per_device=2) is TokenCreate.CREATED
    for j in range(N):  # two registrations in two shards: the cap of two is reached in each
        assert await sharded.create_token(replace(token(dt), token_id=tid_in(j)), max_per_device=2) is TokenCreate.QUOTA
    third = replace(token(dt), token_id=tid_in((k + 2) % N))
    assert await sharded.create_token(third, max_per_device=3) is TokenCreate.CREATED
    assert await sharded.create_token(third, max_per_device=2) is TokenCreate.CREATED  # a retried call
    assert {await sharded.get_token(t.token_id) for t in (placed, second, third)} == {placed, second, third}


async def test_activating_deletes_the_devices_registrations_in_every_shard_and_each_shard_stays_whole(
        sharded: ShardedStore, redis_url: str) -> None:
    dt = token().device_token
    old, same_shard = await made(sharded, 0, dt), await made(sharded, 1, dt)
    gone = [await subscribe(sharded, old, server(1)), await subscribe(sharded, old, server(2)),
            await subscribe(sharded, same_shard, server(1))]
    new = await made(sharded, 1, dt, active=False)
    kept = await subscribe(sharded, new, server(1))
    others = [await made(sharded, k % N) for k in range(6)]  # other devices: untouched
    subs = [await subscribe(sharded, t, server(1 + k % 2)) for k, t in enumerate(others)]
    await add_notices(sharded, [Notice(s.server, s.notifier_id, 1_000, b"n" * 24, b"m" * 144) for s in gone + subs])
    ok, removed = await sharded.activate_token(new.token_id)
    assert ok and sorted(r.sub_id for r in removed) == sorted(s.sub_id for s in gone)
    assert [await sharded.get_token(t.token_id) for t in (old, same_shard)] == [None, None]
    assert [await sharded.get_subscription(s.sub_id) for s in gone] == [None] * 3
    assert await sharded.get_token(new.token_id) == replace(new, status=TOKEN_ACTIVE)
    assert await sharded.get_subscription(kept.sub_id) == kept
    assert [await sharded.get_token(t.token_id) for t in others] == others
    assert (await sharded.delete_token(others[4].token_id))[0] and await sharded.delete_subscription(subs[2].sub_id)
    assert await check_invariants(sharded, redis_url) == {"tokens": 6, "subscriptions": 5, "last_notifications": 4}
    assert await sharded.counts() == StoreCounts(6, 5, 4, 2)


async def test_notify_decides_each_notice_in_the_shard_of_its_subscription(sharded: ShardedStore) -> None:
    srv, nids = server(1), [secrets.token_bytes(24) for _ in range(N + 1)]
    toks = [await made(sharded, k) for k in range(N)] + [await made(sharded, 1, active=False)]
    for t, nid in zip(toks, nids, strict=True):
        await subscribe(sharded, t, srv, nid)
    for at in (1_000, 2_000):  # the second time the front knows the known queues' shards
        batch = [Notice(srv, nid, at + i, b"n" * 24, b"m" * 144) for i, nid in enumerate([*nids, b"?" * 24])]
        got = await add_notices(sharded, batch)
        assert [a.outcome for a in got] == [Outcome.STORED] * N + [Outcome.TOKEN_NOT_ACTIVE, Outcome.NO_SUBSCRIPTION]
        assert [a.token.token_id if a.token else None for a in got[:N]] == [t.token_id for t in toks[:N]]
        assert [a.notifications[-1] for a in got[:N]] == batch[:N]


async def test_a_subscription_is_found_and_deleted_whatever_its_shard(sharded: ShardedStore) -> None:
    toks = [await made(sharded, k) for k in range(N)]
    await subscribe(sharded, toks[1], server(2))  # so server(1) has another number in shard 1 than in the others
    subs = [await subscribe(sharded, t, server(1)) for t in toks]
    for t, sub in zip(toks, subs, strict=True):
        assert await sharded.get_subscription(sub.sub_id) == sub
        assert await sharded.subscription_and_token(sub.sub_id) == (sub, t)
    unknown = secrets.token_bytes(len(subs[0].sub_id))
    assert await sharded.get_subscription(unknown) is None
    assert await sharded.subscription_and_token(unknown) == (None, None)
    assert await sharded.delete_subscription(subs[1].sub_id) == subs[1]
    assert await sharded.delete_subscription(subs[1].sub_id) is None
    assert [await sharded.get_subscription(s.sub_id) for s in subs] == [subs[0], None, subs[2]]


async def test_outbox_ids_take_ack_and_retry_to_their_shard(sharded: ShardedStore) -> None:
    tids = [tid_in(k) for k in (0, 1, 2, 1)]
    ids = [await sharded.outbox.add(PushKindCode.ALERT, t, AT, AT, 1) for t in tids]
    claimed = sorted((e.id, e.token_id) for e in await sharded.outbox.claim(AT + 1, 30, 10))
    assert claimed == sorted(zip(ids, tids, strict=True))
    assert await sharded.outbox.retry(ids[1], AT + 5, 2)
    assert await sharded.outbox.ack(ids[:3]) == 3
    assert not await sharded.outbox.retry(ids[0], AT + 5, 2)  # acknowledged
    assert [(e.id, e.token_id) for e in await sharded.outbox.claim(AT + 100, 30, 10)] == [(ids[3], tids[3])]
    subs = [await subscribe(sharded, await made(sharded, k), server(1)) for k in (1, 2)]
    batch = [Notice(server(1), s.notifier_id, 1_000, b"n" * 24, b"m" * 144) for s in subs]
    decided = await sharded.notify(batch, PARITY, AT, None, 30.0)  # pushes to send now: outbox entries
    assert isinstance(decided, list) and all(d.push_id for d in decided)
    assert await sharded.outbox.ack([ids[3], *(d.push_id for d in decided)]) == 3
    assert await sharded.outbox.count() == 0


async def lease_number(store: ShardedStore, srv: SMPServer) -> int:
    return int(await store._servers.number(srv, create=True) or 0)  # the home's numbers are the leases'


@pytest.mark.parametrize("paged", [False, True], ids=["unrouted", "paged"])
async def test_a_lease_and_its_copies_fence_status_writes_in_every_shard(sharded: ShardedStore, paged: bool) -> None:
    srv = server(1)
    subs = [await subscribe(sharded, await made(sharded, k), srv) for k in (1, 2, 2)]  # none in the home shard
    await subscribe(sharded, await made(sharded, 2), server(2))  # a server of no shard but the third
    nids, n = [s.notifier_id for s in subs], await lease_number(sharded, srv)
    a = await sharded.leases.acquire(srv, n, "a", 30)
    assert a is not None
    listing = {(x.server, x.subscriptions, x.owner, x.token) for x in await sharded.leases.listing()}
    assert listing == {(srv.normalized(), 3, "a", a.token), (server(2).normalized(), 1, None, None)}  # all shards
    if paged:  # the front then sends each id to its own shard alone
        assert sum([len(p) async for p in sharded.iter_server_subscriptions(srv)]) == 3
    assert await sharded.set_subscription_statuses(srv, nids, SUB_ACTIVE, fence=fence(a.token, "a")) == 3
    assert await sharded.leases.release([a], "a") == 1
    b = await sharded.leases.acquire(srv, n, "b", 30)
    assert b is not None and b.token > a.token
    assert await sharded.leases.renew([a], "a", 30) == [False]  # a late renewal of the former owner
    with pytest.raises(FencedOut):
        await sharded.set_subscription_statuses(srv, nids, SUB_INACTIVE, fence=fence(a.token, "a"))
    assert [s.status if (s := await sharded.get_subscription(x.sub_id)) else None for x in subs] == [SUB_ACTIVE] * 3
    assert await sharded.set_subscription_statuses(srv, nids, SUB_INACTIVE, fence=fence(b.token, "b")) == 3
    assert [s.status if (s := await sharded.get_subscription(x.sub_id)) else None for x in subs] == [SUB_INACTIVE] * 3


async def test_mirror_never_replaces_a_copy_with_one_of_a_smaller_token(sharded: ShardedStore) -> None:
    await subscribe(sharded, await made(sharded, 1), server(1))
    b = await sharded.leases.acquire(server(1), await lease_number(sharded, server(1)), "b", 30)
    assert b is not None
    m = await sharded.shards[1]._servers.number(server(1), create=False)  # the server's number in shard 1
    copy, mirror = sharded.datasets[1].keys.g(f"ls:{m}"), sharded.datasets[1].script(MIRROR)
    assert await sharded.client.get(copy) == f"{b.token} b".encode()  # written by acquire
    assert await mirror(30_000, m, b.token - 1, "a") == 0
    assert await sharded.client.get(copy) == f"{b.token} b".encode()
    assert await mirror(30_000, m, b.token + 9, "c") == 1
    assert await sharded.client.get(copy) == f"{b.token + 9} c".encode()


async def test_release_instance_frees_a_lease_on_a_server_left_without_subscriptions(sharded: ShardedStore) -> None:
    sub = await subscribe(sharded, await made(sharded, 2), server(1))
    n = await lease_number(sharded, server(1))
    assert await sharded.leases.acquire(server(1), n, "a", 30) is not None
    assert await sharded.delete_subscription(sub.sub_id) == sub  # on one shard: released all the same
    assert await sharded.leases.release_instance("a") == 1
    assert await sharded.leases.acquire(server(1), n, "b", 30) is not None


async def test_a_status_write_follows_a_queue_moved_to_another_shard_since_paged(sharded: ShardedStore) -> None:
    srv, nid = server(1), secrets.token_bytes(24)
    first = await subscribe(sharded, await made(sharded, 0), srv, nid)
    assert sum([len(p) async for p in sharded.iter_server_subscriptions(srv)]) == 1  # the front learns shard 0
    assert await sharded.delete_subscription(first.sub_id) == first
    moved = await subscribe(sharded, await made(sharded, 2), srv, nid)
    assert await sharded.set_subscription_statuses(srv, [nid], SUB_ACTIVE) == 1  # as on one shard
    assert await sharded.get_subscription(moved.sub_id) == replace(moved, status=SUB_ACTIVE)
