"""The lease manager (subscriber/leases.py): the pure decision, and rounds of two managers against the real
Redis with an injected clock (no sleeping: each test calls ``round`` itself)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from helpers.fault_proxy import FaultProxy
from helpers.store_helpers import notifier_key, server, token
from helpers.valkey_cluster import SHARDS

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import RemovedSub
from ntf_server.store.leases import ServerLease
from ntf_server.store.records import TOKEN_ACTIVE, SubscriptionRecord
from ntf_server.store.redis import RedisStore
from ntf_server.subscriber.lease_plan import LeaseSettings, fair_share, overdue, plan, to_give_up
from ntf_server.subscriber.leases import LeaseManager, instance_ids

S = LeaseSettings(ttl_s=15, renew_s=3, grace_s=15)


def lease(n: int, subs: int, owner: str | None = None) -> ServerLease:
    return ServerLease(server(n), n, subs, owner, None if owner is None else n, None if owner is None else 10.0)


# ---------------------------------------------------------------- pure


def test_alone_an_instance_takes_every_free_server_largest_first() -> None:
    listing = [lease(1, 1), lease(2, 4), lease(3, 2)]
    assert [x.number for x in plan(listing, "a", 1, {}, 0.0, 15)] == [2, 3, 1]


def test_with_two_alive_an_instance_takes_up_to_its_fair_share() -> None:
    listing = [lease(1, 4), lease(2, 3), lease(3, 2), lease(4, 1)]
    assert fair_share(listing, 2) == 5
    assert [x.number for x in plan(listing, "a", 2, {}, 0.0, 15)] == [1, 2]  # 4 < 5: takes 3 more
    held = [replace(x, owner="a") if x.number in (1, 2) else x for x in listing]
    assert plan(held, "a", 2, {}, 0.0, 15) == []  # 7 >= 5: leaves the rest to the other
    other = [replace(x, owner="b") if x.number in (1, 2) else x for x in listing]
    assert [x.number for x in plan(other, "a", 2, {}, 0.0, 15)] == [3, 4]


def test_a_server_free_longer_than_the_grace_is_taken_over_the_share() -> None:
    listing = [lease(1, 10, "a"), lease(2, 1)]
    assert plan(listing, "a", 2, {server(2): 100.0}, 114.9, 15) == []
    assert [x.number for x in plan(listing, "a", 2, {server(2): 100.0}, 115.0, 15)] == [2]


def test_servers_owned_by_others_are_never_planned() -> None:
    assert plan([lease(1, 5, "b"), lease(2, 5, "c")], "a", 3, {server(1): 0.0}, 1000.0, 15) == []


def test_an_instance_over_its_share_hands_one_server_to_a_poorer_one() -> None:
    held = [lease(1, 4, "a"), lease(2, 3, "a"), lease(3, 2, "a"), lease(4, 1, "a")]
    assert fair_share(held, 2) == 5
    # gap 10 to b's 0: the largest server that leaves a at >= 5 is #1 (4 subscriptions)
    x = to_give_up(held, "a", ["a", "b"])
    assert x is not None and x.number == 1
    after = [lease(1, 4, "b"), lease(2, 3, "a"), lease(3, 2, "a"), lease(4, 1, "a")]
    y = to_give_up(after, "a", ["a", "b"])  # a at 6, b at 4: only #4 (1) narrows the gap and leaves a at 5
    assert y is not None and y.number == 4
    balanced = [lease(1, 4, "b"), lease(2, 3, "a"), lease(3, 2, "a"), lease(4, 1, "b")]
    assert to_give_up(balanced, "a", ["a", "b"]) is None and to_give_up(balanced, "b", ["a", "b"]) is None


def test_no_handover_while_a_server_is_free_or_alone_or_balanced() -> None:
    assert to_give_up([lease(1, 4, "a"), lease(2, 3)], "a", ["a", "b"]) is None  # b takes the free one
    assert to_give_up([lease(1, 4, "a"), lease(2, 3, "a")], "a", ["a"]) is None
    assert to_give_up([lease(1, 4, "a"), lease(2, 3, "b")], "a", ["a", "b"]) is None  # 4 and 3: share 4
    assert to_give_up([lease(1, 9, "a"), lease(2, 1, "b")], "a", ["a", "b"]) is None  # one big server: stays


def test_a_lease_is_given_up_before_redis_can_free_it() -> None:
    assert not overdue(111.9, 100.0, S)
    assert overdue(112.0, 100.0, S)  # ttl 15 - renew 3: one round before it could expire


def test_settings_refuse_renewal_slower_than_half_the_lease() -> None:
    with pytest.raises(ValueError):
        LeaseSettings(ttl_s=10, renew_s=5)


# ---------------------------------------------------------------- rounds against Redis


@dataclass
class Pool:
    """Records what the manager asks of the subscriber pool."""

    served: list[SMPServer] = field(default_factory=list)
    dropped: list[SMPServer] = field(default_factory=list)
    subscribed: list[SubscriptionRecord] = field(default_factory=list)

    def serve(self, s: SMPServer) -> None:
        self.served.append(s)

    def drop(self, s: SMPServer) -> None:
        self.dropped.append(s)

    async def hand_over(self, s: SMPServer) -> None:
        self.dropped.append(s)

    def subscribe(self, sub: SubscriptionRecord) -> None:
        self.subscribed.append(sub)

    def forget(self, subs: Sequence[RemovedSub]) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(store: RedisStore, name: str, clock: Clock) -> tuple[LeaseManager, Pool]:
    m = LeaseManager(store.leases, store.get_subscription, S, instance=name, clock=clock)
    pool = Pool()
    m.attach(pool)
    return m, pool


async def subscriptions(store: RedisStore, counts: dict[int, int]) -> list[SubscriptionRecord]:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    subs = []
    for n, count in counts.items():
        for _ in range(count):
            _, sub = await store.create_subscription(t.token_id, server(n), secrets.token_bytes(24),
                                                     notifier_key())
            assert sub is not None
            subs.append(sub)
    return subs


async def test_two_instances_split_the_servers_by_subscriptions(store: RedisStore, second_store: RedisStore) -> None:
    await subscriptions(store, {1: 4, 2: 3, 3: 2, 4: 1})
    clock = Clock()
    a, pa = manager(store, "a", clock)
    b, pb = manager(second_store, "b", clock)
    await second_store.leases.presence("b", S.ttl_s)  # b is alive before a's first round
    await a.round()
    await b.round()
    assert (a.alive, b.alive) == (2, 2)
    assert (sorted(x.hosts[0] for x in pa.served), sorted(x.hosts[0] for x in pb.served)) == (
        ["smp1.example.net", "smp2.example.net"], ["smp3.example.net", "smp4.example.net"])
    await a.round()
    await b.round()  # later rounds change nothing
    assert len(pa.served) + len(pb.served) == 4 and not pa.dropped and not pb.dropped
    owners = {x.number: x.owner for x in await store.leases.listing()}
    assert sorted(owners.values()) == ["a", "a", "b", "b"]


async def test_a_lost_lease_stops_its_link_and_the_taker_serves_it(store: RedisStore, second_store: RedisStore) -> None:
    await subscriptions(store, {1: 1})
    clock = Clock()
    a, pa = manager(store, "a", clock)
    b, pb = manager(second_store, "b", clock)
    await a.round()
    assert a.holds(server(1)) and pa.served == [server(1)]
    await store.leases.release(a.held(), "a")  # as if it expired while a was paused
    await b.round()
    assert b.holds(server(1)) and pb.served == [server(1)]
    await a.round()
    assert pa.dropped == [server(1)] and not a.holds(server(1))
    assert [x.owner for x in await store.leases.listing()] == ["b"]


async def test_a_round_that_comes_too_late_stops_the_link_before_renewing(store: RedisStore,
                                                                           second_store: RedisStore) -> None:
    """A starved process: its next round comes after Redis may have freed the lease. Its link stops first
    (another instance may already subscribe those queues); the lease, still free, is then taken back."""
    await subscriptions(store, {1: 1})
    clock = Clock()
    a, pa = manager(store, "a", clock)
    await a.round()
    assert a.holds(server(1)) and pa.served == [server(1)]
    clock.now += S.ttl_s - S.renew_s  # late: the lease could expire before this round's renewal
    await a.round()
    assert pa.dropped == [server(1)]  # stopped (closed first), not renewed blindly
    assert a.holds(server(1)) and pa.served == [server(1), server(1)]  # free, so taken back at once


async def test_a_lease_not_renewed_in_time_is_dropped_while_redis_is_away(store: RedisStore, redis_url: str,
                                                                          store_key: bytes, tmp_path: Path) -> None:
    await subscriptions(store, {1: 1})
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "p.sock")
    await proxy.start()
    cut = await RedisStore.connect(proxy.url, store_key, prefix=store.prefix, retries=0, shards=SHARDS)
    try:
        clock = Clock()
        a, pa = manager(cut, "a", clock)
        await a.round()
        assert a.holds(server(1))
        await proxy.stop()
        clock.now += S.renew_s
        await a.round()  # one failed renewal: still held (Redis keeps it for ttl_s)
        assert a.holds(server(1)) and not pa.dropped
        clock.now += S.ttl_s - 2 * S.renew_s
        await a.round()
        assert pa.dropped == [server(1)] and not a.holds(server(1))
    finally:
        await cut.close()
        await proxy.stop()


async def test_release_all_frees_every_lease_at_once(store: RedisStore, second_store: RedisStore) -> None:
    await subscriptions(store, {1: 1, 2: 1})
    clock = Clock()
    a, _ = manager(store, "a", clock)
    b, pb = manager(second_store, "b", clock)
    await a.round()
    await b.round()
    assert pb.served == []
    await a.release_all()
    await b.round()
    assert sorted(x.hosts[0] for x in pb.served) == ["smp1.example.net", "smp2.example.net"]
    assert b.alive == 1  # a said it left


async def test_snew_on_a_non_owner_is_handed_to_the_owner(store: RedisStore, second_store: RedisStore) -> None:
    [sub] = await subscriptions(store, {1: 1})
    clock = Clock()
    a, pa = manager(store, "a", clock)
    b, pb = manager(second_store, "b", clock)
    await a.round()
    b.subscribe(sub)  # the SNEW landed on b
    assert pb.subscribed == []
    await b.hand_off_waiting()
    await a.pick_up()
    assert pa.subscribed == [sub]
    await a.pick_up()
    assert pa.subscribed == [sub]  # once
    a.subscribe(sub)  # on the owner: straight to its pool
    assert pa.subscribed == [sub, sub]


async def test_a_handoff_waits_for_an_owner_when_there_is_none(store: RedisStore, second_store: RedisStore) -> None:
    [sub] = await subscriptions(store, {1: 1})
    clock = Clock()
    a, pa = manager(store, "a", clock)
    b, _ = manager(second_store, "b", clock)
    b.subscribe(sub)
    await b.hand_off_waiting()
    await a.round()
    await a.pick_up()
    assert pa.served == [server(1)] and pa.subscribed == [sub]


def test_instance_ids_are_new_per_start_and_remember_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "instance"
    first, none = instance_ids(path)
    second, previous = instance_ids(path)
    assert none is None and previous == first and second != first and len(second) == 16


async def test_a_successor_frees_its_dead_predecessors_leases_at_once(store: RedisStore,
                                                                      second_store: RedisStore) -> None:
    await subscriptions(store, {1: 1})
    clock = Clock()
    dead, _ = manager(store, "dead", clock)
    await dead.round()  # then kill -9: nothing released
    other, po = manager(second_store, "other", clock)
    await other.round()
    assert po.served == []  # held by the dead one until it expires
    successor = LeaseManager(store.leases, store.get_subscription, S, instance="next", predecessor="dead",
                             clock=clock)
    ps = Pool()
    successor.attach(ps)
    await successor.round()
    assert ps.served == [server(1)]


async def test_the_fence_is_the_held_lease_or_one_no_write_can_match(store: RedisStore) -> None:
    await subscriptions(store, {1: 1})
    a, _ = manager(store, "a", Clock())
    assert a.fence(server(1)) == "0 a"  # not held: token 0 is never given
    await a.round()
    [lease] = a.held()
    assert a.fence(server(1)) == f"{lease.token} a"
    [listed] = await store.leases.listing()
    assert (listed.token, listed.owner) == (lease.token, "a")


async def test_an_instance_that_joins_gets_its_share_one_server_a_round(store: RedisStore,
                                                                       second_store: RedisStore) -> None:
    await subscriptions(store, {1: 4, 2: 3, 3: 2, 4: 1})
    clock = Clock()
    a, pa = manager(store, "a", clock)
    b, pb = manager(second_store, "b", clock)
    await a.round()
    assert len(a.held()) == 4  # alone
    moves = []
    for _ in range(6):
        await b.round()  # joins: nothing free
        await a.round()  # hands over at most one server a round
        moves.append(len(pa.dropped))
    totals = Counter[str]()
    for x in await store.leases.listing():
        assert x.owner is not None
        totals[x.owner] += x.subscriptions
    assert totals == {"a": 5, "b": 5}
    assert moves[:2] == [1, 2] and moves[-1] == 2  # two moves, one a round, then stable
    assert len(pb.served) == 2 and pb.dropped == []  # nothing went back
