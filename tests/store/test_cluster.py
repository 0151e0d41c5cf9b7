"""The store in cluster mode against a real Valkey cluster of its own (3 primaries, each with a replica):
where the keys land, and a primary's failover during traffic (README "Cluster mode").

A manual failover (CLUSTER FAILOVER on the replica) waits until the replica has every write: nothing
acknowledged may be lost. A kill -9 of the primary is a crash: the replica is promoted after
`cluster-node-timeout`, and what the primary acknowledged but had not yet sent to its replica is lost
(replication is asynchronous: the documented window is the last moments before the crash); everything
acknowledged a second before the kill must be there. In both cases the same store object carries on: no
restart, no new connection made by the caller.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.store_helpers import notifier_key, server, token
from helpers.valkey_cluster import ValkeyCluster

from ntf_server.store.errors import StoreError
from ntf_server.store.records import TokenRecord
from ntf_server.store.redis import RedisStore

pytestmark = pytest.mark.slow
RECOVER_WITHIN_S = 30.0
CRASH_WINDOW_S = 1.0  # writes acknowledged this long before a kill -9 must survive it


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    with ValkeyCluster(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
async def cstore(own_cluster: ValkeyCluster) -> AsyncIterator[RedisStore]:
    s = await RedisStore.connect(own_cluster.url, secrets.token_bytes(32), prefix="c:", buckets=16, cluster=True,
                                 retries=3, connect_timeout_s=1.0, command_timeout_s=2.0)
    watch = asyncio.create_task(s.watch_health())
    yield s
    watch.cancel()
    await s.close()


async def test_every_key_of_a_data_set_is_in_one_slot(cstore: RedisStore, own_cluster: ValkeyCluster) -> None:
    assert cstore.prefix == "{c:}"
    t = token()
    await cstore.create_token(t)
    await cstore.activate_token(t.token_id)
    await cstore.create_subscription(t.token_id, server(1), b"n" * 24, notifier_key())
    primary, _ = own_cluster.owner_of(cstore.prefix + "meta")
    with primary.client() as c:
        keys = [k.decode() for k in c.scan_iter(count=1000)]
        slots = {int(c.execute_command("CLUSTER", "KEYSLOT", k)) for k in keys}
    assert len(keys) > 5 and all(k.startswith("{c:}") for k in keys)
    assert len(slots) == 1


async def test_a_data_set_written_without_cluster_mode_is_refused(own_cluster: ValkeyCluster) -> None:
    node, _ = own_cluster.owner_of("old:meta")
    with node.client() as c:
        c.hset("old:meta", "buckets", 16)  # as a single-Redis data set copied into the cluster would have it
    with pytest.raises(StoreError, match="written without cluster mode"):
        await RedisStore.connect(own_cluster.url, secrets.token_bytes(32), prefix="old:", cluster=True)


async def _traffic(store: RedisStore, acked: list[tuple[float, TokenRecord]], errors: list[float],
                   stop: asyncio.Event) -> None:
    """Tokens created and subscribed one after another; each acknowledged one is noted with its time."""
    while not stop.is_set():
        t = token()
        try:
            await store.create_token(t)
            await store.create_subscription(t.token_id, server(1), t.token_id, notifier_key())
        except StoreError:
            errors.append(time.monotonic())
            await asyncio.sleep(0.05)
            continue
        acked.append((time.monotonic(), t))
        await asyncio.sleep(0)


async def _run_through(store: RedisStore, event: asyncio.Future[float]) -> tuple[list[tuple[float, TokenRecord]],
                                                                                  list[float], float]:
    """Traffic until the failure `event` happened and writes were acknowledged again for a while after."""
    acked: list[tuple[float, TokenRecord]] = []
    errors: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_traffic(store, acked, errors, stop))
    at = await event
    deadline = time.monotonic() + RECOVER_WITHIN_S
    while not [a for a, _ in acked if a > at + 0.5] or not store.healthy:
        assert time.monotonic() < deadline, "the store did not recover from the failover without a restart"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    stop.set()
    await task
    return acked, errors, at


async def _missing(store: RedisStore, tokens: list[TokenRecord]) -> list[TokenRecord]:
    out = []
    for t in tokens:
        if await store.get_token(t.token_id) != t or len(await store.token_subscriptions(t.token_id)) != 1:
            out.append(t)
    return out


async def test_manual_failover_during_traffic_loses_nothing(cstore: RedisStore, own_cluster: ValkeyCluster) -> None:
    primary, replica = own_cluster.owner_of(cstore.prefix + "meta")
    loop = asyncio.get_running_loop()

    async def failover() -> float:
        await asyncio.sleep(0.5)
        at = time.monotonic()
        await asyncio.to_thread(own_cluster.failover, replica)
        return at

    acked, _, _ = await _run_through(cstore, loop.create_task(failover()))
    assert len(acked) > 10
    assert await _missing(cstore, [t for _, t in acked]) == []
    with replica.client() as c:
        assert c.execute_command("ROLE")[0] == b"master"
    with primary.client() as c:  # the old primary follows its former replica
        assert c.execute_command("ROLE")[0] == b"slave"


async def test_primary_killed_during_traffic_recovers_and_keeps_what_was_replicated(
    cstore: RedisStore, own_cluster: ValkeyCluster, caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = own_cluster.owner_of(cstore.prefix + "meta")
    loop = asyncio.get_running_loop()

    async def crash() -> float:
        await asyncio.sleep(1.5)
        at = time.monotonic()
        own_cluster.kill(primary)
        return at

    acked, errors, killed_at = await _run_through(cstore, loop.create_task(crash()))
    assert errors, "the kill was not noticed: the test did not test a failover"
    # the health switch probes the data set's own slot: it stays down until that slot has its new primary,
    # instead of going up and down with every call (a PING reaches any node)
    downs = [r for r in caplog.records if r.name == "ntf_server.store.health" and "unreachable" in r.getMessage()]
    assert 1 <= len(downs) <= 2
    with replica.client() as c:
        assert c.execute_command("ROLE")[0] == b"master"
    before = [t for a, t in acked if a < killed_at - CRASH_WINDOW_S]
    after = [t for a, t in acked if a > killed_at]
    assert len(before) > 10 and after
    assert await _missing(cstore, before) == []
    assert await _missing(cstore, after) == []
