"""A populated store's keys, values (read back and as DUMP) and the AOF file on disk contain no device
token, DH key or secret, registration code, notifier id or notifier key in clear (nor hex/base64 of them)."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.store_helpers import add_notice, notifier_key, server, token
from helpers.valkey_cluster import raw_client, single_redis_only

from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.records import SUB_PENDING, TOKEN_ACTIVE
from ntf_server.store.redis import RedisStore


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Redis of this test's own: its AOF holds only this test's writes (the session's holds every test's
    so far, and searching all of it for every secret took most of a minute late in a run)."""
    server = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(server.start_blocking)
    yield server
    await asyncio.to_thread(server.stop_blocking)


@pytest.fixture
async def own_store(own_redis: EmbeddedRedis, store_key: bytes) -> AsyncIterator[RedisStore]:
    s = await RedisStore.connect(own_redis.url, store_key, prefix=f"test:{secrets.token_hex(6)}:", buckets=64)
    yield s
    await s.close()


def forms(secret: bytes) -> list[bytes]:
    """The secret and the encodings it could leak in; long enough slices to rule out chance matches."""
    out = [secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)]
    if all(c in b"0123456789abcdef" for c in secret):
        out.append(bytes.fromhex(secret.decode()))  # APNs hex device token: its binary form too
    return [f[:12] for f in out] + [f[-12:] for f in out]


async def dump_everything(url: str, prefix: str) -> bytes:
    c = raw_client(url)
    parts: list[bytes] = []
    try:
        async for key in c.scan_iter(match=prefix + "*", count=1000):
            parts.append(key)
            parts.append(await c.dump(key) or b"")
            kind = (await c.type(key)).decode()
            if kind == "hash":
                for f, v in (await c.hgetall(key)).items():
                    parts += [f, v]
            elif kind == "zset":
                parts += [m for m, _ in await c.zrange(key, 0, -1, withscores=True)]
            elif kind == "string":
                parts.append(await c.get(key) or b"")
    finally:
        await c.aclose()
    return b"\x00".join(parts)


@single_redis_only
async def test_no_secret_in_clear(own_store: RedisStore, own_redis: EmbeddedRedis) -> None:
    store, redis_url = own_store, own_redis.url
    secrets_: list[bytes] = []
    for i in range(10):
        t = replace(token(), status=TOKEN_ACTIVE)
        await store.create_token(t)
        secrets_ += [t.device_token, t.dh_private, t.dh_secret, t.reg_code]
        for j in range(4):
            nid, key = bytes([i, j, 7]) * 8, notifier_key()
            await store.create_subscription(t.token_id, server(j + 1), nid, key)
            await store.set_subscription_statuses(server(j + 1), [nid], SUB_PENDING)
            await add_notice(store, server(j + 1), nid, 1000 + j, b"n" * 24, b"m" * 144)
            secrets_ += [nid, key[16:]]  # the key's fixed PKCS#8 prefix is public; its 32 key bytes are not
    await store.replace_token(t.token_id, t.provider, token().device_token, b"r" * 32)
    got = await store.get_token(t.token_id)
    assert got is not None
    secrets_ += [got.device_token, got.reg_code]

    blob = await dump_everything(redis_url, store.prefix)
    assert len(blob) > 10_000
    await asyncio.sleep(0.2)  # the AOF buffer is written to the file before the next event loop cycle
    aof = b"".join(p.read_bytes() for p in (own_redis.data_dir / "appendonlydir").iterdir())
    assert store.prefix.encode() in aof  # the AOF does hold this test's writes
    for s in secrets_:
        for f in forms(s):
            assert f not in blob, "secret visible in Redis data"
            assert f not in aof, "secret visible in the AOF file"


async def test_the_scan_would_see_a_clear_secret(store: RedisStore, redis_url: str) -> None:
    """Guard against a test that cannot fail: a secret written in clear is found by the same scan."""
    t = token()
    c = raw_client(redis_url)
    await c.set(store.prefix + "leak", t.device_token)
    await c.aclose()
    blob = await dump_everything(redis_url, store.prefix)
    assert any(f in blob for f in forms(t.device_token))
