"""Never-verified tokens expire (issue 8 item 6): through Housekeeping with a real store and an injected
clock; verified tokens, and tokens created later, stay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from helpers.store_helpers import NOW, check_invariants, notifier_key, server, token

from ntf_server.maintenance import Housekeeping
from ntf_server.observability.stats import Stats
from ntf_server.store.base import RemovedSub, TokenReplace
from ntf_server.store.records import SubscriptionRecord, TokenStatus, TokenStatusKind
from ntf_server.store.redis import RedisStore

HOUR = 3600.0


class Forgotten:
    def __init__(self) -> None:
        self.subs: list[RemovedSub] = []

    def subscribe(self, sub: SubscriptionRecord) -> None:
        pass

    def forget(self, subs: Sequence[RemovedSub]) -> None:
        self.subs += subs

    def token_activated(self, token_id: bytes) -> None:
        pass


def housekeeping(store: RedisStore, sink: Forgotten, stats: Stats, after_h: float = 6.0) -> Housekeeping:
    return Housekeeping(store, sink, stats, expire_after_days=0, expire_unverified_after_h=after_h,
                        clock=lambda: NOW)


async def test_unverified_tokens_expire_verified_ones_stay(store: RedisStore, redis_url: str) -> None:
    stats, sink = Stats(), Forgotten()
    hk = housekeeping(store, sink, stats)
    registered, confirmed, invalid, verified, later = (token() for _ in range(5))
    for t in (registered, confirmed, invalid, verified):
        await store.create_token(t, NOW)
    await store.create_token(later, NOW + 2 * HOUR)
    await store.confirm_token(confirmed.token_id)
    await store.set_token_status(invalid.token_id, TokenStatus(TokenStatusKind.INVALID))
    assert (await store.activate_token(verified.token_id))[0]
    _, sub = await store.create_subscription(verified.token_id, server(1), b"n" * 24, notifier_key())
    assert sub is not None

    assert await hk.expire_once(NOW + 6 * HOUR - 1) == 0  # not old enough yet
    assert await hk.expire_once(NOW + 6 * HOUR) == 3
    for t in (registered, confirmed, invalid):
        assert await store.get_token(t.token_id) is None
    assert await store.get_token(verified.token_id) is not None
    assert await store.get_token(later.token_id) is not None
    assert stats["tkn_expired_unverified"] == 3
    await check_invariants(store, redis_url)

    assert await hk.expire_once(NOW + 8 * HOUR) == 1  # `later`, 6 h after its own TNEW
    assert await hk.expire_once(NOW + 400 * 24 * HOUR) == 0  # verified tokens never expire this way
    assert await store.get_token(verified.token_id) is not None
    assert sink.subs == []


async def test_replaced_token_of_a_verified_registration_is_kept(store: RedisStore, redis_url: str) -> None:
    """TRPL resets the status to REGISTERED, but the registration was verified once: not "never verified"."""
    hk = housekeeping(store, Forgotten(), Stats())
    t = token()
    await store.create_token(t, NOW)
    assert (await store.activate_token(t.token_id))[0]
    assert await store.replace_token(t.token_id, t.provider, token().device_token, b"c" * 32) is TokenReplace.REPLACED
    assert await hk.expire_once(NOW + 100 * HOUR) == 0
    assert await store.get_token(t.token_id) is not None
    await check_invariants(store, redis_url)


async def test_expiry_works_in_batches_and_cascades(store: RedisStore, redis_url: str) -> None:
    tokens = [token() for _ in range(250)]
    for t in tokens:
        await store.create_token(t, NOW)
    removed, _ = await store.expire_unverified(NOW + 10, 10, batch=100)
    assert sorted(removed) == sorted(t.token_id for t in tokens)
    assert (await store.counts()).tokens == 0
    await check_invariants(store, redis_url)


async def test_deleted_tokens_leave_the_index(store: RedisStore, redis_url: str) -> None:
    t = token()
    await store.create_token(t, NOW)
    assert (await store.delete_token(t.token_id))[0]
    await check_invariants(store, redis_url)  # no `unv` entry points at the deleted token


async def test_zero_disables_expiry(store: RedisStore) -> None:
    hk = housekeeping(store, Forgotten(), Stats(), after_h=0)
    t = token()
    await store.create_token(t, NOW)
    assert not hk.enabled
    assert await hk.expire_once(NOW + 1000 * HOUR) == 0
    assert await store.get_token(t.token_id) is not None


class SwallowsCancel:
    """The real store, but its expiry call loses a cancellation the way Python 3.11's ``asyncio.wait_for``
    (inside redis-py) sometimes does: the cancel is caught and the call returns normally."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.entered = asyncio.Event()

    async def expire_unverified(self, now: float, after_s: float) -> tuple[list[bytes], list[RemovedSub]]:
        self.entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        return await self._store.expire_unverified(now, after_s)


async def test_a_cancel_lost_inside_the_store_still_stops_housekeeping(store: RedisStore) -> None:
    wrapped = SwallowsCancel(store)
    hk = Housekeeping(wrapped, Forgotten(), Stats(), expire_after_days=0,  # type: ignore[arg-type]
                      expire_unverified_after_h=6.0, clock=lambda: NOW)
    task = asyncio.create_task(hk.run())
    await wrapped.entered.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done == {task} and task.cancelled()  # before the fix: asleep for the hour, stop() hung
