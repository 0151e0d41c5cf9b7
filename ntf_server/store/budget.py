"""Hidden-push budgets and deferred pushes in Redis: the decisions of push/policy.py, made atomically.

Keys (``P`` = key prefix; token keys as in keys.py):
  P b:<x>       hash   t = GCRA tat, h = when the last hidden push was decided (Unix s; ``%.17g``).
                       ``x`` is the token record's device-token index (keyed hash of provider + device
                       token, keys.py), so there is ONE budget per device token, shared by every
                       registration of it and by every instance, and a Redis dump shows no token. It expires
                       a day after the bucket is full again (``KEEP_S``): idle budgets vanish.
  P t{T}:dfr    hash   b = the pending push's body (a background body, encrypted for the device), r = the
                       rank of its notification list (policy.coalesce_rank), v = version (bumped per change)
  P dfr         zset   token id by due time of its pending push (the scheduler's index)

Each decision is one script, so the check and the consumption of the budget cannot be split by another
instance. The scripts mirror push/policy.py line by line (tests/store/test_budget_store.py runs both on the
same random histories and compares). ``now`` comes from the caller (injected clocks in tests; instances are
expected to run NTP, a skew of a second shifts a budget by a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis

from ntf_server.push.policy import Budget, CronDecision, Decision
from ntf_server.store.health import edge
from ntf_server.store.keys import Keys

KEEP_S: Final = 86400  # a budget (and its last-hidden time, for cron) outlives a full bucket by a day
PENDING_TTL_S: Final = 7 * 86400  # a pending push whose due entry was lost cannot stay forever
CLAIM_LEASE_S: Final = 60.0  # a claimed push not confirmed sent within this is claimed again (crash)

_PRELUDE: Final = r"""
local P = ARGV[1]
local now, rate, burst, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function f(n) return string.format('%.17g', n) end
local function T() return 3600 / rate end
local function avail(tat) return tat - (burst - 1) * T() end
local function conforms(tat) return rate > 0 and now >= avail(tat) end
local function bkey(tk) local x = redis.call('HGET', tk, 'x'); return x and (P .. 'b:' .. x) end
local function load(bk)
  local v = redis.call('HMGET', bk, 't', 'h')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
local function consume(bk, tat)
  local t = math.max(tat, now) + T()
  redis.call('HSET', bk, 't', f(t), 'h', f(now))
  redis.call('EXPIRE', bk, math.ceil(math.max(t - now, 0)) + keep)
end
"""

# KEYS: token hash, pending hash, due zset[, policy]. ARGV: P now rate burst keep overflow tid body rank
# pending_ttl[ policy_seen] -> {'POLICY', raw} | {'GONE'} | {'alert'|'hidden'|'drop'} | {'defer', due}
# With the policy key: the caller's budget came from the policy document ``policy_seen`` ('' = none); if
# the stored one differs, nothing is decided and the script answers the stored one (read it, retry). So the
# policy in effect costs no round trip of its own, and a change is used by the very next push.
MESSAGE: Final = _PRELUDE + r"""
if #KEYS >= 4 then
  local raw = redis.call('GET', KEYS[4]) or ''
  if raw ~= ARGV[11] then return {'POLICY', raw} end
end
if rate <= 0 then return {'alert'} end
local bk = bkey(KEYS[1])
if not bk then return {'GONE'} end
local tid = ARGV[7]
local tat = load(bk)
local pdue = redis.call('ZSCORE', KEYS[3], tid)
if conforms(tat) then
  consume(bk, tat)
  if pdue then redis.call('DEL', KEYS[2]); redis.call('ZREM', KEYS[3], tid) end
  return {'hidden'}
end
if ARGV[6] ~= 'defer' then return {ARGV[6]} end
local due = avail(tat)
if pdue then due = math.min(due, tonumber(pdue)) end
local rank = redis.call('HGET', KEYS[2], 'r')
if (not rank) or ARGV[9] >= rank then redis.call('HSET', KEYS[2], 'b', ARGV[8], 'r', ARGV[9]) end
redis.call('HINCRBY', KEYS[2], 'v', 1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[10]))
redis.call('ZADD', KEYS[3], f(due), tid)
return {'defer', f(due)}
"""

# KEYS: token hash, pending hash, due zset. ARGV: P now rate burst keep tid lease
# -> {'NOTDUE'} | {'GONE'} | {'LATER', due} | {'SEND', body, version}
CLAIM: Final = _PRELUDE + r"""
local tid = ARGV[6]
local pdue = redis.call('ZSCORE', KEYS[3], tid)
if (not pdue) or tonumber(pdue) > now then return {'NOTDUE'} end
local body = redis.call('HGET', KEYS[2], 'b')
local bk = bkey(KEYS[1])
if (not body) or (not bk) then
  redis.call('DEL', KEYS[2]); redis.call('ZREM', KEYS[3], tid)
  return {'GONE'}
end
if rate > 0 then
  local tat = load(bk)
  if not conforms(tat) then
    redis.call('ZADD', KEYS[3], f(avail(tat)), tid)
    return {'LATER', f(avail(tat))}
  end
  consume(bk, tat)
end
redis.call('ZADD', KEYS[3], f(now + tonumber(ARGV[7])), tid)
return {'SEND', body, redis.call('HGET', KEYS[2], 'v')}
"""

# KEYS: pending hash, due zset. ARGV: tid version ('' = whatever version) -> 1 if removed
DONE: Final = r"""
local v = redis.call('HGET', KEYS[1], 'v')
if ARGV[2] ~= '' and v and v ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: token hash. ARGV: P now rate burst keep interval_s -> 'GONE' | CronDecision value
CRON: Final = _PRELUDE + r"""
local bk = bkey(KEYS[1])
if not bk then return 'GONE' end
local tat, last = load(bk)
if last > now - tonumber(ARGV[6]) then return 'skip_recent' end
if rate <= 0 then return 'send' end
if conforms(tat) then consume(bk, tat); return 'send' end
return 'skip_budget'
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    body: bytes
    version: str


@dataclass(frozen=True, slots=True)
class PolicyChanged:
    raw: bytes | None  # the stored policy document (None: none)


Decided = tuple[Decision | None, float | None]


def _f(x: float) -> str:
    return repr(float(x))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class BudgetStore:
    """Budgets and pending pushes of one data set (``prefix`` as the store's)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._r = client
        self._p = prefix
        self._k = Keys(prefix, 1)  # token keys only: the bucket count does not enter them
        self.due_key = f"{prefix}dfr"
        self._message = client.register_script(MESSAGE)
        self._claim = client.register_script(CLAIM)
        self._done = client.register_script(DONE)
        self._cron = client.register_script(CRON)

    def __repr__(self) -> str:
        return f"<BudgetStore {self._p}b:*>"

    def pending_key(self, tid: bytes) -> str:
        return self._k.token(tid) + ":dfr"

    def _args(self, now: float, b: Budget) -> list[str | int | float | bytes]:
        return [self._p, _f(now), _f(b.hidden_per_hour), b.burst, KEEP_S]

    async def _eval(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        with edge():
            return await script(keys=keys, args=args)

    async def message(self, tid: bytes, b: Budget, now: float, body: bytes = b"", rank: str = "",
                      policy: tuple[str, bytes | None] | None = None) -> Decided | PolicyChanged:
        """Decide one message notification (policy.decide) and apply it; (None, None) if the token is gone.
        ``body``/``rank``: the pending push to keep when the decision is DEFER. ``policy``: (policy key, the
        stored document ``b`` was taken from): answered ``PolicyChanged`` when that is not the stored one."""
        keys = [self._k.token(tid), self.pending_key(tid), self.due_key]
        args = [*self._args(now, b), b.overflow.value, tid, body, rank, PENDING_TTL_S]
        if policy is not None:
            keys.append(policy[0])
            args.append(policy[1] or b"")
        res = await self._eval(self._message, keys, args)
        kind = _text(res[0])
        if kind == "POLICY":
            return PolicyChanged(bytes(res[1]) or None)
        if kind == "GONE":
            return None, None
        return Decision(kind), (float(res[1]) if len(res) > 1 else None)

    async def due(self, now: float, limit: int = 100) -> list[bytes]:
        """Token ids whose pending push is due (read only: ``claim`` decides who sends it)."""
        with edge():
            found = await self._r.zrangebyscore(self.due_key, "-inf", _f(now), 0, limit)
        return [t for t in found if isinstance(t, bytes)]

    async def next_due(self) -> float | None:
        with edge():
            first = await self._r.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def claim(self, tid: bytes, b: Budget, now: float,
                    lease_s: float = CLAIM_LEASE_S) -> Claimed | float | None:
        """Take the token's due pending push (policy.claim): the body to send, else the time to look again,
        else None (not due any more: another instance has it; or it is gone)."""
        keys = [self._k.token(tid), self.pending_key(tid), self.due_key]
        res = await self._eval(self._claim, keys, [*self._args(now, b), tid, _f(lease_s)])
        match _text(res[0]):
            case "SEND":
                return Claimed(bytes(res[1]), _text(res[2]))
            case "LATER":
                return float(res[1])
        return None

    async def done(self, tid: bytes, version: str = "") -> bool:
        """The claimed push was handled: forget it unless a newer notification joined it since."""
        return bool(await self._eval(self._done, [self.pending_key(tid), self.due_key], [tid, version]))

    async def cron(self, tid: bytes, b: Budget, now: float, interval_s: float) -> CronDecision | None:
        res = _text(await self._eval(self._cron, [self._k.token(tid)], [*self._args(now, b), _f(interval_s)]))
        return None if res == "GONE" else CronDecision(res)

    async def pending_count(self) -> int:
        with edge():
            return int(await self._r.zcard(self.due_key))

