"""Tokens and subscriptions counted by status: a periodic, paced, incremental census of Redis.

Why a census and not maintained counters: a status changes inside many Lua scripts (scripts.py), and a
counter per status kept in step by all of them is a schema change for another day. A census costs nothing
on the request path and is always consistent with what is stored, at the price of being approximate
(a record changed while the census runs may be seen before or after the change) and some minutes old;
both are exported (``finished_at``, ``duration_s``).

How it stays cheap at 1M tokens / 10M subscriptions: everything is counted *inside* Redis by two small
scripts that return only counts, never records (parsing a reply per token in Python cost ten times the
Redis time, tests/bench/census_bench.py). Tokens are walked by rank over the ``used`` index (never a
keyspace SCAN), 200 a call; subscriptions a few buckets of one SMP server a call (a bucket is a small
listpack hash). A call takes a millisecond or two. Between calls the
census sleeps so that it uses at most ``duty`` of Redis's time, whatever the data size: a big data set
takes longer to count instead of taking Redis away from requests.

Per SMP server subscription counts are kept, keyed by the server's address (the admin API decides what
to show of them, §6.4 ``own_server_domains``).

The server takes the census in one instance of a data set at a time, the holder of the census's job lease,
and publishes it for the others (ntf_server/jobs.py, census_shared.py); ``run`` is the single-instance form.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ntf_server.protocol.encoding import CodecError, SMPServer, dec_smp_server, decode_all
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import Keys

log = logging.getLogger(__name__)

TOKEN_PAGE: Final = 200  # ~2 ms of Redis time a call (the hex key names cost most)
BUCKETS_PER_CALL: Final = 16
DUTY: Final = 0.2  # at most this share of Redis's time goes to the census
RETRY_AFTER_S: Final = 30.0

# ARGV: prefix, first rank, count -> {tokens seen, kind, count, kind, count, ...}. Token keys as keys.py.
COUNT_TKN_STATUSES: Final = r"""
local P = ARGV[1]
local tids = redis.call('ZRANGE', P .. 'used', tonumber(ARGV[2]), tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1)
local counts = {}
for _, tid in ipairs(tids) do
  local st = redis.call('HGET', P .. 't{' .. string.format(string.rep('%02x', #tid), string.byte(tid, 1, -1)) .. '}',
                        'st')
  if st then
    local k = string.match(st, '^[A-Z]+') or '?'
    counts[k] = (counts[k] or 0) + 1
  end
end
local out = {#tids}
for k, n in pairs(counts) do
  table.insert(out, k)
  table.insert(out, n)
end
return out
"""

# ARGV: prefix, server number, first bucket, end bucket (exclusive) -> {kind, count, kind, count, ...}.
# The packed subscription layout is keys.py's: token id(24) ‖ assoc(1) ‖ u8 len ‖ status text ‖ ...
COUNT_SUB_STATUSES: Final = r"""
local P = ARGV[1]
local counts = {}
for b = tonumber(ARGV[3]), tonumber(ARGV[4]) - 1 do
  local vals = redis.call('HVALS', P .. 's:' .. ARGV[2] .. ':' .. b)
  for _, v in ipairs(vals) do
    local k = string.match(string.sub(v, 27, 26 + string.byte(v, 26)), '^[A-Z]+') or '?'
    counts[k] = (counts[k] or 0) + 1
  end
end
local out = {}
for k, n in pairs(counts) do
  table.insert(out, k)
  table.insert(out, n)
end
return out
"""


@dataclass(frozen=True, slots=True)
class Census:
    tokens: Mapping[str, int]  # status kind (ACTIVE, REGISTERED, INVALID, ...) -> count
    subscriptions: Mapping[str, int]  # status kind -> count
    per_server: Mapping[SMPServer, Mapping[str, int]]  # subscriptions by status, per SMP server
    finished_at: float  # Unix time
    duration_s: float

    def __repr__(self) -> str:
        return (f"<Census {sum(self.tokens.values())} tokens, {sum(self.subscriptions.values())} subscriptions "
                f"on {len(self.per_server)} servers>")


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class CensusTaker:
    def __init__(self, dataset: DataSet, *, duty: float = DUTY,
                 clock: Clock = time.time, sleep: Sleep = asyncio.sleep) -> None:
        """``dataset``: the store's (``RedisStore.dataset``): its keys (and bucket count), its health switch."""
        self._d = dataset
        self._duty = duty
        self._clock = clock
        self._sleep = sleep
        self._script = dataset.keyed_script(COUNT_SUB_STATUSES)
        self._token_script = dataset.keyed_script(COUNT_TKN_STATUSES)
        self.latest: Census | None = None

    @property
    def _k(self) -> Keys:
        return self._d.keys  # read at each use: the bucket count is the data set's, fixed at connect

    def __repr__(self) -> str:
        return f"<CensusTaker {self._k.prefix!r} latest={self.latest!r}>"

    async def run(self, interval_s: float) -> None:
        """Long-lived server part: a census now and every ``interval_s``; Redis errors wait and retry."""
        while True:
            try:
                self.latest = await self.take()
                await self._sleep(interval_s)
            except StoreError as e:
                log.debug("census: %s; retrying in %g s", e, RETRY_AFTER_S)
                await self._sleep(RETRY_AFTER_S)

    async def take(self) -> Census:
        started = self._clock()
        tokens = await self._count_tokens()
        per_server: dict[SMPServer, Mapping[str, int]] = {}
        total: Counter[str] = Counter()
        for n, server in await self._servers():
            counts = await self._count_server(n)
            per_server[server] = MappingProxyType(dict(counts))
            total.update(counts)
        finished = self._clock()
        return Census(MappingProxyType(dict(tokens)), MappingProxyType(dict(total)),
                      MappingProxyType(per_server), finished, finished - started)

    async def _paced(self, script: Callable[[list[str], list[Any]], Awaitable[Any]], args: list[Any]) -> Any:
        t0 = time.monotonic()
        result = await script([self._k.route], args)
        spent = time.monotonic() - t0
        await self._sleep(spent * (1 - self._duty) / self._duty)
        return result

    async def _count_tokens(self) -> Counter[str]:
        """By rank: a token touched (re-ranked) while the census runs may be counted twice or missed."""
        counts: Counter[str] = Counter()
        start = 0
        while True:
            flat = await self._paced(self._token_script, [self._k.prefix, start, TOKEN_PAGE])
            _add(counts, flat[1:])
            if int(flat[0]) < TOKEN_PAGE:
                return counts
            start += TOKEN_PAGE

    async def _servers(self) -> list[tuple[int, SMPServer]]:
        with self._d.guard():
            numbers = [int(n) for n, c in (await self._d.r.hgetall(self._k.g("srv:count"))).items() if int(c) > 0]
            addrs = await self._d.r.hmget(self._k.g("srv:addr"), numbers) if numbers else []
        out = []
        for n, raw in zip(numbers, addrs, strict=True):
            try:
                if not isinstance(raw, bytes):
                    raise CodecError("no address")
                out.append((n, decode_all(raw, dec_smp_server).normalized()))  # as the pool keys its links
            except CodecError:
                log.warning("census: SMP server %d has no readable address; not counted", n)
        return out

    async def _count_server(self, n: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for start in range(0, self._k.buckets, BUCKETS_PER_CALL):
            end = min(start + BUCKETS_PER_CALL, self._k.buckets)
            _add(counts, await self._paced(self._script, [self._k.prefix, n, start, end]))
        return counts


def _add(counts: Counter[str], flat: list[bytes | int]) -> None:
    for i in range(0, len(flat), 2):
        counts[_text(flat[i])] += int(flat[i + 1])


def _text(v: bytes | str | int) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
