"""Builders for test records and an invariant checker that reads the raw Redis data set."""

from __future__ import annotations

import enum
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from helpers.valkey_cluster import raw_client
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.policy import Budget
from ntf_server.store.atrest import AtRest
from ntf_server.store.client import Client
from ntf_server.store.codec import TokenCodec
from ntf_server.store.dataset import DataSet
from ntf_server.store.keys import DEFAULT_BUCKETS, Keys, make_sub_id, sub_r
from ntf_server.store.records import (
    TOKEN_REGISTERED,
    Notice,
    PushProvider,
    SubscriptionRecord,
    TokenRecord,
    TokenStatus,
    day_of,
)
from ntf_server.store.redis import RedisStore
from ntf_server.store.servers import ServerRegistry

NOW = 1_800_000_000.0


def server(n: int = 1, port: str = "5223") -> SMPServer:
    return SMPServer((f"smp{n}.example.net",), port, bytes([n]) * 32)


def device_token() -> bytes:
    return secrets.token_hex(32).encode()  # APNs device tokens are lowercase hex text


def token(
    dt: bytes | None = None,
    *,
    provider: PushProvider = PushProvider.APNS_PROD,
    status: TokenStatus = TOKEN_REGISTERED,
    vk: bytes | None = None,
    now: float = NOW,
) -> TokenRecord:
    return TokenRecord(
        token_id=secrets.token_bytes(24),
        provider=provider,
        device_token=dt if dt is not None else device_token(),
        status=status,
        verify_key=vk if vk is not None else b"\x30\x2a" + secrets.token_bytes(42),
        dh_public=b"\x30\x2a" + secrets.token_bytes(42),
        dh_private=b"\x30\x2e" + secrets.token_bytes(46),
        dh_secret=secrets.token_bytes(32),
        reg_code=secrets.token_bytes(32),
        last_used_day=day_of(now),
    )


def notifier_key() -> bytes:
    return b"\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20" + secrets.token_bytes(32)


async def wipe(url: str, prefixes: Iterable[str]) -> None:
    """Remove every key under these prefixes (a store's: ``d.keys.prefix for d in store.datasets``, one per shard)."""
    c = raw_client(url)
    try:
        for p in prefixes:
            keys = [k async for k in c.scan_iter(match=p + "*", count=1000)]
            for i in range(0, len(keys), 500):
                await c.delete(*keys[i : i + 500])
    finally:
        await c.aclose()


async def check_invariants(store: RedisStore, url: str) -> dict[str, int]:
    """Every index points at a record and every record is indexed; counters equal what is there (in each
    shard: each is a whole data set of the one-shard layout, store/shards.py)."""
    c = raw_client(url)
    total: Counter[str] = Counter()
    try:
        for d in store.datasets:
            total.update(await _check_shard(store, d.keys.prefix, c))
    finally:
        await c.aclose()
    return dict(total)


async def _check_shard(store: RedisStore, p: str, c: Any) -> dict[str, int]:
    keys = [k.decode() async for k in c.scan_iter(match=p + "*", count=1000)]
    tokens = {k for k in keys if k.startswith(p + "t{") and k.endswith("}")}
    tids = {bytes.fromhex(k[len(p) + 2 : -1]) for k in tokens}
    records: dict[tuple[int, bytes], bytes] = {}
    for k in keys:
        if k.startswith(p + "s:"):
            n = int(k[len(p) + 2 :].split(":")[0])
            for r, v in (await c.hgetall(k)).items():
                records[(n, r)] = v
    ln_total = 0
    for tk in tokens:
        tid = bytes.fromhex(tk[len(p) + 2 : -1])
        h = await c.hgetall(tk)
        assert await c.hexists(p + "dt:" + h[b"x"].decode(), tid), "token missing from its device index"
        assert await c.zscore(p + "used", tid) is not None, "token missing from used set"
        subs = await c.hgetall(tk + ":subs")
        for sid, n in subs.items():
            rec = records.get((int(n), sid[:20]))
            assert rec is not None and rec[:24] == tid, "token lists a subscription that is not there"
        ln = await c.hkeys(tk + ":ln")
        assert set(ln) <= set(subs), "last notification of a missing subscription"
        assert len(ln) <= 6
        ln_total += len(ln)
    for k in keys:
        if k.startswith(p + "dt:"):
            for tid in await c.hkeys(k):
                assert tid in tids, "device index points at a missing token"
    for z in ("used", "cron", "unv"):
        for tid in await c.zrange(p + z, 0, -1):
            assert tid in tids, f"{z} set points at a missing token"
    for tid in await c.zrange(p + "unv", 0, -1):
        assert await c.hget(p + "t{" + tid.hex() + "}", "st") != b"ACTIVE", "verified token in unv set"
    per_server: Counter[int] = Counter()
    for (n, r), v in records.items():
        assert v[:24] in tids, "subscription of a missing token"
        sid = r + (n ^ int.from_bytes(store._a.sid_mask(r), "big")).to_bytes(4, "big")
        assert await c.hget(p + "t{" + v[:24].hex() + "}:subs", sid) == str(n).encode(), (
            "subscription not indexed by its token"
        )
        per_server[n] += 1
    assert int(await c.get(p + "n:sub") or 0) == len(records), "subscription counter drifted"
    assert int(await c.get(p + "n:ln") or 0) == ln_total, "last-notification counter drifted"
    counts = {int(n): int(v) for n, v in (await c.hgetall(p + "srv:count")).items()}
    assert {n: v for n, v in counts.items() if v} == dict(per_server), "per-server counts drifted"
    return {"tokens": len(tids), "subscriptions": len(records), "last_notifications": ln_total}


# ---------------------------------------------------------------- notices (store/notices.py), in parity mode

PARITY = {p: Budget(0.0) for p in PushProvider}


class Outcome(enum.Enum):
    STORED = "stored"
    NO_SUBSCRIPTION = "no subscription"
    TOKEN_NOT_ACTIVE = "token not active"


class Added(NamedTuple):
    """What storing one notice gave, as a test reads it."""

    outcome: Outcome
    token: TokenRecord | None
    notifications: list[Notice]


async def add_notices(store: RedisStore, notices: Sequence[Notice], now: float = NOW) -> list[Added]:
    """Store a block of notices as the push pipeline does (one script), parity policy, no outbox entries."""
    if not notices:
        return []
    decided = await store.notify(notices, PARITY, now, None, 0.0)
    assert isinstance(decided, list)
    return [Added(Outcome.STORED if d.decision else Outcome.NO_SUBSCRIPTION if not d.known else
                  Outcome.TOKEN_NOT_ACTIVE, d.token, list(d.notices)) for d in decided]


async def add_notice(store: RedisStore, server: SMPServer, nid: bytes, at_ms: int, nonce: bytes,
                     enc_meta: bytes) -> Added:
    [added] = await add_notices(store, [Notice(server, nid, at_ms, nonce, enc_meta)])
    return added


def dataset_of(client: Client, prefix: str, buckets: int = DEFAULT_BUCKETS) -> DataSet:
    """A data set over a client of the test's own (another instance's connection, an unreachable Redis):
    the store modules that keep their own keys are built on one. Its store key is random: for modules that
    seal nothing (policy, budgets, census)."""
    return DataSet(client, AtRest(secrets.token_bytes(32)), Keys(prefix, buckets))


# Queries only the tests make, kept here rather than in the store (whose queries are the server's), built on
# the store's public parts: its data set (client, keys, at-rest key) and its key layout (keys.py, codec.py).

async def find_subscription(store: RedisStore, server: SMPServer, notifier_id: bytes) -> SubscriptionRecord | None:
    """The subscription of (SMP server, notifier id), as SNEW would find it."""
    server = server.normalized()
    for d in store.datasets:  # each shard numbers servers its own way (store/shards.py)
        srv = await ServerRegistry(d).number(server, create=False)
        if srv is not None and (sub := await store.get_subscription(make_sub_id(d.a, sub_r(d.a, server, notifier_id),
                                                                                 srv))) is not None:
            return sub
    return None


async def find_tokens(store: RedisStore, provider: PushProvider, device_token: bytes) -> list[TokenRecord]:
    """Every registration of a device token (the device-token index, then each record)."""
    tids: list[bytes] = sorted([tid for d in store.datasets
                                for tid in await d.r.hkeys(d.keys.dt_index(TokenCodec(d.a).dt_index(provider,
                                                                                                   device_token)))])
    found = [t for t in [await store.get_token(tid) for tid in tids] if t is not None]
    return [t for t in found if t.provider is provider and t.device_token == device_token]


async def job_holder(store: RedisStore, job: str) -> str | None:
    """The instance holding a job's lease now (leases.py ``lj:<job>``: "<token> <instance>"), None when none."""
    v: Any = await store.client.get(store.dataset.keys.g(f"lj:{job}"))
    return bytes(v).decode().partition(" ")[2] if v else None


async def pending_count(store: RedisStore) -> int:
    """How many tokens have a deferred push pending (budget.py ``dfr``)."""
    return sum([int(await store.client.zcard(d.keys.g("dfr"))) for d in store.datasets])
