"""`ntf-server move-store` (ntf_server/importer/move.py): a one-shard data set copied into a data set of three
shards (on the session's Redis, or its cluster under NTF_TEST_REDIS_CLUSTER=1), whole and usable: tokens,
subscriptions (under new ids, the old ones kept as aliases), last notifications, an earlier import's
aliases, the push policy and the SMP service credentials; run again, it writes nothing."""

from __future__ import annotations

import dataclasses
import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from helpers.store_helpers import NOW, add_notices, check_invariants, notifier_key, server, token, wipe
from helpers.valkey_cluster import CLUSTER

from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.importer.command import ImportFailed
from ntf_server.importer.move import Target, move_store
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.importing import TokenImport
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import TOKEN_ACTIVE, Notice, TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.store.sharded import ShardedStore
from ntf_server.store.sub_aliases import ALIAS_KEY, SubIdAliases
from ntf_server.transport import certs


def make_config(tmp_path: Path, redis_url: str) -> Config:
    assert cli.main(["--config-dir", str(tmp_path / "cfg"), "init", "--host", "localhost"]) == 0
    cfg = load_config(tmp_path / "cfg")
    return dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=redis_url, cluster=CLUSTER,
                                                              key_prefix=f"mv:{secrets.token_hex(6)}:"))


@pytest.fixture
async def source(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Config, RedisStore]]:
    cfg = make_config(tmp_path, redis_url)
    s = await RedisStore.connect(redis_url, load_or_create_store_key(cfg.store.key_file), prefix=cfg.redis.key_prefix,
                                 cluster=CLUSTER)
    yield cfg, s
    await s.close()
    await wipe(redis_url, [d.keys.prefix for d in s.datasets])


async def test_a_data_set_moves_into_three_shards_whole(source: tuple[Config, RedisStore], redis_url: str) -> None:
    cfg, src = source
    tokens: list[TokenRecord] = []
    queues: dict[bytes, list[tuple[int, bytes, bytes]]] = {}  # token id -> (server, notifier id, key)
    for i in range(12):
        t = dataclasses.replace(token(), status=TOKEN_ACTIVE, cron_interval_min=20 if i % 3 == 0 else 0)
        assert await src.create_token(t)
        tokens.append(t)
        for n in (1, 2, 3)[: 1 + i % 3]:
            nid, key = secrets.token_bytes(24), notifier_key()
            await src.create_subscription(t.token_id, server(n), nid, key)
            queues.setdefault(t.token_id, []).append((n, nid, key))
    first = tokens[2].token_id  # with three queues
    (n0, nid0, _), (n1, nid1, _) = queues[first][:2]
    await add_notices(src, [Notice(server(n0), nid0, 1_700_000_000_000, b"n" * 24, b"m" * 144)])
    old_sub = (await src.token_subscriptions(first))[0]
    haskell_id = secrets.token_bytes(24)  # as an earlier import-simplex left it: Haskell id -> ours
    await src.client.hset(src.prefix + ALIAS_KEY, haskell_id, old_sub.sub_id)
    policy = b'{"hidden_per_hour": 2.0}'
    await src.client.set(PolicyStore(src.dataset).key, policy)
    key, cert = certs.generate_service_cert()
    creds = ServiceCredentials((cert.public_bytes(Encoding.DER),), key)
    assert (await src.service_credentials(server(1), lambda: creds)).cert_hash == creds.cert_hash
    await src.set_service_id(server(1), b"S" * 24)

    target = Target(redis_url, f"mv2:{secrets.token_hex(6)}:", CLUSTER, 3)
    out = io.StringIO()
    moved = await move_store(cfg, target, out=out, hold_state_lock=False, now=NOW)
    assert moved.tokens == 12 and moved.outcomes == {TokenImport.WRITTEN.value: 12}
    assert moved.subs == moved.subs_written == sum(len(q) for q in queues.values())
    assert moved.ntfs_written == 1 and moved.aliases == 1 and moved.services == 1 and moved.policy
    dest = await RedisStore.connect(redis_url, load_or_create_store_key(cfg.store.key_file), prefix=target.prefix,
                                    cluster=CLUSTER, shards=3)
    try:
        assert isinstance(dest, ShardedStore)
        await check_invariants(dest, redis_url)
        assert sum([1 for s in dest.shards if (await s.counts()).tokens]) >= 2  # spread, not all in one shard
        for t in tokens:
            assert await dest.get_token(t.token_id) == await src.get_token(t.token_id)
            got = {(s.server, s.notifier_id, s.notifier_key, s.status)
                   for s in await dest.token_subscriptions(t.token_id)}
            assert got == {(s.server, s.notifier_id, s.notifier_key, s.status)
                           for s in await src.token_subscriptions(t.token_id)}
        # the old ids (ours, and the earlier import's) resolve to the subscription under its new id
        aliases = SubIdAliases(*dest.datasets)
        await aliases.load()
        for old in (old_sub.sub_id, haskell_id):
            sub = await dest.get_subscription(await aliases.resolve(old))
            assert sub is not None and (sub.server, sub.notifier_id) == (old_sub.server, old_sub.notifier_id)
        # the token's next notice (of another queue) is pushed with the one copied before it
        [added] = await add_notices(dest, [Notice(server(n1), nid1, 1_700_000_060_000, b"o" * 24, b"m" * 144)])
        assert added.token is not None and added.token.token_id == first
        assert [n.received_at_ms for n in added.notifications] == [1_700_000_000_000, 1_700_000_060_000]
        assert await PolicyStore(dest.dataset).raw() == policy
        state = await dest.service_state(server(1))
        assert state.service_id == b"S" * 24
        assert (await dest.service_credentials(server(1), lambda: pytest.fail("made anew"))).cert_hash == (
            creds.cert_hash)
        assert (await dest.counts()).subscriptions == moved.subs
        again = await move_store(cfg, target, out=io.StringIO(), hold_state_lock=False, now=NOW)
        assert again.outcomes == {TokenImport.ALREADY_THERE.value: 12} and again.subs_written == 0
        await check_invariants(dest, redis_url)
    finally:
        await dest.close()
        await wipe(redis_url, [d.keys.prefix for d in dest.datasets])


async def test_the_data_set_itself_is_not_a_target(source: tuple[Config, RedisStore], redis_url: str) -> None:
    cfg, _ = source
    with pytest.raises(ImportFailed, match="itself"):
        await move_store(cfg, Target(redis_url, cfg.redis.key_prefix, CLUSTER, 3), out=io.StringIO(),
                         hold_state_lock=False)
