"""Writing records taken from another server's database (`ntf-server import-simplex`), as they are.

The normal write paths create records in their initial state (TNEW → REGISTERED, SNEW → NEW, a new
subscription id); an import must keep the ids the apps know, the statuses, the cron state and the last
notifications. This module writes exactly the keys and indexes of the schema in `keys.py` (same hash tags,
same `(provider, device token)` and `(server, notifier id)` indexes, per-server buckets, `used`/`cron`/`unv`
sets, counters), with the store's own encoders (codec.py: token hash, last notification; keys.py: packed
subscription, ids) and server registry (servers.py), so every normal path reads them. The script body
repeats what CREATE_TOKEN and CREATE_SUB (scripts.py) write; keep them in step.

Theory of operation: one token with all its subscriptions and last notifications is one Lua script
(`IMPORT_TOKEN`), so a crash or a lost connection leaves a token imported whole or not at all, and a
re-run skips a token that is already there (`SAME`) without touching it, which makes the import
idempotent and never overwrites what the running server changed since. A token whose (provider, device
token, verify key) is registered under another id, or a subscription whose (server, notifier id) belongs
to another token, is refused and reported, never merged.

Subscription ids: ours are derived from (server, notifier id) (`keys.py`), so an imported subscription
gets one of ours for the store's internal links, and the id the app knows is kept in the `sa` alias hash
(`sub_aliases.py` resolves it on `SCHK`/`SDEL`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store import scripts
from ntf_server.store.codec import LN_NONCE_BYTES, TokenCodec, encode_ln
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import (
    SUB_ID_BYTES,
    TOKEN_ID_BYTES,
    PackedSub,
    make_sub_id,
    pack_sub,
    seal_notifier,
    sub_r,
)
from ntf_server.store.records import SubscriptionRecord, TokenRecord
from ntf_server.store.servers import ServerRegistry
from ntf_server.store.sub_aliases import ALIAS_KEY

NONCE_BYTES: Final = LN_NONCE_BYTES
MAX_LAST_NTFS: Final = 6  # §5.7 `maxNtfs`

# ARGV: P NB tid x vh day unv_score('' = none) cron_due('' = none) nfields field value ...
#       nsubs (sid srv value alias) ... nln (sid value) ...
# -> {'NEW', subs created, {index of each refused subscription}, last notifications written}
#    | {'SAME'} (already imported: nothing touched) | {'DUPLICATE'} | {'CLASH'} (id taken by another token)
IMPORT_TOKEN: Final = (
    scripts.PRELUDE
    + f"local SA = P .. '{ALIAS_KEY}'\n"
    + r"""
local tid, x, vh, day, unv, due = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local tk = tkey(tid)
if redis.call('EXISTS', tk) == 1 then
  if redis.call('HGET', tk, 'vh') == vh and redis.call('HGET', tk, 'x') == x then return {'SAME'} end
  return {'CLASH'}
end
if redis.call('HEXISTS', P .. 'tv', x .. ':' .. vh) == 1 then return {'DUPLICATE'} end
local i = 9
local nf = tonumber(ARGV[i])
redis.call('HSET', tk, unpack(ARGV, i + 1, i + 2 * nf))
i = i + 2 * nf + 1
redis.call('HSET', P .. 'dt:' .. x, tid, vh)
redis.call('HSET', P .. 'tv', x .. ':' .. vh, tid)
redis.call('ZADD', P .. 'used', day, tid)
if unv ~= '' then redis.call('ZADD', P .. 'unv', unv, tid) end
if due ~= '' then redis.call('ZADD', P .. 'cron', due, tid) end
local ns = tonumber(ARGV[i])
i = i + 1
local created, refused, written = 0, {}, {}
for k = 1, ns do
  local sid, srv, value, alias = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local r = string.sub(sid, 1, 20)
  local bk = bkey(srv, r)
  if redis.call('HEXISTS', bk, r) == 1 or redis.call('HEXISTS', SA, alias) == 1 then
    table.insert(refused, k)
  else
    redis.call('HSET', bk, r, value)
    redis.call('HSET', tk .. ':subs', sid, srv)
    redis.call('HSET', SA, alias, sid)
    redis.call('INCR', P .. 'n:sub')
    redis.call('HINCRBY', P .. 'srv:count', srv, 1)
    written[sid] = true
    created = created + 1
  end
end
local nl = tonumber(ARGV[i])
i = i + 1
local lns = 0
for k = 1, nl do
  if written[ARGV[i]] then
    redis.call('HSET', tk .. ':ln', ARGV[i], ARGV[i + 1])
    redis.call('INCR', P .. 'n:ln')
    lns = lns + 1
  end
  i = i + 2
end
return {'NEW', created, refused, lns}
"""
)


class TokenImport(enum.Enum):
    WRITTEN = "written"
    ALREADY_THERE = "already imported"
    DUPLICATE = "device token and verify key registered under another token id"
    ID_TAKEN = "token id used by another token"


@dataclass(frozen=True, slots=True)
class ImportedNotification:
    """A last notification: `sub_id` is the subscription id of the source (the alias)."""

    sub_id: bytes
    received_at_ms: int
    nonce: bytes = field(repr=False)
    enc_meta: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ImportedToken:
    """A token with its subscriptions (their `sub_id` is the source's id) and ≤ 6 newest notifications."""

    token: TokenRecord
    subscriptions: Sequence[SubscriptionRecord]
    notifications: Sequence[ImportedNotification]
    unverified_since: int | None  # Unix seconds: put in the `unv` index (expiry of never-verified tokens)


@dataclass(frozen=True, slots=True)
class ImportResult:
    outcome: TokenImport
    subscriptions_written: int = 0
    refused_subscriptions: tuple[SubscriptionRecord, ...] = ()
    notifications_written: int = 0


def cron_due(token: TokenRecord, now: float) -> int | None:
    """When the next periodic push is due: one interval after the last one, or one interval from now if
    none was ever sent (as `RedisStore.set_cron_interval`; §5.10's NULL quirk is not ours)."""
    if token.cron_interval_min <= 0:
        return None
    base = token.cron_sent_at if token.cron_sent_at is not None else math.floor(now)
    return base + 60 * token.cron_interval_min


class StoreImporter:
    """Writes `ImportedToken`s into the data set of a `RedisStore` (`RedisStore.dataset`: its client, store
    key, keys and health switch), with the store's own encoders (codec.py, keys.py) and server registry (servers.py).

    Only for the importer: the running server never calls it."""

    def __init__(self, dataset: DataSet) -> None:
        self._d = dataset
        self._codec = TokenCodec(dataset.a)
        self._registry = ServerRegistry(self._d)
        self._import = dataset.r.register_script(IMPORT_TOKEN)  # queued into a pipeline: see write()

    def __repr__(self) -> str:
        return f"<StoreImporter {self._d!r}>"

    async def server_number(self, server: SMPServer) -> int:
        """The server's number in the registry, registering it if new (as SNEW does)."""
        n = await self._registry.number(server.normalized(), create=True)
        assert n is not None
        return n

    async def write(self, items: Sequence[ImportedToken], now: float) -> list[ImportResult]:
        """Tokens, each atomically (see the module docstring), in two pipelined round trips: which are
        there already (a re-run then costs no encryption), then the rest (the script checks again)."""
        ids = [self._ids(item.token) for item in items]
        async with self._d.pipeline() as pipe:
            for item in items:
                pipe.hmget(self._d.keys.token(item.token.token_id), ["x", "vh"])
            present = await pipe.execute()
        results: list[ImportResult | None] = [_present(have, want) for have, want in zip(present, ids, strict=True)]
        todo = [i for i, r in enumerate(results) if r is None]
        calls = [await self._args(items[i], ids[i], now) for i in todo]
        # A cluster pipeline does not load a missing script (a node promoted since it was loaded): load it here.
        await self._d.call(self._d.r.script_load, IMPORT_TOKEN)
        head: list[Any] = [self._d.keys.prefix, self._d.keys.buckets]
        async with self._d.pipeline() as pipe:
            for args in calls:
                # AsyncScript queues into either pipeline type (redis-py checks the type at run time)
                queued: Any = pipe
                await self._import(keys=[self._d.keys.route], args=[*head, *args], client=queued)
            replies = await pipe.execute()
        for i, res in zip(todo, replies, strict=True):
            results[i] = _result(items[i], res)
        return [r for r in results if r is not None]

    def _ids(self, t: TokenRecord) -> tuple[str, bytes]:
        """The token's `(provider, device token)` index name and verify key hash."""
        return self._codec.dt_index(t.provider, t.device_token), self._codec.vk_index(t.verify_key)

    async def _args(self, item: ImportedToken, ids: tuple[str, bytes], now: float) -> list[Any]:
        t = item.token
        if len(t.token_id) != TOKEN_ID_BYTES:
            raise StoreError("token id must be 24 bytes")
        x, vh = ids
        fields = self._codec.encode(t)
        due = cron_due(t, now)
        args: list[Any] = [
            t.token_id, x, vh, t.last_used_day,
            "" if item.unverified_since is None else item.unverified_since,
            "" if due is None else due,
            len(fields) // 2, *fields,
        ]
        ours: dict[bytes, bytes] = {}  # source subscription id -> ours
        args.append(len(item.subscriptions))
        for s in item.subscriptions:
            sid, srv, value = await self._sub_value(s)
            ours[s.sub_id] = sid
            args += [sid, srv, value, s.sub_id]
        lns = [n for n in item.notifications if n.sub_id in ours]
        args.append(len(lns))
        for n in lns:
            args += [ours[n.sub_id], encode_ln(n.received_at_ms, n.nonce, n.enc_meta)]
        return args

    async def _sub_value(self, s: SubscriptionRecord) -> tuple[bytes, int, bytes]:
        if len(s.sub_id) != SUB_ID_BYTES:
            raise StoreError("subscription id must be 24 bytes")
        if not 0 < len(s.notifier_id) <= 255:
            raise StoreError("notifier id must be 1..255 bytes")
        server = s.server.normalized()
        srv = await self.server_number(server)
        r = sub_r(self._d.a, server, s.notifier_id)
        sealed = seal_notifier(self._d.a, r, s.token_id, s.notifier_id, s.notifier_key)
        value = pack_sub(PackedSub(s.token_id, s.service_assoc, s.status.to_text(), sealed))
        return make_sub_id(self._d.a, r, srv), srv, value


def _result(item: ImportedToken, res: Any) -> ImportResult:
    if isinstance(res, Exception):  # a pipelined script's error comes back as a value
        raise StoreError(f"redis error: {res}")
    tag = res[0]
    if tag == b"SAME":
        return ImportResult(TokenImport.ALREADY_THERE)
    if tag == b"DUPLICATE":
        return ImportResult(TokenImport.DUPLICATE)
    if tag == b"CLASH":
        return ImportResult(TokenImport.ID_TAKEN)
    refused = tuple(item.subscriptions[int(k) - 1] for k in res[2])
    return ImportResult(TokenImport.WRITTEN, int(res[1]), refused, int(res[3]))


def _present(have: list[bytes | None], want: tuple[str, bytes]) -> ImportResult | None:
    x, vh = have
    if x is None:
        return None
    if x.decode() == want[0] and vh == want[1]:
        return ImportResult(TokenImport.ALREADY_THERE)
    return ImportResult(TokenImport.ID_TAKEN)
