"""The pool through its seams (subscriber/pool.py): a real pool, real SMP stand-ins, the real Redis.

``client_factory`` makes the connections (here: real ``SmpClient``s, recorded), ``delays`` is the
reconnect backoff (here: none, recorded), the store and the stand-ins are real; what the pool decides is
read back from the store's statuses, the stand-ins' subscribers and the pool's states and counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace

import pytest
from helpers.store_helpers import token

from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.store.base import RemovedSub
from ntf_server.store.records import SUB_INACTIVE, TOKEN_ACTIVE, Notice, SubscriptionRecord, SubStatusKind
from ntf_server.store.redis import RedisStore
from ntf_server.subscriber.client import SmpClient
from ntf_server.subscriber.linkstate import LinkState
from ntf_server.subscriber.pool import SubscriberPool

Make = Callable[..., "asyncio.Future[SmpServerStandIn]"]


class Notices:
    def __init__(self) -> None:
        self.got: list[Notice] = []

    async def accept(self, server: SMPServer, notices: Sequence[Notice]) -> None:
        self.got += notices


class Seams:
    """The pool's injected parts, recording what the pool asked of them."""

    def __init__(self) -> None:
        self.connections: list[SMPServer] = []
        self.backoffs = 0

    def client(self, server: SMPServer) -> SmpClient:
        self.connections.append(server)
        return SmpClient(server)

    def delays(self) -> Iterator[float]:
        while True:
            self.backoffs += 1
            yield 0.0


async def until(cond: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - the stand-ins', the store's and the pool's states share no event
            await asyncio.sleep(0.02)


async def status(store: RedisStore, sub: SubscriptionRecord) -> SubStatusKind | None:
    got = await store.get_subscription(sub.sub_id)
    return None if got is None else got.status.kind


async def until_status(store: RedisStore, subs: Sequence[SubscriptionRecord], kind: SubStatusKind) -> None:
    async with asyncio.timeout(10):
        while [await status(store, s) for s in subs] != [kind] * len(subs):  # noqa: ASYNC110 - no store events
            await asyncio.sleep(0.02)


async def subscription(store: RedisStore, smp: SmpServerStandIn, *, active: bool = True,
                       ) -> tuple[QueueCredentials, SubscriptionRecord]:
    """A queue on the stand-in and its subscription in the store (NEW), as SNEW stores it."""
    t = replace(token(), status=TOKEN_ACTIVE) if active else token()
    await store.create_token(t)
    key = crypto.generate_ed25519()
    creds, _ = smp.create_queue(crypto.public_of(key))
    stored = crypto.notifier_key_for_storage(crypto.encode_private_key(key))
    _, sub = await store.create_subscription(t.token_id, smp.address, creds.notifier_id, stored)
    assert sub is not None
    return creds, sub


@pytest.fixture
async def running() -> AsyncIterator[Callable[[SubscriberPool], None]]:
    tasks: list[asyncio.Task[None]] = []
    yield lambda pool: tasks.append(asyncio.create_task(pool.run()))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_start_up_resubscribes_what_active_tokens_hold_one_connection_per_server(
        store: RedisStore, make_server: Make, running: Callable[[SubscriberPool], None]) -> None:
    smp1, smp2 = await make_server(), await make_server()
    subs = [await subscription(store, smp) for smp in (smp1, smp1, smp2)]
    _, waiting = await subscription(store, smp2, active=False)  # its token is not ACTIVE: not subscribed
    await store.set_subscription_statuses(smp1.address, [subs[1][1].notifier_id], SUB_INACTIVE)  # as after a stop
    seams, stats = Seams(), Stats()
    pool = SubscriberPool(store, Notices(), stats, client_factory=seams.client, delays=seams.delays)
    running(pool)
    await until_status(store, [s for _, s in subs], SubStatusKind.ACTIVE)
    await until(lambda: pool.resubscription.servers_done == 2)
    assert sorted(seams.connections, key=str) == sorted([smp1.address, smp2.address], key=str)
    assert dict(pool.link_states()) == {smp1.address: LinkState.UP, smp2.address: LinkState.UP}
    assert sorted(smp1.subscribed_queues() + smp2.subscribed_queues()) == sorted(c.notifier_id for c, _ in subs)
    assert await status(store, waiting) is SubStatusKind.NEW
    assert stats["smp_nsub_sent"] == stats["smp_sub_ok"] == 3


async def test_a_lost_connection_marks_its_queues_inactive_and_the_next_one_subscribes_them_again(
        store: RedisStore, make_server: Make, running: Callable[[SubscriberPool], None]) -> None:
    smp = await make_server()
    creds, sub = await subscription(store, smp)
    seams, stats, notices = Seams(), Stats(), Notices()
    pool = SubscriberPool(store, notices, stats, client_factory=seams.client, delays=seams.delays)
    running(pool)
    await until_status(store, [sub], SubStatusKind.ACTIVE)
    smp.stall()  # the next connection is not answered: the INACTIVE written at the loss stays visible
    smp.drop_connections()
    await until_status(store, [sub], SubStatusKind.INACTIVE)
    assert stats["smp_disconnected"] == 1 and seams.backoffs >= 1
    smp.stall(False)
    await until_status(store, [sub], SubStatusKind.ACTIVE)
    assert len(seams.connections) >= 2 and pool.link_state(smp.address) is LinkState.UP
    smp.notify(creds.notifier_id, b"m1", 1_700_000_000)
    await until(lambda: len(notices.got) == 1)
    assert notices.got[0].notifier_id == creds.notifier_id


async def test_answers_become_statuses_and_a_link_nothing_needs_ends(
        store: RedisStore, make_server: Make, running: Callable[[SubscriberPool], None]) -> None:
    smp = await make_server()
    (gone, deleted), (blocked, refused) = await subscription(store, smp), await subscription(store, smp)
    smp.block_queue(blocked.notifier_id)
    stats = Stats()
    pool = SubscriberPool(store, Notices(), stats)
    running(pool)
    await until_status(store, [deleted], SubStatusKind.ACTIVE)
    await until_status(store, [refused], SubStatusKind.ERR)
    got = await store.get_subscription(refused.sub_id)
    assert got is not None and got.status.err.startswith("SMP error BLOCKED")
    smp.delete_queue(gone.notifier_id)  # DELD
    await until_status(store, [deleted], SubStatusKind.DELETED)
    assert stats["smp_sub_deld"] == 1 and pool.link_state(smp.address) is LinkState.UP
    # SDEL of the last live one: SMP cannot unsubscribe, the link ends once nothing needs the server
    removed = await store.delete_subscription(deleted.sub_id)
    assert removed is not None
    await store.delete_subscription(refused.sub_id)
    pool.forget([RemovedSub(s.sub_id, smp.address, s.notifier_id) for s in (deleted, refused)])
    await until(lambda: pool.link_state(smp.address) is None and smp.connections == 0)
    assert stats["smp_links_ended"] == 1 and stats["smp_disconnected"] == 0
    # a new subscription starts a new link
    _, again = await subscription(store, smp)
    pool.subscribe(again)
    await until_status(store, [again], SubStatusKind.ACTIVE)


async def test_an_unreachable_server_is_down_and_retried_with_the_injected_backoff(
        store: RedisStore, make_server: Make, running: Callable[[SubscriberPool], None]) -> None:
    smp = await make_server()
    _, sub = await subscription(store, smp)
    address = smp.address
    await smp.close()  # nothing listens there now
    seams, stats = Seams(), Stats()
    pool = SubscriberPool(store, Notices(), stats, client_factory=seams.client, delays=seams.delays)
    running(pool)
    await until(lambda: stats["smp_connect_failed"] >= 3)
    assert pool.link_state(address) in (LinkState.DOWN, LinkState.CONNECTING)
    assert seams.backoffs >= 3 and all(c == address for c in seams.connections)
    assert await status(store, sub) is SubStatusKind.NEW  # never sent: nothing written
