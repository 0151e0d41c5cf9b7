"""Records are authenticated at rest (issue 16.10): whoever can write to Redis cannot swap a token's verify
key, provider, device index, DH key or status, nor move a subscription to another token, without the read
failing; a data set written before this is upgraded at connect and reads as before."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from helpers.store_helpers import notifier_key, server, token
from helpers.valkey_cluster import CLUSTER, SHARDS, one_shard_only, raw_client

from ntf_server.store.atrest import AtRest
from ntf_server.store.base import TokenReplace
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import R_BYTES, PackedSub, pack_sub, sub_aad, unpack_sub
from ntf_server.store.records import TOKEN_ACTIVE, PushProvider, SubscriptionRecord, TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.store.upgrade import legacy_aad


async def populated(store: RedisStore) -> tuple[TokenRecord, TokenRecord, SubscriptionRecord]:
    a, b = replace(token(), status=TOKEN_ACTIVE), token(provider=PushProvider.APNS_DEV)
    for t in (a, b):
        await store.create_token(t)
    _, sub = await store.create_subscription(a.token_id, server(1), b"N" * 24, notifier_key())
    assert sub is not None
    return a, b, sub


@one_shard_only
@pytest.mark.parametrize("field", ["vk", "dhp", "vh", "st", "p", "x"])
async def test_a_token_field_changed_in_redis_fails_the_read(store: RedisStore, redis_url: str, field: str) -> None:
    a, b, _ = await populated(store)
    c = raw_client(redis_url)
    other = await c.hget(f"{store.prefix}t{{{b.token_id.hex()}}}", field)  # b's own, valid for b
    assert other is not None
    await c.hset(f"{store.prefix}t{{{a.token_id.hex()}}}", field, other)
    await c.aclose()
    with pytest.raises(StoreError, match="not authenticated"):
        await store.get_token(a.token_id)
    assert await store.get_token(b.token_id) == b  # the others are untouched


@one_shard_only
async def test_a_subscription_moved_to_another_token_fails_the_read(store: RedisStore, redis_url: str) -> None:
    _, b, sub = await populated(store)
    c = raw_client(redis_url)
    key = store._d.keys.sub_bucket(1, sub.sub_id[:R_BYTES])
    value = await c.hget(key, sub.sub_id[:R_BYTES])
    await c.hset(key, sub.sub_id[:R_BYTES], b.token_id + value[len(b.token_id):])
    await c.aclose()
    for read in (lambda: store.get_subscription(sub.sub_id), lambda: store.subscription_and_token(sub.sub_id)):
        with pytest.raises(StoreError):
            await read()


async def test_status_changes_keep_the_record_readable(store: RedisStore) -> None:
    a, b, _ = await populated(store)
    await store.confirm_token(b.token_id)
    assert await store.activate_token(b.token_id) == (True, [])
    assert await store.replace_token(a.token_id, a.provider, token().device_token, b"r" * 32) is TokenReplace.REPLACED
    for t in (a, b):
        assert await store.get_token(t.token_id) is not None


async def legacy(store: RedisStore, url: str, a: AtRest) -> None:
    """Rewrite the data set as the code before issue 16.10 left it."""
    c = raw_client(url)
    p = store.prefix
    async for key in c.scan_iter(match=p + "t{*}"):
        if key.endswith(b"}"):
            await c.hdel(key, "km", "pm", "sm")
    await c.hdel(p + "dummy:t", "km", "pm", "sm")
    async for key in c.scan_iter(match=p + "s:*"):
        for r, value in (await c.hgetall(key)).items():
            await c.hset(key, r, reseal_legacy(a, r, value))
    await c.hset(p + "dummy", "sub", reseal_legacy(a, bytes(R_BYTES), await c.hget(p + "dummy", "sub")))
    await c.hdel(p + "meta", "auth")
    await c.aclose()


def reseal_legacy(a: AtRest, r: bytes, value: bytes) -> bytes:
    pk = unpack_sub(value)
    plain = a.open(pk.sealed, sub_aad(r, pk.token_id))
    return pack_sub(PackedSub(pk.token_id, pk.service_assoc, pk.status, a.seal(plain, legacy_aad(r))))


@one_shard_only
async def test_a_data_set_from_before_is_upgraded_at_connect(
    store: RedisStore, redis_url: str, store_key: bytes
) -> None:
    a, b, sub = await populated(store)
    await legacy(store, redis_url, AtRest(store_key))
    with pytest.raises(StoreError):
        await store.get_token(a.token_id)  # what this version makes of it unless upgraded
    again = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, cluster=CLUSTER, shards=SHARDS)
    try:
        reads: list[Callable[[], Awaitable[object]]] = [
            lambda: again.get_token(a.token_id), lambda: again.get_token(b.token_id),
            lambda: again.get_subscription(sub.sub_id)]
        assert [await r() for r in reads] == [a, b, sub]
        assert await again.subscription_and_token(bytes(24)) == (None, None)  # the stand-ins read too
        assert await again.get_token(bytes(24)) is None
        c = raw_client(redis_url)
        await c.hset(f"{store.prefix}t{{{a.token_id.hex()}}}", "st", b"INVALID")
        await c.aclose()
        with pytest.raises(StoreError, match="not authenticated"):
            await again.get_token(a.token_id)  # and from now on checked
    finally:
        await again.close()
