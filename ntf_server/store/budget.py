"""Hidden-push budgets and deferred pushes in Redis: the decisions of push/policy.py, made atomically.

Keys (``P`` = key prefix; token keys as in keys.py):
  P b:<x>       hash   t = GCRA tat, h = when the last hidden push was decided (Unix s; ``%.17g``).
                       ``x`` is the token record's device-token index (keyed hash of provider + device
                       token, keys.py), so there is ONE budget per device token, shared by every
                       registration of it and by every instance, and a Redis dump shows no token. It expires
                       a day after the bucket is full again (``KEEP_S``): idle budgets vanish.
  P t{T}:dfr    hash   v = version of the token's pending (deferred) push, bumped by every notice that
                       joins it; the push itself is built when it is claimed, from the token's newest <= 6
  P dfr         zset   token id by due time of its pending push (the scheduler's index)
  P t{T}:cr     string the time a periodic push was decided (its budget spent), until it is confirmed sent
  P t{T}:crc    string the claim of the token's periodic push by one sender; expires after the claim lease

Each decision is one script, so the check and the consumption of the budget cannot be split by another
instance. The scripts mirror push/policy.py line by line (tests/store/test_budget_store.py runs both on the
same random histories and compares). ``now`` comes from the caller (injected clocks in tests; instances are
expected to run NTP, a skew of a second shifts a budget by a second).
"""

from __future__ import annotations

from typing import Any, Final

from ntf_server.policy_types import Budget, CronDecision
from ntf_server.store.dataset import DataSet
from ntf_server.store.keys import Keys

KEEP_S: Final = 86400  # a budget (and its last-hidden time, for cron) outlives a full bucket by a day
PENDING_TTL_S: Final = 7 * 86400  # a pending push whose due entry was lost cannot stay forever
CLAIM_LEASE_S: Final = 60.0  # a claimed push not confirmed sent within this is claimed again (crash)

# The GCRA of push/policy.py in Lua, with the budget's parameters passed in: shared by the decision of a
# notice (store/notices.py NOTIFY), the claim of a deferred push and the periodic push's decision.
GCRA: Final = r"""
local function f(n) return string.format('%.17g', n) end
local function T(rate) return 3600 / rate end
local function avail(tat, rate, burst) return tat - (burst - 1) * T(rate) end
local function conforms(tat, now, rate, burst) return rate > 0 and now >= avail(tat, rate, burst) end
local function bkey_of(P, tk) local x = redis.call('HGET', tk, 'x'); return x and (P .. 'b:' .. x) end
local function bload(bk)
  local v = redis.call('HMGET', bk, 't', 'h')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
local function bconsume(bk, tat, now, rate, keep)
  local t = math.max(tat, now) + T(rate)
  redis.call('HSET', bk, 't', f(t), 'h', f(now))
  redis.call('EXPIRE', bk, math.ceil(math.max(t - now, 0)) + keep)
end
"""

# KEYS: pending hash, due zset. ARGV: tid version ('' = whatever version) -> 1 if removed
DONE: Final = r"""
local v = redis.call('HGET', KEYS[1], 'v')
if ARGV[2] ~= '' and v and v ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: token hash, its periodic push decided and not yet confirmed sent (t{T}:cr, the decision's time), its
# claim (t{T}:crc, the claimer's id, expiring after the lease). ARGV: P now rate burst keep interval_s lease_ms
# claimer -> 'GONE' | 'BUSY' (claimed by a live sender) | 'SENT' (sent since the caller's scan) | CronDecision value.
# lease_ms 0: the decision alone (no claim; the comparison with push/policy.py in the tests).
CRON: Final = GCRA + r"""
local P, now, rate, burst, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lease = tonumber(ARGV[7])
if lease > 0 and redis.call('EXISTS', KEYS[3]) == 1 then return 'BUSY' end
local bk = bkey_of(P, KEYS[1])
if not bk then return 'GONE' end
local decision
if lease > 0 then
  local cs = tonumber(redis.call('HGET', KEYS[1], 'cs') or '-1')
  local pending = redis.call('GET', KEYS[2])
  if pending and cs >= math.floor(tonumber(pending)) then redis.call('DEL', KEYS[2]); pending = false end
  if pending then
    decision = 'send'  -- decided (budget spent) by a sender that died before confirming it: sent again
  elseif cs > now - tonumber(ARGV[6]) then
    return 'SENT'  -- another instance sent it since this caller's scan
  end
end
if not decision then
  local tat, last = bload(bk)
  if last > now - tonumber(ARGV[6]) then return 'skip_recent' end
  if rate <= 0 then decision = 'send'
  elseif conforms(tat, now, rate, burst) then bconsume(bk, tat, now, rate, keep); decision = 'send'
  else return 'skip_budget' end
  if lease > 0 then redis.call('SET', KEYS[2], f(now), 'EX', keep) end
end
if lease > 0 then redis.call('SET', KEYS[3], ARGV[8], 'PX', lease) end
return decision
"""

# KEYS: t{T}:cr, t{T}:crc. ARGV: claimer -> 1 if its claim was still held
CRON_DONE: Final = r"""
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
"""


def _f(x: float) -> str:
    return repr(float(x))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class BudgetStore:
    """Budgets and pending pushes of one data set (``prefix`` as the store's): the periodic push's decision
    and the deferred pushes' index. A notice's decision and a deferred push's claim read the token's
    notifications too, so they are the notices' scripts (store/notices.py)."""

    def __init__(self, dataset: DataSet) -> None:
        """``dataset``: the store's (``RedisStore.dataset``): every call passes its health switch."""
        prefix = dataset.keys.prefix
        self._d = dataset
        self._p = prefix
        self._k = Keys(prefix, 1)  # token keys only: the bucket count does not enter them
        self.due_key = f"{prefix}dfr"
        self._done = dataset.keyed_script(DONE)
        self._cron = dataset.keyed_script(CRON)
        self._cron_done = dataset.keyed_script(CRON_DONE)

    def __repr__(self) -> str:
        return f"<BudgetStore {self._p}b:*>"

    def pending_key(self, tid: bytes) -> str:
        return self._k.token(tid) + ":dfr"

    def due_key_of(self, tid: bytes) -> str:
        """The due index holding the token's pending push (one per shard of a sharded data set)."""
        return self.due_key

    async def due(self, now: float, limit: int = 100) -> list[bytes]:
        """Token ids whose pending push is due (read only: the claim decides who sends it)."""
        found = await self._d.call(self._d.r.zrangebyscore, self.due_key, "-inf", _f(now), 0, limit)
        return [t for t in found if isinstance(t, bytes)]

    async def next_due(self) -> float | None:
        with self._d.guard():
            first = await self._d.r.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def done(self, tid: bytes, version: str = "") -> bool:
        """The claimed push was handled: forget it unless a newer notification joined it since."""
        return bool(await self._done([self.pending_key(tid), self.due_key], [tid, version]))

    async def cron(self, tid: bytes, b: Budget, now: float, interval_s: float, *, lease_s: float = 0.0,
                   claimer: str = "") -> CronDecision | None:
        """The periodic push's decision (policy.cron_decide). With ``lease_s``, a SEND is also a claim: other
        instances get None until ``cron_done`` or the lease's end, and a SEND whose sender died before
        ``cron_done`` is answered SEND again (at least once). None: the token is gone, or another instance
        sends (or sent) this push."""
        keys = [self._k.token(tid), *self._cron_keys(tid)]
        args = [self._p, _f(now), _f(b.hidden_per_hour), b.burst, KEEP_S, _f(interval_s), int(lease_s * 1000),
                claimer]
        res = _text(await self._cron(keys, args))
        return None if res in ("GONE", "BUSY", "SENT") else CronDecision(res)

    async def cron_done(self, tid: bytes, claimer: str) -> bool:
        """The claimed periodic push was handled (sent, or handed to the outbox): the claim ends."""
        return bool(await self._cron_done(self._cron_keys(tid), [claimer]))

    def _cron_keys(self, tid: bytes) -> list[str]:
        return [self._k.token(tid) + ":cr", self._k.token(tid) + ":crc"]
