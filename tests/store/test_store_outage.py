"""Every store module that keeps its own keys (policy, budgets, active tokens, census, shared census,
subscription aliases, verification cap) is built on the data set, so a Redis outage reaches it through the
one health switch (store/health.py): its call turns the switch down, and while the switch is down every
call of every module fails at once with ``StoreUnavailable``, without a round trip."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from helpers.fault_proxy import FaultProxy

from ntf_server.policy_types import Budget, PolicySettings
from ntf_server.store.activity import ActivityStore
from ntf_server.store.census import Census
from ntf_server.store.census_shared import SharedCensus
from ntf_server.store.errors import StoreUnavailable
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import PushProvider
from ntf_server.store.redis import RedisStore
from ntf_server.store.sub_aliases import SubIdAliases
from ntf_server.store.vrfcap import VerificationCap

TID = b"\x02" * 24
NOW = 1_800_000_000.0
Op = Callable[[RedisStore], Awaitable[object]]


async def no_sleep(_: float) -> None:
    return None


def no_wait() -> Iterator[float]:
    return itertools.repeat(0.01)


def _activity_flush(s: RedisStore) -> Awaitable[None]:
    activity = ActivityStore(s.dataset, secrets.token_bytes(32))
    activity.record(TID)
    return activity.flush()


def _aliases_resolve(s: RedisStore) -> Awaitable[bytes]:
    return SubIdAliases(s.dataset).resolve(TID)  # lookups are on until load() finds no alias key


EMPTY_CENSUS = Census(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}), NOW, 0.0)
OPS: dict[str, Op] = {
    "policy.get": lambda s: PolicyStore(s.dataset).get(),
    "policy.current": lambda s: PolicyStore(s.dataset).current(),
    "policy.put": lambda s: PolicyStore(s.dataset).put(PolicySettings(Budget(0, 1))),
    "policy.clear": lambda s: PolicyStore(s.dataset).clear(),
    "budget.due": lambda s: s.budgets().due(NOW),
    "budget.next_due": lambda s: s.budgets().next_due(),
    "budget.done": lambda s: s.budgets().done(TID),
    "budget.cron": lambda s: s.budgets().cron(TID, Budget(3, 3), NOW, 1200.0),
    "budget.cron_done": lambda s: s.budgets().cron_done(TID, "me"),
    "activity.flush": _activity_flush,
    "activity.counts": lambda s: ActivityStore(s.dataset, secrets.token_bytes(32)).counts(),
    "census.take": lambda s: s.census_taker(sleep=no_sleep).take(),
    "shared_census.latest": lambda s: SharedCensus(s.dataset).latest(),
    "shared_census.publish": lambda s: SharedCensus(s.dataset).publish(EMPTY_CENSUS, 1, "me"),
    "aliases.load": lambda s: SubIdAliases(s.dataset).load(),
    "aliases.resolve": _aliases_resolve,
    "vrf_cap.allow": lambda s: VerificationCap(s.dataset, lambda p, d: p + d, 3, 3600.0).allow(
        PushProvider.APNS_PROD, b"ab" * 32),
}


@pytest.fixture
async def watched(tmp_path: Path, redis_url: str, store_key: bytes) -> AsyncIterator[tuple[RedisStore, FaultProxy]]:
    """A store behind a proxy that can take Redis away, with the server's health watcher running."""
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "p.sock")
    await proxy.start()
    store = await RedisStore.connect(proxy.url, store_key, prefix=f"outage:{secrets.token_hex(6)}:", retries=0)
    watcher = asyncio.create_task(store.watch_health(no_wait))
    try:
        yield store, proxy
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await store.close()
        await proxy.stop()


@pytest.mark.parametrize("name", OPS)
async def test_each_call_turns_the_switch_down_when_redis_goes(
        watched: tuple[RedisStore, FaultProxy], name: str) -> None:
    store, proxy = watched
    await OPS[name](store)  # works while Redis is there
    await proxy.stop()
    with pytest.raises(StoreUnavailable, match="redis unreachable: "):
        await OPS[name](store)
    assert not store.healthy


async def test_every_call_fails_fast_while_the_switch_is_down(watched: tuple[RedisStore, FaultProxy]) -> None:
    store, proxy = watched
    await proxy.stop()
    with pytest.raises(StoreUnavailable):
        await store.get_token(TID)  # an entity store's call turns it down...
    assert not store.healthy
    for op in OPS.values():  # ...and every other module is refused at once, without a round trip
        with pytest.raises(StoreUnavailable, match="reconnecting in the background"):
            await op(store)
