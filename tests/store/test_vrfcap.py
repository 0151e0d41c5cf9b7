"""The verification-push cap in Redis (issue 16.5): per device, sliding window, shared, no token in clear."""

from __future__ import annotations

import secrets

from helpers.valkey_cluster import raw_client

from ntf_server.store.atrest import AtRest
from ntf_server.store.records import PushProvider
from ntf_server.store.redis import RedisStore
from ntf_server.store.vrfcap import VerificationCap

AP, AD = PushProvider.APNS_PROD, PushProvider.APNS_DEV


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def cap(store: RedisStore, clock: Clock, limit: int = 2) -> VerificationCap:
    hasher = AtRest(b"k" * 32).index
    return VerificationCap(store.dataset, lambda p, d: hasher(b"vrf cap", p, d), limit, 3600.0,
                           clock=clock)


async def test_at_most_limit_per_device_in_any_window(store: RedisStore) -> None:
    clock = Clock()
    one, device = cap(store, clock), b"ab" * 32
    assert [await one.allow(AP, device) for _ in range(3)] == [True, True, False]
    assert await one.allow(AD, device) and await one.allow(AP, b"cd" * 32)  # other devices: their own
    clock.now += 1800
    assert not await one.allow(AP, device)
    clock.now += 1801  # the first two left the window
    assert await one.allow(AP, device)
    assert not await cap(store, clock, 0).allow(AP, b"ef" * 32)  # 0: verification pushes off


async def test_instances_share_it_and_no_device_token_is_stored(store: RedisStore, redis_url: str) -> None:
    clock = Clock()
    device = secrets.token_hex(32).encode()
    assert await cap(store, clock).allow(AP, device)
    assert await cap(store, clock).allow(AP, device)  # another instance, or this one after a restart
    assert not await cap(store, clock).allow(AP, device)
    c = raw_client(redis_url)
    keys = [k async for k in c.scan_iter(match=store.prefix + "vc:*")]
    assert len(keys) == 1 and device not in keys[0]
    assert 0 < await c.pttl(keys[0]) <= 3_600_000  # idle devices cost nothing after the window
    await c.aclose()
