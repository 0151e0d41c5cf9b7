"""Leases on SMP servers: which instance subscribes which SMP server (ntf_server/README.md "The parts").

Keys (``P`` = key prefix; ``<n>`` = the SMP server's number, servers.py):
  P ls:<n>   string  fencing token ‖ ' ' ‖ owner's instance id; expires (PX) unless its owner renews it
  P ls:n     counter bumped on every acquisition: the fencing tokens, increasing across all servers, so a
             later owner of a server always holds a greater token than any earlier one
  P lp       zset    instance id -> Unix ms until which it is alive (its presence, renewed with its leases)
  P lh:<n>   list    ids of subscriptions created (SNEW) on an instance that does not own server <n>: the
             owner pops them and subscribes them (a hand-off, so a queue is never subscribed by two
             connections at once); capped, as the owner pages every NEW subscription when it connects anyway
  P lj:<job> string  a *job lease*, as ``ls:<n>`` (its fencing token from the same counter ‖ ' ' ‖ instance):
             the one instance that runs a job once per data set (the census, token expiry; ntf_server/jobs.py)

A lease is taken only when absent (set-if-absent with expiry), renewed and released only by the holder of
the same value (token and instance), so an instance that lost its lease (expired while it was paused or cut
off from Redis) can neither renew nor release its successor's. Expiry uses the Redis server's clock (PX and
TIME), so the instances' clocks need not agree.

The value holds no secret: the instance id is random per start; server numbers reveal no address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.dataset import DataSet
from ntf_server.store.servers import ServerRegistry

HANDOFF_CAP: Final = 100_000  # ids kept per server for its owner; beyond, the oldest are dropped (still NEW)

_P: Final = "local P = ARGV[1]\n"

# ARGV: P NB n instance ttl_ms -> token | false (held by someone)
ACQUIRE: Final = _P + r"""
local k = P .. 'ls:' .. ARGV[3]
if redis.call('EXISTS', k) == 1 then return false end
local t = redis.call('INCR', P .. 'ls:n')
redis.call('SET', k, t .. ' ' .. ARGV[4], 'PX', ARGV[5])
return t
"""

# ARGV: P NB ttl_ms n token instance [n token instance ...] -> {1|0, ...} (0: not ours any more)
RENEW: Final = _P + r"""
local out = {}
for i = 4, #ARGV, 3 do
  local k = P .. 'ls:' .. ARGV[i]
  if redis.call('GET', k) == ARGV[i + 1] .. ' ' .. ARGV[i + 2] then
    redis.call('PEXPIRE', k, ARGV[3])
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
"""

# ARGV: P NB n token instance [...] -> leases released
RELEASE: Final = _P + r"""
local n = 0
for i = 3, #ARGV, 3 do
  local k = P .. 'ls:' .. ARGV[i]
  if redis.call('GET', k) == ARGV[i + 1] .. ' ' .. ARGV[i + 2] then n = n + redis.call('DEL', k) end
end
return n
"""

# ARGV: P NB instance ttl_ms (0: leaving) -> {instance, ...} alive now
PRESENCE: Final = _P + r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', P .. 'lp', '-inf', now)
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', P .. 'lp', now + tonumber(ARGV[4]), ARGV[3])
else
  redis.call('ZREM', P .. 'lp', ARGV[3])
end
return redis.call('ZRANGE', P .. 'lp', 0, -1)
"""

# ARGV: P NB -> {n, subscriptions, lease value or '', ms left or -2, ...} for every server with subscriptions
LIST: Final = _P + r"""
local out = {}
local counts = redis.call('HGETALL', P .. 'srv:count')
for i = 1, #counts, 2 do
  if tonumber(counts[i + 1]) > 0 then
    local k = P .. 'ls:' .. counts[i]
    table.insert(out, counts[i]); table.insert(out, counts[i + 1])
    table.insert(out, redis.call('GET', k) or ''); table.insert(out, redis.call('PTTL', k))
  end
end
return out
"""

# ARGV: P NB instance job... -> SMP servers' leases released (every lease of an instance known dead: its
# successor on one state directory, which the state lock proves); its job leases (``JOBS``) go too. Every
# server the data set numbers is looked at, not only those with subscriptions here: a sharded data set's
# leases live in its home shard, whatever shard their subscriptions are in (store/sharded_parts.py)
RELEASE_INSTANCE: Final = _P + r"""
local n, tail = 0, ' ' .. ARGV[3]
for _, srv in ipairs(redis.call('HKEYS', P .. 'srv:addr')) do
  local k = P .. 'ls:' .. srv
  local v = redis.call('GET', k)
  if v and string.sub(v, -#tail) == tail then n = n + redis.call('DEL', k) end
end
for i = 4, #ARGV do
  local k = P .. 'lj:' .. ARGV[i]
  local v = redis.call('GET', k)
  if v and string.sub(v, -#tail) == tail then redis.call('DEL', k) end
end
redis.call('ZREM', P .. 'lp', ARGV[3])
return n
"""

# ARGV: P NB n cap sub_id -> list length
HANDOFF: Final = _P + r"""
local k = P .. 'lh:' .. ARGV[3]
redis.call('RPUSH', k, ARGV[5])
redis.call('LTRIM', k, -tonumber(ARGV[4]), -1)
return redis.call('LLEN', k)
"""

# ARGV: P NB n token instance limit -> {sub_id, ...} (nothing unless the caller holds the lease)
TAKE_HANDOFF: Final = _P + r"""
local k = P .. 'lh:' .. ARGV[3]
if redis.call('GET', P .. 'ls:' .. ARGV[3]) ~= ARGV[4] .. ' ' .. ARGV[5] then return {} end
return redis.call('LPOP', k, tonumber(ARGV[6])) or {}
"""

# ARGV: P NB job instance ttl_ms token (0: not held) -> token | false (held by another). Held by this
# instance with this token: renewed; absent: taken with a fresh token (the caller then knows it lost it between).
HOLD_JOB: Final = _P + r"""
local k = P .. 'lj:' .. ARGV[3]
local v = redis.call('GET', k)
if v then
  if v ~= ARGV[6] .. ' ' .. ARGV[4] then return false end
  redis.call('PEXPIRE', k, ARGV[5])
  return tonumber(ARGV[6])
end
local t = redis.call('INCR', P .. 'ls:n')
redis.call('SET', k, t .. ' ' .. ARGV[4], 'PX', ARGV[5])
return t
"""

# ARGV: P NB job token instance -> 1 | 0 (not ours any more)
RELEASE_JOB: Final = _P + r"""
local k = P .. 'lj:' .. ARGV[3]
if redis.call('GET', k) == ARGV[4] .. ' ' .. ARGV[5] then return redis.call('DEL', k) end
return 0
"""


EXPIRY_JOB: Final = "token expiry"  # the jobs run once per data set (ntf_server/jobs.py), by their lease names
CENSUS_JOB: Final = "census"
JOBS: Final = (EXPIRY_JOB, CENSUS_JOB)

NO_LEASE: Final = 0  # never a fencing token (the counter starts at 1): the fence of a server not held


def fence(token: int, instance: str) -> str:
    """A lease's value in Redis: what renewals, releases and status writes (scripts.py SET_SUB_STATUS) compare."""
    return f"{token} {instance}"


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this instance holds: the fencing token proves it (checked by every renewal and release)."""

    server: SMPServer
    number: int
    token: int


@dataclass(frozen=True, slots=True)
class ServerLease:
    """One SMP server with subscriptions, as the listing shows it (owner None: free)."""

    server: SMPServer
    number: int
    subscriptions: int
    owner: str | None
    token: int | None
    expires_in_s: float | None


class RedisLeases:
    def __init__(self, data: DataSet, servers: ServerRegistry) -> None:
        self._d = data
        self._servers = servers
        self._acquire = data.script(ACQUIRE)
        self._renew = data.script(RENEW)
        self._release = data.script(RELEASE)
        self._release_instance = data.script(RELEASE_INSTANCE)
        self._presence = data.script(PRESENCE)
        self._list = data.script(LIST)
        self._handoff = data.script(HANDOFF)
        self._take = data.script(TAKE_HANDOFF)
        self._hold_job = data.script(HOLD_JOB)
        self._release_job = data.script(RELEASE_JOB)

    def __repr__(self) -> str:
        return f"<RedisLeases {self._d.keys.prefix}ls>"

    async def listing(self) -> list[ServerLease]:
        """Every SMP server with subscriptions, its subscription count and its lease (admin, the manager)."""
        flat: Any = await self._list()
        out = []
        for i in range(0, len(flat), 4):
            n = int(flat[i])
            server = await self._servers.address(n)
            if server is not None:
                out.append(server_lease(server, n, int(flat[i + 1]), flat[i + 2], flat[i + 3]))
        return out

    async def acquire(self, server: SMPServer, number: int, instance: str, ttl_s: float) -> Lease | None:
        """The server's lease for ``instance`` if nobody holds it, with a fresh fencing token."""
        t = await self._acquire(number, instance, ms(ttl_s))
        return Lease(server, number, int(t)) if t is not None else None

    async def renew(self, leases: Sequence[Lease], instance: str, ttl_s: float) -> list[bool]:
        """Extend each lease that is still ours by ``ttl_s``; False where it is not (expired, taken)."""
        if not leases:
            return []
        args = [a for lease in leases for a in (lease.number, lease.token, instance)]
        return [bool(x) for x in await self._renew(ms(ttl_s), *args)]

    async def release(self, leases: Sequence[Lease], instance: str) -> int:
        """Give these leases up (graceful stop); one another instance holds by now is left alone."""
        if not leases:
            return 0
        return int(await self._release(*[a for lease in leases for a in (lease.number, lease.token, instance)]))

    async def release_instance(self, instance: str) -> int:
        """Free every lease of ``instance`` (its SMP servers', counted, and its jobs'), which the caller knows to
        be dead (kill -9, then a restart on the same state directory), so its successor need not wait for them
        to expire."""
        return int(await self._release_instance(instance, *JOBS))

    async def presence(self, instance: str, ttl_s: float) -> list[str]:
        """Say ``instance`` is alive for ``ttl_s`` (0: it leaves now); the instances alive now."""
        return [bytes(x).decode() for x in await self._presence(instance, ms(ttl_s))]

    async def hand_off(self, server: SMPServer, sub_id: bytes) -> None:
        """A subscription created here on a server another instance (or nobody yet) subscribes."""
        number = await self._servers.number(server.normalized(), create=False)
        if number is not None:  # none: the subscription is gone with its server's last one
            await self._handoff(number, HANDOFF_CAP, sub_id)

    async def take_handoffs(self, lease: Lease, instance: str, limit: int) -> list[bytes]:
        """Subscription ids handed to the server's owner; empty unless ``lease`` is still held."""
        return [bytes(x) for x in await self._take(lease.number, lease.token, instance, limit)]

    async def hold_job(self, job: str, instance: str, ttl_s: float, token: int = NO_LEASE) -> int | None:
        """The job's lease for ``instance``: renewed when it holds it with ``token``, taken (a fresh token)
        when nobody does; None when another instance holds it."""
        t = await self._hold_job(job, instance, ms(ttl_s), token)
        return int(t) if t is not None else None

    async def release_job(self, job: str, instance: str, token: int) -> bool:
        """Give the job's lease up (graceful stop), unless another instance holds it by now."""
        return bool(await self._release_job(job, token, instance))


def server_lease(server: SMPServer, number: int, subscriptions: int, value: Any, pttl: Any) -> ServerLease:
    """A listing's row from the lease's value as stored (``fence``; empty or None: free) and its PTTL."""
    if not value:
        return ServerLease(server, number, subscriptions, None, None, None)
    tok, _, inst = bytes(value).decode().partition(" ")
    return ServerLease(server, number, subscriptions, inst, int(tok), max(int(pttl), 0) / 1000)


def ms(s: float) -> int:
    return max(int(s * 1000), 0)
