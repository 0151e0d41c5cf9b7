"""`import-simplex` against a real PostgreSQL server loaded with the Haskell schema and a generated data set
of realistic shape (1,500 tokens, about 10,000 subscriptions, every status; 15 of the writer's batches), into a real
Redis; the result is read back through the store's normal paths."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import secrets
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import redis.asyncio
from helpers.haskell_data import HaskellData, ed25519_pair, generate, load, token_row
from helpers.pg_server import PgServer, load_schema, postgres  # noqa: F401  (postgres: the session fixture)
from helpers.store_helpers import add_notice, check_invariants, find_subscription, find_tokens
from helpers.valkey_cluster import CLUSTER, SHARDS

from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.importer import mapping as M
from ntf_server.importer.command import import_simplex
from ntf_server.importer.reader import SourceError
from ntf_server.importer.writer import Counts, report
from ntf_server.protocol import crypto
from ntf_server.protocol.ntf_types import PushProvider, SubStatusKind
from ntf_server.protocol.smp import queue_ids_hash
from ntf_server.statelock import StateLock
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.records import RESUBSCRIBE_KINDS, TokenRecord, day_of
from ntf_server.store.redis import RedisStore
from ntf_server.store.shards import shard_prefixes
from ntf_server.store.sub_aliases import SubIdAliases
from ntf_server.transport.certs import new_service_credentials

NOW = 1_780_000_000.0
BIG = "big_ntf"


@pytest.fixture(scope="module")
def big(postgres: PgServer) -> HaskellData:  # noqa: F811
    load_schema(postgres.url, BIG)
    data = generate(n_tokens=1500)
    load(postgres.url, data, BIG)
    return data


def make_config(tmp_path: Path, redis_url: str | None) -> Config:
    assert cli.main(["--config-dir", str(tmp_path / "cfg"), "init", "--host", "localhost"]) == 0
    cfg = load_config(tmp_path / "cfg")
    if redis_url is None:
        return cfg
    return dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=redis_url, cluster=CLUSTER, shards=SHARDS,
                                                              key_prefix=f"imp:{secrets.token_hex(6)}:"))


async def run(cfg: Config, url: str, schema: str, dry_run: bool = False) -> Counts:
    return await import_simplex(cfg, url, schema, dry_run=dry_run, out=io.StringIO(), tty=False, now=NOW)


async def open_store(cfg: Config) -> RedisStore:
    return await RedisStore.connect(cfg.redis_url(), load_or_create_store_key(cfg.store.key_file),
                                    prefix=cfg.redis.key_prefix, cluster=cfg.redis.cluster, shards=cfg.redis.shards)


async def fingerprint(url: str, prefix: str) -> tuple[int, str]:
    """Every key under the prefix with its whole content: equal fingerprints, equal data sets."""
    client = redis.asyncio.Redis.from_url(url)
    h = hashlib.sha256()
    keys = sorted([k async for k in client.scan_iter(match=prefix + "*", count=1000)])
    async with client.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.dump(k)
        dumps = await pipe.execute()
    for k, d in zip(keys, dumps, strict=True):
        h.update(k)
        h.update(d or b"")
    await client.aclose()
    return len(keys), h.hexdigest()


def expected_written(data: HaskellData) -> tuple[int, int, int]:
    by_what: Counter[str] = Counter()
    for k, v in data.refused.items():
        by_what[k.split(":")[0]] += v
    return (len(data.tokens) - by_what["token"], len(data.subs) - by_what["subscription"],
            len(data.ntfs) - by_what["last notification"])


def check_token(rec: TokenRecord | None, row: M.TokenRow) -> None:
    assert rec is not None
    assert rec.token_id == row.token_id
    assert rec.provider.text == row.push_provider and rec.device_token == row.push_provider_token
    assert rec.status.to_text() == row.status
    assert rec.verify_key == row.verify_key and rec.dh_private == row.dh_priv_key
    assert rec.dh_secret == row.dh_secret and rec.reg_code == row.reg_code
    assert rec.cron_interval_min == row.cron_interval and rec.cron_sent_at == row.cron_sent_at
    assert rec.last_used_day == (row.updated_at if row.updated_at is not None else day_of(NOW))


async def test_import_keeps_everything_and_a_rerun_changes_nothing(
        big: HaskellData, postgres: PgServer, tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    cfg = make_config(tmp_path, redis_url)
    counts = await run(cfg, postgres.url, BIG)
    tokens, subs, ntfs = expected_written(big)
    assert (counts.tokens, counts.subs, counts.ntfs) == (len(big.tokens), len(big.subs), len(big.ntfs))
    assert (counts.tokens_written, counts.subs_written, counts.ntfs_written) == (tokens, subs, ntfs)
    assert counts.refused == big.refused
    assert counts.notes == big.notes
    assert len(counts.token_statuses) == 10 and len(counts.sub_statuses) == len(SubStatusKind)

    store = await open_store(cfg)
    aliases = SubIdAliases(*store.datasets)
    await aliases.load()
    try:
        stored = await store.counts()
        assert (stored.tokens, stored.subscriptions, stored.last_notifications) == (tokens, subs, ntfs)
        valid = {t.token_id: t for t in big.tokens if not isinstance(M.map_token(t, NOW), M.Rejected)}
        for row in list(valid.values())[::3]:  # a third of them, every status and provider
            check_token(await store.get_token(row.token_id), row)
        for row in list(valid.values())[:100]:  # the (provider, device token) index
            provider = M.PROVIDERS[row.push_provider]
            assert row.token_id in [t.token_id for t in await find_tokens(store, provider, row.push_provider_token)]
        servers = {s.smp_server_id: M.map_server(s) for s in big.servers}
        kept = [s for s in big.subs if s.token_id in valid and not isinstance(M.map_sub(s, servers), M.Rejected)]
        assert len(kept) == subs
        for row in kept[::25]:
            server = servers[row.smp_server_id]  # type: ignore[index]
            assert not isinstance(server, M.Rejected)
            rec = await find_subscription(store, server, row.smp_notifier_id)
            assert rec is not None and rec.token_id == row.token_id and rec.notifier_key == row.smp_notifier_key
            assert rec.status.to_text() == row.status[:204]
            # the app's subscription id (SCHK): through the alias, to the same record and its token
            sub, tok = await store.subscription_and_token(await aliases.resolve(row.subscription_id))
            assert sub == rec and tok is not None and tok.token_id == row.token_id
        # the per-server index the subscriber pool resubscribes from (spec §4.6: NEW, PENDING, ACTIVE, INACTIVE)
        for sid, server in servers.items():
            if isinstance(server, M.Rejected):
                continue
            want = sum(1 for s in kept if s.smp_server_id == sid and
                       M.sub_status(s.status).kind in RESUBSCRIBE_KINDS)  # type: ignore[union-attr]
            got = [r async for page in store.iter_server_subscriptions(server, kinds=RESUBSCRIBE_KINDS) for r in page]
            assert len(got) == want > 0
        await check_indexes(cfg, big, valid, {s.token_id for s in kept})
        await check_last_notifications(store, big, kept, servers)
    finally:
        await store.close()

    before = await fingerprint(cfg.redis_url(), cfg.redis.key_prefix)
    again = await run(cfg, postgres.url, BIG)
    assert again.changed_nothing and (again.tokens_already, again.subs_already, again.ntfs_already) == (
        tokens, subs, ntfs)
    assert again.refused == big.refused  # every row is accounted for, on every run
    assert await fingerprint(cfg.redis_url(), cfg.redis.key_prefix) == before
    assert "nothing to do: everything was imported before, nothing changed" in report(again, dry_run=False)


async def check_indexes(cfg: Config, big: HaskellData, valid: dict[bytes, M.TokenRow], with_subs: set[bytes]) -> None:
    """`unv` (never-verified expiry) and `cron` (periodic pushes) hold what the normal paths would."""
    client = redis.asyncio.Redis.from_url(cfg.redis_url())
    shards = shard_prefixes(cfg.redis.key_prefix, cfg.redis.shards, cluster=cfg.redis.cluster)
    try:
        unv = {k: v for p in shards for k, v in await client.zrange(p + "unv", 0, -1, withscores=True)}
        want_unv = {t for t, r in valid.items() if not r.status.startswith("ACTIVE") and t not in with_subs}
        assert set(unv) == want_unv and set(unv.values()) == {NOW}
        cron = {k: v for p in shards for k, v in await client.zrange(p + "cron", 0, -1, withscores=True)}
        want_cron = {t: (r.cron_sent_at if r.cron_sent_at is not None else NOW) + 60 * r.cron_interval
                     for t, r in valid.items() if r.cron_interval}
        assert cron == want_cron
    finally:
        await client.aclose()


async def check_last_notifications(store: RedisStore, big: HaskellData, kept: list[M.SubRow],
                                   servers: dict[int, object]) -> None:
    """A new NMSG for a token with imported notifications carries them too (newest ≤ 6, spec §5.7)."""
    kept_ids = {s.subscription_id for s in kept}
    by_token: dict[bytes, list[M.NtfRow]] = {}
    for n in big.ntfs:
        if n.subscription_id in kept_ids:
            by_token.setdefault(n.token_id, []).append(n)
    active = {t.token_id for t in big.tokens if t.status == "ACTIVE"}
    tid, ntfs = next((t, n) for t, n in by_token.items() if t in active and 2 <= len(n) <= 5)
    sub = next(s for s in kept if s.token_id == tid)
    server = servers[sub.smp_server_id]  # type: ignore[index]
    assert isinstance(server, M.SMPServer)
    imported = sorted(ntfs, key=lambda n: n.sent_at)
    later_ms = int(imported[-1].sent_at.timestamp() * 1000) + 1000
    _, _, stored = await add_notice(store, server, sub.smp_notifier_id, later_ms, bytes(24), b"m")
    others = [n for n in imported if n.subscription_id != sub.subscription_id]
    assert [x.nonce for x in stored[:-1]] == [n.nmsg_nonce for n in others]
    assert [x.received_at_ms for x in stored[:-1]] == [int(n.sent_at.timestamp() * 1000) for n in others]


async def test_dry_run_reads_everything_and_writes_nothing(
        big: HaskellData, postgres: PgServer, tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    cfg = make_config(tmp_path, redis_url)
    counts = await run(cfg, postgres.url, BIG, dry_run=True)
    assert (counts.tokens_written, counts.subs_written, counts.ntfs_written) == expected_written(big)
    assert counts.refused == big.refused
    assert await fingerprint(cfg.redis_url(), cfg.redis.key_prefix) == (0, hashlib.sha256().hexdigest())
    assert report(counts, dry_run=True)[-1] == "dry run: nothing was written"


async def test_rows_of_another_token_are_refused_not_merged(postgres: PgServer, tmp_path: Path,  # noqa: F811
                                                             redis_url: str) -> None:
    """A device token + verify key already registered here under another id, and an SMP queue already
    subscribed by another token: both reported, neither overwritten."""
    import random

    schema = "conflicts"
    load_schema(postgres.url, schema)
    data = generate(n_tokens=20, seed=3)
    load(postgres.url, data, schema)
    cfg = make_config(tmp_path, redis_url)
    store = await open_store(cfg)
    try:
        victim = next(t for t in data.tokens if t.status == "ACTIVE" and t.push_provider == "apns_prod")
        native = M.map_token(dataclasses.replace(victim, token_id=secrets.token_bytes(24)), NOW)
        assert isinstance(native, TokenRecord)
        await store.create_token(native, NOW)
        other = M.map_token(token_row(random.Random(1), status="ACTIVE", provider="apns_prod",
                                      verify_key=ed25519_pair()[1]), NOW)
        assert isinstance(other, TokenRecord)
        await store.create_token(other, NOW)
        taken = next(s for s in data.subs if s.token_id != victim.token_id and s.smp_server_id != 6
                     and s.status == "ACTIVE" and s.token_id in {t.token_id for t in data.tokens[:20]})
        server = M.map_server(data.server_rows_by_id()[taken.smp_server_id])  # type: ignore[index]
        assert isinstance(server, M.SMPServer)
        await store.create_subscription(other.token_id, server, taken.smp_notifier_id, taken.smp_notifier_key)
        counts = await run(cfg, postgres.url, schema)
        assert counts.refused["token: device token and verify key registered under another token id"] == 1
        assert counts.refused["subscription: its SMP queue or id is already another token's subscription"] == 1
        assert await store.get_token(victim.token_id) is None
        rec = await find_subscription(store, server, taken.smp_notifier_id)
        assert rec is not None and rec.token_id == other.token_id
        # every index points at a record, every record is indexed, the counters agree (as the normal paths)
        found = await check_invariants(store, redis_url)
        assert found["tokens"] == counts.tokens_written + 2
        assert found["subscriptions"] == counts.subs_written + 1
    finally:
        await store.close()


async def test_unreadable_source_is_one_clear_error(postgres: PgServer, tmp_path: Path) -> None:  # noqa: F811
    cfg = make_config(tmp_path, None)
    with pytest.raises(SourceError, match="schema 'nope' has no table"):
        await run(cfg, postgres.url, "nope")
    with pytest.raises(SourceError, match="cannot connect to the Haskell database"):
        await run(cfg, f"postgresql://ntf@/no_such_db?host={postgres.sock}", "ntf_server")


def test_cli_imports_into_the_embedded_store_and_says_when_there_is_nothing_to_do(
        postgres: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    schema = "cli_ntf"
    load_schema(postgres.url, schema)
    data = generate(n_tokens=40, seed=5)
    load(postgres.url, data, schema)
    cfg_dir = str(tmp_path / "cfg")
    assert cli.main(["--config-dir", cfg_dir, "init", "--host", "localhost"]) == 0
    args = ["--config-dir", cfg_dir, "import-simplex", "--database", postgres.url, "--schema", schema]
    assert cli.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    tokens, _, _ = expected_written(data)
    assert "dry run: nothing was written" in out and f"would be imported: {tokens} tokens" in out
    assert not (tmp_path / "cfg" / "state" / "redis").exists()  # a dry run starts no Redis
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert f"imported: {tokens} tokens" in captured.out
    assert "event=import.progress " in captured.err  # not a terminal: progress as log events, [log] format
    assert cli.main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    with StateLock(load_config(tmp_path / "cfg").server.state_dir):  # a running server holds it
        assert cli.main(args) == 1
    assert capsys.readouterr().err.endswith("is running with state directory "
                                            f"{tmp_path / 'cfg' / 'state'}: stop it before importing\n")
    with psycopg.connect(postgres.url) as conn:  # the source is read-only to us: untouched
        row = conn.execute(f"SELECT count(*) FROM {schema}.tokens").fetchone()
        assert row is not None and row[0] == len(data.tokens)


def test_provider_texts_are_the_haskell_ones() -> None:
    assert M.PROVIDERS == {"apns_prod": PushProvider.APNS_PROD, "apns_dev": PushProvider.APNS_DEV,
                           "apns_test": PushProvider.APNS_TEST, "apns_null": PushProvider.APNS_NULL}


async def test_a_database_from_before_the_service_columns_imports(postgres: PgServer, tmp_path: Path,  # noqa: F811
                                                                  redis_url: str) -> None:
    """Migration 20250517_service_cert added `ntf_service_id`/`ntf_service_assoc`; older databases lack them."""
    schema = "before_services"
    load_schema(postgres.url, schema)
    data = generate(n_tokens=30, seed=11)
    load(postgres.url, data, schema)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.subscriptions DROP COLUMN ntf_service_assoc")
        conn.execute(f"ALTER TABLE {schema}.smp_servers DROP COLUMN ntf_service_id, DROP COLUMN ntf_service_cert, "
                     "DROP COLUMN ntf_service_cert_hash, DROP COLUMN ntf_service_priv_key")
    counts = await run(make_config(tmp_path, redis_url), postgres.url, schema)
    assert (counts.tokens_written, counts.subs_written, counts.ntfs_written) == expected_written(data)
    assert not any("service" in note for note in counts.notes)


async def test_the_haskell_service_is_carried(postgres: PgServer, tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    """Issue 17: a server's service certificate, key and id become ours, its live ties stay, and the count and
    IdsHash are counted from them (a second run leaves them as they are)."""
    schema = "with_service"
    load_schema(postgres.url, schema)
    data = generate(n_tokens=30, seed=5)
    creds = new_service_credentials()
    chain = b"\x01" + len(creds.chain[0]).to_bytes(2, "big") + creds.chain[0]  # smpEncode (NonEmpty Large)
    server = data.servers[0]
    data.servers[0] = dataclasses.replace(server, ntf_service_id=b"haskell-service-id",
                                          ntf_service_cert=chain,
                                          ntf_service_priv_key=crypto.encode_private_key(creds.key))
    valid = {t.token_id for t in data.tokens if not isinstance(M.map_token(t, NOW), M.Rejected)}
    for i, row in enumerate(data.subs):  # every other subscription of that server tied to the service
        if row.smp_server_id == server.smp_server_id and i % 2 == 0:
            data.subs[i] = dataclasses.replace(row, ntf_service_assoc=True)
    load(postgres.url, data, schema)
    cfg = make_config(tmp_path, redis_url)
    counts = await run(cfg, postgres.url, schema)
    assert counts.notes["SMP server service carried (certificate, id, ties)"] == 1
    address = M.map_server(data.servers[0])
    assert not isinstance(address, M.Rejected)
    servers = {s.smp_server_id: M.map_server(s) for s in data.servers}
    tied = []
    for row in data.subs:
        mapped = M.map_sub(row, servers, frozenset({server.smp_server_id}))
        if (row.token_id in valid and not isinstance(mapped, M.Rejected) and mapped.record.service_assoc):
            tied.append(row.smp_notifier_id)
    assert tied  # the data has live tied subscriptions
    store = await open_store(cfg)
    try:
        for _ in range(2):  # a second run changes nothing
            state = await store.service_state(address)
            assert (state.service_id, state.count, state.ids_hash) == (
                b"haskell-service-id", len(tied), queue_ids_hash(tied))
            ours = await store.service_credentials(address, new_service_credentials)
            assert ours.chain == creds.chain and ours.cert_hash == creds.cert_hash
            await run(cfg, postgres.url, schema)
    finally:
        await store.close()
