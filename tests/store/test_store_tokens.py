"""Token operations against a real Redis: create, repeat TNEW lookup, TRPL, status rules (spec §4.5),
TVFY deleting other registrations, TDEL cascade, cron (spec §5.10, without the NULL bug), expiry."""

from __future__ import annotations

from dataclasses import replace

from helpers.store_helpers import (
    NOW,
    add_notice,
    check_invariants,
    device_token,
    find_subscription,
    find_tokens,
    notifier_key,
    server,
    token,
)
from helpers.valkey_cluster import CLUSTER, SHARDS, raw_client

from ntf_server.store.base import TokenCreate, TokenReplace
from ntf_server.store.records import (
    DAY_S,
    TOKEN_ACTIVE,
    TOKEN_CONFIRMED,
    TOKEN_REGISTERED,
    InvalidReason,
    PushProvider,
    TokenStatus,
    TokenStatusKind,
    day_of,
)
from ntf_server.store.redis import RedisStore


async def test_create_get_round_trip(store: RedisStore) -> None:
    t = replace(token(), cron_sent_at=123)
    assert await store.create_token(t) is TokenCreate.CREATED
    assert await store.get_token(t.token_id) == t
    assert await store.get_token(b"\x00" * 24) is None
    assert (await store.counts()).tokens == 1


async def test_same_device_and_verify_key_is_a_duplicate(store: RedisStore) -> None:
    t = token()
    await store.create_token(t)
    again = replace(token(t.device_token, vk=t.verify_key))
    assert await store.create_token(again) is TokenCreate.DUPLICATE
    other_key = token(t.device_token)  # same device, new verify key: allowed until one is verified
    assert await store.create_token(other_key) is TokenCreate.CREATED
    assert await store.create_token(t) is TokenCreate.CREATED  # a retried create is idempotent
    assert {x.token_id for x in await find_tokens(store, t.provider, t.device_token)} == {
        t.token_id,
        other_key.token_id,
    }


async def test_find_token_for_repeat_tnew(store: RedisStore) -> None:
    t = token()
    await store.create_token(t)
    assert await store.find_token(t.provider, t.device_token, t.verify_key) == t
    assert await store.find_token(t.provider, t.device_token, b"other") is None
    assert await store.find_token(PushProvider.APNS_DEV, t.device_token, t.verify_key) is None
    assert await find_tokens(store, t.provider, device_token()) == []


async def test_replace_token_moves_the_device_index(store: RedisStore, redis_url: str) -> None:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    new_dt, new_code = device_token(), b"c" * 32
    assert await store.replace_token(t.token_id, PushProvider.APNS_DEV, new_dt, new_code) is TokenReplace.REPLACED
    got = await store.get_token(t.token_id)
    assert got is not None
    assert (got.provider, got.device_token, got.reg_code, got.status) == (
        PushProvider.APNS_DEV,
        new_dt,
        new_code,
        TOKEN_REGISTERED,
    )
    assert got.dh_secret == t.dh_secret and got.dh_private == t.dh_private
    assert await find_tokens(store, t.provider, t.device_token) == []
    assert await find_tokens(store, PushProvider.APNS_DEV, new_dt) == [got]
    assert await store.replace_token(b"\x01" * 24, PushProvider.APNS_DEV, new_dt, new_code) is TokenReplace.NO_TOKEN
    await check_invariants(store, redis_url)


async def test_replace_token_onto_an_existing_registration_is_refused(store: RedisStore) -> None:
    a = token()
    b = token(vk=a.verify_key)
    await store.create_token(a)
    await store.create_token(b)
    assert await store.replace_token(b.token_id, a.provider, a.device_token, b"c" * 32) is TokenReplace.DUPLICATE
    assert await store.get_token(b.token_id) == b


async def test_status_compare_and_set(store: RedisStore) -> None:
    t = token()
    await store.create_token(t)
    invalid = TokenStatus(TokenStatusKind.INVALID, InvalidReason.UNREGISTERED)
    assert await store.set_token_status(t.token_id, invalid) == invalid
    assert await store.set_token_status(t.token_id, TOKEN_ACTIVE, only_from={TokenStatusKind.NEW}) == invalid
    assert (
        await store.set_token_status(t.token_id, TOKEN_REGISTERED, only_from={TokenStatusKind.INVALID})
        == TOKEN_REGISTERED
    )
    assert await store.set_token_status(b"\x00" * 24, TOKEN_ACTIVE) is None


async def test_confirm_never_downgrades(store: RedisStore) -> None:
    t = token()
    await store.create_token(t)
    assert await store.confirm_token(t.token_id) == TOKEN_CONFIRMED
    await store.set_token_status(t.token_id, TOKEN_ACTIVE)
    assert await store.confirm_token(t.token_id) == TOKEN_ACTIVE
    await store.set_token_status(t.token_id, TokenStatus(TokenStatusKind.INVALID, InvalidReason.BAD))
    assert await store.confirm_token(t.token_id) == TOKEN_CONFIRMED
    assert await store.confirm_token(b"\x00" * 24) is None


async def test_activate_deletes_other_registrations_with_their_subscriptions(store: RedisStore, redis_url: str) -> None:
    dt = device_token()
    winner, loser1, loser2 = token(dt), token(dt), token(dt, provider=PushProvider.APNS_DEV)
    for t in (winner, loser1, loser2):
        await store.create_token(t)
        await store.set_token_status(t.token_id, TOKEN_ACTIVE)
    nid = b"L" * 24
    _, sub = await store.create_subscription(loser1.token_id, server(1), nid, notifier_key())
    assert sub is not None
    ok, removed = await store.activate_token(winner.token_id)
    assert ok
    assert [(r.server, r.notifier_id, r.sub_id) for r in removed] == [(server(1), nid, sub.sub_id)]
    assert await store.get_token(loser1.token_id) is None
    assert await store.get_token(loser2.token_id) is not None  # other provider: not the same registration
    assert await find_subscription(store, server(1), nid) is None
    assert (await store.get_token(winner.token_id)).status == TOKEN_ACTIVE  # type: ignore[union-attr]
    assert await store.activate_token(winner.token_id) == (True, [])  # repeated TVFY is idempotent
    await check_invariants(store, redis_url)


async def test_activate_refused_from_invalid(store: RedisStore) -> None:
    t = token()
    await store.create_token(t)
    await store.set_token_status(t.token_id, TokenStatus(TokenStatusKind.INVALID))
    assert await store.activate_token(t.token_id) == (False, [])
    assert (await store.get_token(t.token_id)).status.kind is TokenStatusKind.INVALID  # type: ignore[union-attr]
    assert await store.activate_token(b"\x00" * 24) == (False, [])


async def test_delete_token_cascades(store: RedisStore, redis_url: str) -> None:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    await store.set_cron_interval(t.token_id, 20, NOW)
    nids = [bytes([i]) * 24 for i in range(5)]
    for i, nid in enumerate(nids):
        await store.create_subscription(t.token_id, server(i % 2 + 1), nid, notifier_key())
    await add_notice(store, server(1), nids[0], 1, b"n" * 24, b"m" * 144)
    found, removed = await store.delete_token(t.token_id)
    assert found
    assert sorted(r.notifier_id for r in removed) == nids
    assert await store.counts() == type(await store.counts())(0, 0, 0, 0)
    assert await store.delete_token(t.token_id) == (False, [])
    assert await store.tokens_due_for_cron(NOW + 10 * DAY_S) == []
    await check_invariants(store, redis_url)


async def test_cron_first_push_due_after_one_interval(store: RedisStore) -> None:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    assert await store.set_cron_interval(t.token_id, 20, NOW)
    assert await store.tokens_due_for_cron(NOW + 20 * 60 - 1) == []
    [due] = await store.tokens_due_for_cron(NOW + 20 * 60)
    assert due.token_id == t.token_id and due.cron_interval_min == 20
    assert await store.mark_cron_sent(t.token_id, NOW + 20 * 60)
    assert await store.tokens_due_for_cron(NOW + 39 * 60) == []
    assert [x.token_id for x in await store.tokens_due_for_cron(NOW + 40 * 60)] == [t.token_id]
    assert (await store.get_token(t.token_id)).cron_sent_at == int(NOW + 20 * 60)  # type: ignore[union-attr]
    assert await store.set_cron_interval(t.token_id, 0, NOW)
    assert await store.tokens_due_for_cron(NOW + 100 * 60) == []
    assert not await store.set_cron_interval(b"\x00" * 24, 20, NOW)


async def test_cron_skips_tokens_that_are_not_active(store: RedisStore) -> None:
    tokens = [token() for _ in range(5)]
    for i, t in enumerate(tokens):
        await store.create_token(replace(t, status=TOKEN_ACTIVE if i == 4 else TOKEN_REGISTERED))
        await store.set_cron_interval(t.token_id, 20, NOW)
    due = await store.tokens_due_for_cron(NOW + 3600, limit=2)
    assert [x.token_id for x in due] == [tokens[4].token_id]


async def test_touch_and_expiry_of_abandoned_tokens(store: RedisStore, redis_url: str) -> None:
    old, fresh = token(now=NOW - 40 * DAY_S), token(now=NOW - 40 * DAY_S)
    for t in (old, fresh):
        await store.create_token(t)
        await store.create_subscription(t.token_id, server(3), t.token_id, notifier_key())
    await store.touch_token(fresh.token_id, NOW)
    assert (await store.get_token(fresh.token_id)).last_used_day == day_of(NOW)  # type: ignore[union-attr]
    expired, removed = await store.expire_tokens(NOW, unused_days=30, batch=1)
    assert expired == [old.token_id]
    assert [r.notifier_id for r in removed] == [old.token_id]
    assert await store.get_token(old.token_id) is None
    assert await store.get_token(fresh.token_id) is not None
    assert await store.expire_tokens(NOW, unused_days=30) == ([], [])
    await check_invariants(store, redis_url)


async def test_repeat_tnew_reads_one_record_not_every_registration(store: RedisStore, redis_url: str) -> None:
    """Issue 16.2: the lookup of a repeated TNEW goes through the `tv` index; the device token's other
    registrations are never read (here one of them is unreadable, which a scan would trip over)."""
    t = token()
    others = [token(t.device_token) for _ in range(3)]
    for x in (t, *others):
        await store.create_token(x)
    c = raw_client(redis_url)
    await c.hset(f"{store.prefix}t{{{others[1].token_id.hex()}}}", "dt", b"garbage")
    await c.aclose()
    assert await store.find_token(t.provider, t.device_token, t.verify_key) == t


async def test_registrations_per_device_token_are_capped(store: RedisStore, redis_url: str) -> None:
    first = token()
    assert await store.create_token(first, max_per_device=3) is TokenCreate.CREATED
    same_device = [token(first.device_token) for _ in range(3)]
    assert [await store.create_token(x, max_per_device=3) for x in same_device] == [
        TokenCreate.CREATED, TokenCreate.CREATED, TokenCreate.QUOTA]  # fmt: skip
    assert await store.create_token(first, max_per_device=3) is TokenCreate.CREATED  # a retried create
    assert await store.create_token(token(), max_per_device=3) is TokenCreate.CREATED  # another device
    ok, removed = await store.activate_token(first.token_id)  # verifying one deletes the others (≤ cap)
    assert ok and removed == []
    assert {x.token_id for x in await find_tokens(store, first.provider, first.device_token)} == {first.token_id}
    assert await store.create_token(same_device[2], max_per_device=3) is TokenCreate.CREATED
    elsewhere = token()  # TRPL onto a device token with the most registrations: refused the same way
    await store.create_token(elsewhere)
    assert await store.replace_token(elsewhere.token_id, first.provider, first.device_token, b"c" * 32,
                                     max_per_device=2) is TokenReplace.QUOTA  # it has 2: first, same_device[2]
    assert await store.replace_token(elsewhere.token_id, first.provider, first.device_token, b"c" * 32,
                                     max_per_device=3) is TokenReplace.REPLACED
    await check_invariants(store, redis_url)


async def test_a_data_set_from_before_the_repeat_index_is_indexed_at_connect(
    store: RedisStore, redis_url: str, store_key: bytes
) -> None:
    tokens = [token() for _ in range(3)]
    for t in tokens:
        await store.create_token(t)
    c = raw_client(redis_url)
    for d in store.datasets:
        await c.delete(d.keys.prefix + "tv")  # as the code before issue 16.2 left it
        await c.hdel(d.keys.prefix + "meta", "tv")
    await c.aclose()
    assert await store.find_token(tokens[0].provider, tokens[0].device_token, tokens[0].verify_key) is None
    again = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, cluster=CLUSTER, shards=SHARDS)
    try:
        for t in tokens:
            assert await again.find_token(t.provider, t.device_token, t.verify_key) == t
        assert await again.create_token(token(tokens[0].device_token, vk=tokens[0].verify_key)) is (
            TokenCreate.DUPLICATE)
    finally:
        await again.close()
