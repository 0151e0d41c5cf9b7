"""The pool under leases (subscriber/pool.py ``serves``/``fence``, store/leases.py): a real pool, a real SMP
stand-in and the real Redis. A status write whose lease is another instance's by now writes nothing and
stops the link (an instance paused past its lease's expiry)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from helpers.store_helpers import token

from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.store.errors import FencedOut
from ntf_server.store.leases import fence
from ntf_server.store.records import SUB_ACTIVE, TOKEN_ACTIVE, Notice, SubscriptionRecord, SubStatus, SubStatusKind
from ntf_server.store.redis import RedisStore
from ntf_server.subscriber.pool import SubscriberPool


class Notices:
    def __init__(self) -> None:
        self.got: list[Notice] = []

    async def accept(self, server: SMPServer, notices: Sequence[Notice]) -> None:
        self.got += notices


async def queue_and_subscription(store: RedisStore, smp: SmpServerStandIn,
                                 ) -> tuple[QueueCredentials, SubscriptionRecord]:
    """A queue on the stand-in and its subscription in the store (NEW), for an ACTIVE token."""
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    key = crypto.generate_ed25519()
    creds, _ = smp.create_queue(crypto.public_of(key))
    _, sub = await store.create_subscription(t.token_id, smp.address, creds.notifier_id,
                                             crypto.encode_private_key(key))
    assert sub is not None
    return creds, sub


async def until(cond: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - the stand-in's and the pool's states have no common event
            await asyncio.sleep(0.02)


async def test_a_link_whose_lease_is_gone_writes_nothing_and_stops(store: RedisStore,
                                                                   make_server: Callable[..., object]) -> None:
    smp: SmpServerStandIn = await make_server()  # type: ignore[misc]
    creds, sub = await queue_and_subscription(store, smp)
    number = await store._servers.number(smp.address, create=True)  # the home shard numbers servers for leases
    assert number is not None
    mine = await store.leases.acquire(smp.address, number, "a", 30)
    assert mine is not None
    pool = SubscriberPool(store, Notices(), Stats(), fence=lambda _: fence(mine.token, "a"))
    task = asyncio.create_task(pool.run())
    try:
        async def status() -> SubStatusKind:
            got = await store.get_subscription(sub.sub_id)
            assert got is not None
            return got.status.kind

        async with asyncio.timeout(10):
            while await status() is not SubStatusKind.ACTIVE:  # noqa: ASYNC110 - the store has no event to wait on
                await asyncio.sleep(0.02)
        assert smp.connections == 1
        # a's lease expires while it is paused; b takes the server
        await store.leases.release([mine], "a")
        assert await store.leases.acquire(smp.address, number, "b", 30) is not None
        smp.delete_queue(creds.notifier_id)  # DELD: a status a would write
        await until(lambda: smp.connections == 0)
        assert pool.link_state(smp.address) is None
        assert await status() is SubStatusKind.ACTIVE  # not written by a; b writes what its connection sees
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_status_writes_check_the_fence_atomically(store: RedisStore) -> None:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    server = SMPServer(("smp.example.net",), "5223", b"k" * 32)
    key = crypto.encode_private_key(crypto.generate_ed25519())
    _, sub = await store.create_subscription(t.token_id, server, b"n" * 24, key)
    assert sub is not None
    number = await store._servers.number(server, create=True)  # the home shard numbers servers for leases
    assert number is not None
    lease = await store.leases.acquire(server, number, "a", 30)
    assert lease is not None
    assert await store.set_subscription_statuses(server, [b"n" * 24], SUB_ACTIVE, fence=fence(lease.token, "a")) == 1
    stale = fence(lease.token - 1, "a")
    with pytest.raises(FencedOut):
        await store.set_subscription_statuses(server, [b"n" * 24], SubStatus(SubStatusKind.END), fence=stale)
    got = await store.get_subscription(sub.sub_id)
    assert got is not None and got.status.kind is SubStatusKind.ACTIVE
    assert await store.set_subscription_statuses(server, [b"n" * 24], SubStatus(SubStatusKind.END)) == 1


@pytest.mark.parametrize("how", ["hand_over", "drop"])
async def test_a_handed_over_or_dropped_link_writes_its_statuses_closes_and_does_not_reconnect(
        store: RedisStore, make_server: Callable[..., object], how: str) -> None:
    """hand_over (rebalancing) returns once it is done; drop (lease lost) returns at once and finishes in a
    task. Here the lease is nowhere (no fence), so the statuses are written either way."""
    smp: SmpServerStandIn = await make_server()  # type: ignore[misc]
    creds, sub = await queue_and_subscription(store, smp)
    notices = Notices()
    pool = SubscriberPool(store, notices, Stats(), delays=lambda: iter(lambda: 0.0, None))
    task = asyncio.create_task(pool.run())
    try:
        await until(lambda: pool.link_state(smp.address) == "up" and creds.notifier_id in smp.subscribed_queues())
        smp.notify(creds.notifier_id, b"m1", 1_700_000_000)
        await until(lambda: len(notices.got) == 1)
        if how == "hand_over":
            await pool.hand_over(smp.address)
        else:
            pool.drop(smp.address)
        assert pool.link_state(smp.address) is None
        await until(lambda: smp.connections == 0)
        got = await store.get_subscription(sub.sub_id)
        assert got is not None
        if got.status.kind is not SubStatusKind.INACTIVE:  # drop: written by its task, soon
            assert how == "drop"
            async with asyncio.timeout(5):
                while got.status.kind is not SubStatusKind.INACTIVE:  # the store has no event to wait on
                    await asyncio.sleep(0.02)
                    got = await store.get_subscription(sub.sub_id)
                    assert got is not None
        await asyncio.sleep(0.2)  # a reconnect (no backoff here) would have connected by now
        assert smp.connections == 0 and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
