"""Leases on SMP servers (store/leases.py) against the real Redis: set-if-absent with expiry, fencing
tokens, renewal and release only by the holder, presence, the admin listing, the SNEW hand-off."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

from helpers.store_helpers import notifier_key, server, token

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.leases import Lease, ServerLease
from ntf_server.store.records import TOKEN_ACTIVE
from ntf_server.store.redis import RedisStore

A, B = "instance-a", "instance-b"


async def with_subscriptions(store: RedisStore, *servers: SMPServer) -> list[bytes]:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    sids = []
    for s in servers:
        _, sub = await store.create_subscription(t.token_id, s, secrets.token_bytes(24), notifier_key())
        assert sub is not None
        sids.append(sub.sub_id)
    return sids


async def number(store: RedisStore, s: SMPServer) -> int:
    n = await store._servers.number(s, create=True)  # a sharded store's home numbers it when asked
    assert n is not None
    return n


async def test_acquire_is_exclusive_and_tokens_increase(store: RedisStore, second_store: RedisStore) -> None:
    await with_subscriptions(store, server(1), server(2))
    n1, n2 = await number(store, server(1)), await number(store, server(2))
    a = await store.leases.acquire(server(1), n1, A, 10)
    assert a is not None
    assert await second_store.leases.acquire(server(1), n1, B, 10) is None  # held
    b = await second_store.leases.acquire(server(2), n2, B, 10)
    assert b is not None and b.token > a.token
    assert await store.leases.release([a], A) == 1
    again = await second_store.leases.acquire(server(1), n1, B, 10)
    assert again is not None and again.token > b.token  # every acquisition a greater token


async def test_lease_expires_and_the_stale_holder_cannot_renew_or_release(store: RedisStore,
                                                                         second_store: RedisStore) -> None:
    await with_subscriptions(store, server(1))
    n = await number(store, server(1))
    old = await store.leases.acquire(server(1), n, A, 0.05)
    assert old is not None
    await asyncio.sleep(0.1)  # Redis expires the key (PX): nothing to wait on but its clock
    new = await second_store.leases.acquire(server(1), n, B, 10)
    assert new is not None and new.token > old.token
    assert await store.leases.renew([old], A, 10) == [False]
    assert await store.leases.release([old], A) == 0
    assert await second_store.leases.renew([new], B, 10) == [True]
    [listed] = await store.leases.listing()
    assert (listed.owner, listed.token) == (B, new.token)


async def test_renewal_extends(store: RedisStore) -> None:
    await with_subscriptions(store, server(1), server(2))
    n1, n2 = await number(store, server(1)), await number(store, server(2))
    l1 = await store.leases.acquire(server(1), n1, A, 0.2)
    l2 = await store.leases.acquire(server(2), n2, A, 0.2)
    assert l1 is not None and l2 is not None
    assert await store.leases.renew([l1, l2, Lease(server(2), n2, l2.token + 1)], A, 30) == [True, True, False]
    await asyncio.sleep(0.3)
    listing = {x.number: x for x in await store.leases.listing()}
    assert listing[n1].owner == A and listing[n1].expires_in_s is not None and listing[n1].expires_in_s > 20
    assert await store.leases.renew([l1], B, 30) == [False]  # same token, another instance: not its lease


async def test_listing_shows_free_and_held_servers_with_counts(store: RedisStore) -> None:
    await with_subscriptions(store, server(1), server(1), server(2))
    n1, n2 = await number(store, server(1)), await number(store, server(2))
    held = await store.leases.acquire(server(2), n2, A, 10)
    assert held is not None
    listing = sorted(await store.leases.listing(), key=lambda x: x.number)
    assert listing[0] == ServerLease(server(1), n1, 2, None, None, None)
    assert (listing[1].server, listing[1].subscriptions, listing[1].owner, listing[1].token) == (
        server(2), 1, A, held.token)


async def test_two_instances_racing_for_many_servers_each_server_has_one_owner(store: RedisStore,
                                                                              second_store: RedisStore) -> None:
    servers = [server(i) for i in range(1, 21)]
    await with_subscriptions(store, *servers)
    numbers = [await number(store, s) for s in servers]

    async def grab(st: RedisStore, me: str) -> list[Lease]:
        got = await asyncio.gather(*(st.leases.acquire(s, n, me, 10) for s, n in zip(servers, numbers, strict=True)))
        return [x for x in got if x is not None]

    mine, theirs = await asyncio.gather(grab(store, A), grab(second_store, B))
    assert sorted([x.number for x in mine] + [x.number for x in theirs]) == sorted(numbers)
    tokens = [x.token for x in mine + theirs]
    assert len(set(tokens)) == len(tokens)
    owners = {x.number: x.owner for x in await store.leases.listing()}
    assert owners == {**{x.number: A for x in mine}, **{x.number: B for x in theirs}}


async def test_presence(store: RedisStore, second_store: RedisStore) -> None:
    assert await store.leases.presence(A, 10) == [A]
    assert sorted(await second_store.leases.presence(B, 0.05)) == [A, B]
    await asyncio.sleep(0.1)
    assert await store.leases.presence(A, 10) == [A]  # B did not renew: gone
    assert await store.leases.presence(A, 0) == []  # leaving


async def test_handoff_goes_only_to_the_holder(store: RedisStore, second_store: RedisStore) -> None:
    sids = await with_subscriptions(store, server(1), server(1))
    n = await number(store, server(1))
    for sid in sids:
        await store.leases.hand_off(server(1), sid)
    await store.leases.hand_off(server(9), b"x" * 24)  # no subscription there: nothing kept
    lease = await second_store.leases.acquire(server(1), n, B, 10)
    assert lease is not None
    assert await store.leases.take_handoffs(lease, A, 10) == []  # not A's lease
    assert await store.leases.take_handoffs(Lease(server(1), n, lease.token - 1), B, 10) == []  # stale token
    assert await second_store.leases.take_handoffs(lease, B, 1) == sids[:1]
    assert await second_store.leases.take_handoffs(lease, B, 10) == sids[1:]
    assert await second_store.leases.take_handoffs(lease, B, 10) == []


async def test_release_instance_frees_only_that_instances_leases(store: RedisStore, second_store: RedisStore) -> None:
    await with_subscriptions(store, server(1), server(2), server(3))
    n1, n2, n3 = [await number(store, server(i)) for i in (1, 2, 3)]
    await store.leases.acquire(server(1), n1, A, 10)
    await store.leases.acquire(server(2), n2, "x" + A, 10)  # an id ending like A's is someone else
    await second_store.leases.acquire(server(3), n3, B, 10)
    await store.leases.presence(A, 10)
    assert await second_store.leases.release_instance(A) == 1
    owners = {x.number: x.owner for x in await store.leases.listing()}
    assert owners == {n1: None, n2: "x" + A, n3: B}
    assert await second_store.leases.presence(B, 10) == [B]
