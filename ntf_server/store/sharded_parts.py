"""The parts of a sharded store beside `ShardedStore` (store/sharded.py): the outbox, the budgets and the census
of every shard as one, and the leases (kept in the home shard) with their copies in the other shards.

- Outbox ids are the shard's own ids made global: ``local * N + shard`` (`global_id`), so an id names its
  shard and acknowledgements go straight to it.
- A lease lives in the home shard (store/leases.py). The status writes of an SMP server's subscriptions
  (SET_SUB_STATUS) compare a lease in their own shard, so the holder keeps a *copy* there under that shard's
  number of the server, written when it acquires and each time it renews, with the same expiry, and removed
  when it releases. A copy is only ever replaced by one of a later fencing token (`MIRROR`), so a late
  renewal of a former owner cannot overwrite its successor's; a former owner whose lease expired finds its
  copies expired too, and its writes are refused in every shard as in the home.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ntf_server.policy_types import Budget, CronDecision
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.budget import BudgetStore
from ntf_server.store.census import Census, CensusTaker, Sleep
from ntf_server.store.leases import NO_LEASE, RELEASE, Lease, RedisLeases, ServerLease, ms, server_lease
from ntf_server.store.outbox import Cause, OutboxEntry, PushKindCode, RedisOutbox
from ntf_server.store.shards import shard_of

if TYPE_CHECKING:
    from ntf_server.store.redis import RedisStore

# ARGV: P NB ttl_ms n token instance [...] -> copies written (a copy of a greater token is kept)
MIRROR: Final = r"""
local P = ARGV[1]
local n = 0
for i = 4, #ARGV, 3 do
  local k = P .. 'ls:' .. ARGV[i]
  local v = redis.call('GET', k)
  local cur = v and tonumber(string.match(v, '^%d+')) or 0
  if tonumber(ARGV[i + 1]) >= cur then
    redis.call('SET', k, ARGV[i + 1] .. ' ' .. ARGV[i + 2], 'PX', ARGV[3])
    n = n + 1
  end
end
return n
"""


def global_id(local: int, shard: int, shards: int) -> int:
    return local * shards + shard


async def _earliest(dues: Iterable[Awaitable[float | None]]) -> float | None:
    due = [d for d in await asyncio.gather(*dues) if d is not None]
    return min(due) if due else None


def _split(ids: Sequence[int], shards: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(shards)]
    for g in ids:
        out[g % shards].append(g // shards)
    return out


class ShardedOutbox(RedisOutbox):
    def __init__(self, shards: Sequence[RedisOutbox]) -> None:
        self._s = tuple(shards)
        self._n = len(shards)

    def __repr__(self) -> str:
        return f"<ShardedOutbox {self._n} shards>"

    async def add(self, kind: PushKindCode, token_id: bytes, first_at: float, due: float, tries: int,
                  cause: Cause | None = None) -> int:
        k = shard_of(token_id, self._n)
        return global_id(await self._s[k].add(kind, token_id, first_at, due, tries, cause), k, self._n)

    async def _by_shard(self, ids: Sequence[int], call: Callable[[RedisOutbox, list[int]], Awaitable[int]]) -> int:
        """``call`` on each shard with its own (local) ids of ``ids``; the results added."""
        return sum(await asyncio.gather(*(call(s, g) for s, g in zip(self._s, _split(ids, self._n), strict=True))))

    async def ack(self, ids: Sequence[int]) -> int:
        return await self._by_shard(ids, lambda s, g: s.ack(g))

    async def retry(self, id_: int, due: float, tries: int) -> bool:
        return await self._s[id_ % self._n].retry(id_ // self._n, due, tries)

    async def claim(self, now: float, lease_s: float, limit: int) -> list[OutboxEntry]:
        each = await asyncio.gather(*(s.claim(now, lease_s, limit) for s in self._s))
        return [replace(e, id=global_id(e.id, k, self._n)) for k, entries in enumerate(each) for e in entries]

    async def extend(self, ids: Sequence[int], due: float) -> int:
        return await self._by_shard(ids, lambda s, g: s.extend(g, due))

    async def release(self, ids: Sequence[int], now: float) -> int:
        return await self._by_shard(ids, lambda s, g: s.release(g, now))

    async def count(self) -> int:
        return sum(await asyncio.gather(*(s.count() for s in self._s)))

    async def next_due(self) -> float | None:
        return await _earliest(s.next_due() for s in self._s)


class ShardedBudgets(BudgetStore):
    """Budgets and pending pushes live with their token: each call goes to the token's shard; the due index
    is read in every shard."""

    def __init__(self, shards: Sequence[BudgetStore]) -> None:
        self._s = tuple(shards)
        self._n = len(shards)

    def __repr__(self) -> str:
        return f"<ShardedBudgets {self._n} shards>"

    def pending_key(self, tid: bytes) -> str:
        return self._s[shard_of(tid, self._n)].pending_key(tid)

    def due_key_of(self, tid: bytes) -> str:
        return self._s[shard_of(tid, self._n)].due_key

    async def due(self, now: float, limit: int = 100) -> list[bytes]:
        each = await asyncio.gather(*(s.due(now, limit) for s in self._s))
        return [t for due in each for t in due][:limit]

    async def next_due(self) -> float | None:
        return await _earliest(s.next_due() for s in self._s)

    async def done(self, tid: bytes, version: str = "") -> bool:
        return await self._s[shard_of(tid, self._n)].done(tid, version)

    async def cron(self, tid: bytes, b: Budget, now: float, interval_s: float, *, lease_s: float = 0.0,
                   claimer: str = "") -> CronDecision | None:
        return await self._s[shard_of(tid, self._n)].cron(tid, b, now, interval_s, lease_s=lease_s, claimer=claimer)

    async def cron_done(self, tid: bytes, claimer: str) -> bool:
        return await self._s[shard_of(tid, self._n)].cron_done(tid, claimer)


class ShardedCensus(CensusTaker):
    """One census per shard, one after the other (each paced as on one shard), added up. `run` is CensusTaker's
    loop around `take` below (with ``sleep``)."""

    def __init__(self, shards: Sequence[CensusTaker], sleep: Sleep = asyncio.sleep) -> None:
        self._s = tuple(shards)
        self._sleep = sleep
        self.latest: Census | None = None

    def __repr__(self) -> str:
        return f"<ShardedCensus {len(self._s)} shards latest={self.latest!r}>"

    async def take(self) -> Census:
        tokens: Counter[str] = Counter()
        subs: Counter[str] = Counter()
        per_server: dict[SMPServer, Counter[str]] = {}
        duration = finished = 0.0
        for s in self._s:
            c = await s.take()
            tokens.update(c.tokens)
            subs.update(c.subscriptions)
            for server, counts in c.per_server.items():
                per_server.setdefault(server, Counter()).update(counts)
            duration += c.duration_s
            finished = max(finished, c.finished_at)
        return Census(MappingProxyType(dict(tokens)), MappingProxyType(dict(subs)),
                      MappingProxyType({k: MappingProxyType(dict(v)) for k, v in per_server.items()}),
                      finished, duration)


class ShardedLeases(RedisLeases):
    """The home shard's leases (store/leases.py), with each server's subscriptions counted in every shard and
    a copy of each lease held in every other shard (module docstring)."""

    def __init__(self, home: RedisLeases, shards: Sequence[RedisStore]) -> None:
        self._home = home
        self._stores = tuple(shards)
        self._mirror = [s.dataset.script(MIRROR) for s in shards[1:]]
        self._unmirror = [s.dataset.script(RELEASE) for s in shards[1:]]

    def __repr__(self) -> str:
        return f"<ShardedLeases {len(self._stores)} shards>"

    async def _numbers(self, server: SMPServer) -> list[int]:
        """The server's number in each shard but the home (registered there if it was not)."""
        server = server.normalized()
        return [int(await s._servers.number(server, create=True) or 0) for s in self._stores[1:]]

    async def _in_other_shards(self, scripts: Sequence[Callable[..., Awaitable[Any]]], leases: Sequence[Lease],
                               instance: str, *head: Any) -> None:
        """Run each other shard's script (``scripts[i]`` for shard i + 1) on the leases, each named by that
        shard's number of its server: ARGV ``head..., n token instance, ...``."""
        if not leases:
            return
        numbers = [await self._numbers(lease.server) for lease in leases]
        await asyncio.gather(*(
            run(*head, *[a for lease, ns in zip(leases, numbers, strict=True) for a in (ns[i], lease.token, instance)])
            for i, run in enumerate(scripts)))

    async def listing(self) -> list[ServerLease]:
        """Every SMP server with subscriptions in any shard, counted in all, with its lease (home)."""
        counts: dict[SMPServer, int] = {}
        for store in self._stores:
            for server, c in (await store._servers.subscription_counts()).items():
                counts[server] = counts.get(server, 0) + c
        home = self._stores[0]
        numbers = [int(await home._servers.number(server, create=True) or 0) for server in counts]
        d = home.dataset
        async with d.pipeline() as pipe:
            for n in numbers:
                pipe.get(d.keys.g(f"ls:{n}"))
                pipe.pttl(d.keys.g(f"ls:{n}"))
            flat: Any = await pipe.execute() if numbers else []
        return [server_lease(server, numbers[i], c, flat[2 * i], flat[2 * i + 1])
                for i, (server, c) in enumerate(counts.items())]

    async def acquire(self, server: SMPServer, number: int, instance: str, ttl_s: float) -> Lease | None:
        lease = await self._home.acquire(server, number, instance, ttl_s)
        if lease is not None:
            await self._in_other_shards(self._mirror, [lease], instance, ms(ttl_s))
        return lease

    async def renew(self, leases: Sequence[Lease], instance: str, ttl_s: float) -> list[bool]:
        ok = await self._home.renew(leases, instance, ttl_s)
        held = [lease for lease, yes in zip(leases, ok, strict=True) if yes]
        await self._in_other_shards(self._mirror, held, instance, ms(ttl_s))
        return ok

    async def release(self, leases: Sequence[Lease], instance: str) -> int:
        n = await self._home.release(leases, instance)
        await self._in_other_shards(self._unmirror, leases, instance)
        return n

    async def release_instance(self, instance: str) -> int:
        """The home's (every server it numbers, which every leased one is); the copies expire with their time."""
        return await self._home.release_instance(instance)

    async def presence(self, instance: str, ttl_s: float) -> list[str]:
        return await self._home.presence(instance, ttl_s)

    async def hand_off(self, server: SMPServer, sub_id: bytes) -> None:
        await self._stores[0]._servers.number(server.normalized(), create=True)  # its first subscription may be
        await self._home.hand_off(server, sub_id)                                # in another shard

    async def take_handoffs(self, lease: Lease, instance: str, limit: int) -> list[bytes]:
        return await self._home.take_handoffs(lease, instance, limit)

    async def hold_job(self, job: str, instance: str, ttl_s: float, token: int = NO_LEASE) -> int | None:
        return await self._home.hold_job(job, instance, ttl_s, token)

    async def release_job(self, job: str, instance: str, token: int) -> bool:
        return await self._home.release_job(job, instance, token)
