"""The notices' scripts (store/notices.py tells what they do) and `NoticeScripts`, their typed wrappers:
one method per script, named and typed arguments, the raw reply returned for notices.py to decode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ntf_server.policy_types import Budget
from ntf_server.store.budget import GCRA, KEEP_S, PENDING_TTL_S
from ntf_server.store.dataset import DataSet
from ntf_server.store.outbox import ADD_LUA
from ntf_server.store.records import MAX_NOTICES, PushProvider
from ntf_server.store.scripts import LOOKUP, PRELUDE

# ARGV: P NB now first_ms keep due max policy_key policy_seen check pending_ttl (due: of outbox entries, 0: none)
#       (provider rate burst overflow) x 4, then (srv r sid value) per notice
# -> {'POLICY', stored} | {'OK', {result...}, {tid, packed token, ...}}; a result is 'N' (no subscription),
#    'I' (token not ACTIVE) or {decision, tid, outbox id, due, (srv, record, value, sid) x <= 6}
NOTIFY: Final = PRELUDE + LOOKUP + GCRA + ADD_LUA + r"""
local now, first_ms, keep, ob_due, max = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
if ARGV[10] == '1' then
  local raw = redis.call('GET', ARGV[8]) or ''
  if raw ~= ARGV[9] then return {'POLICY', raw} end
end
local ttl = tonumber(ARGV[11])
local budgets = {}
for i = 12, 27, 4 do budgets[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]} end
local results, tokens, seen = {}, {}, {}
for i = 28, #ARGV, 4 do
  local srv, r, sid, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local v = srv ~= '0' and redis.call('HGET', bkey(srv, r), r)
  local tid = v and rec_tid(v)
  local tk = tid and tkey(tid)
  if not v then
    table.insert(results, 'N')
  elseif redis.call('HGET', tk, 'st') ~= 'ACTIVE' then
    table.insert(results, 'I')
  else
    if redis.call('HSET', tk .. ':ln', sid, value) == 1 then redis.call('INCR', P .. 'n:ln') end
    if not seen[tid] then
      seen[tid] = true
      table.insert(tokens, tid); table.insert(tokens, pack(redis.call('HGETALL', tk)))
    end
    local b = budgets[redis.call('HGET', tk, 'p')]
    local rate, burst, decision, due = b[1], b[2], 'alert', ''
    if rate > 0 then
      local bk = P .. 'b:' .. redis.call('HGET', tk, 'x')
      local tat = bload(bk)
      local pdue = redis.call('ZSCORE', P .. 'dfr', tid)
      if conforms(tat, now, rate, burst) then
        bconsume(bk, tat, now, rate, keep)
        if pdue then redis.call('DEL', tk .. ':dfr'); redis.call('ZREM', P .. 'dfr', tid) end
        decision = 'hidden'
      elseif b[3] == 'defer' then
        local at = avail(tat, rate, burst)
        if pdue then at = math.min(at, tonumber(pdue)) end
        redis.call('HINCRBY', tk .. ':dfr', 'v', 1)
        redis.call('EXPIRE', tk .. ':dfr', ttl)
        redis.call('ZADD', P .. 'dfr', f(at), tid)
        decision, due = 'defer', f(at)
      else
        decision = b[3]
      end
    end
    local out = {decision, tid, 0, due}
    if decision == 'alert' or decision == 'hidden' then
      if ob_due > 0 then out[3] = ob_add(string.sub(decision, 1, 1), tid, first_ms, sid .. value, ob_due) end
      newest(tk, sid, max, out)
    else
      newest(tk, sid, max, {})
    end
    table.insert(results, out)
  end
end
return {'OK', results, tokens}
"""

# The token's pending push, due at `now`: claimed (due again one lease later, so one instance sends it) and
# its budget consumed, or rescheduled when the budget went elsewhere meanwhile.
# ARGV: P NB tid now rate burst keep lease max -> {'NOTDUE'} | {'GONE'} | {'LATER', due} |
#   {'SEND', version, packed token, (srv, record, value, sid) x <= 6}
CLAIM: Final = PRELUDE + LOOKUP + GCRA + r"""
local tid, now, rate, burst, keep = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local tk = tkey(tid)
local pdue = redis.call('ZSCORE', P .. 'dfr', tid)
if (not pdue) or tonumber(pdue) > now then return {'NOTDUE'} end
local version = redis.call('HGET', tk .. ':dfr', 'v')
if (not version) or redis.call('HGET', tk, 'st') ~= 'ACTIVE' then
  redis.call('DEL', tk .. ':dfr'); redis.call('ZREM', P .. 'dfr', tid)
  return {'GONE'}
end
if rate > 0 then
  local bk = P .. 'b:' .. redis.call('HGET', tk, 'x')
  local tat = bload(bk)
  if not conforms(tat, now, rate, burst) then
    redis.call('ZADD', P .. 'dfr', f(avail(tat, rate, burst)), tid)
    return {'LATER', f(avail(tat, rate, burst))}
  end
  bconsume(bk, tat, now, rate, keep)
end
redis.call('ZADD', P .. 'dfr', f(now + tonumber(ARGV[8])), tid)
local out = {'SEND', version, pack(redis.call('HGETALL', tk))}
return newest(tk, '', tonumber(ARGV[9]), out)
"""

# A push sent again from the outbox: the token as it is now, its newest notifications and the record of the
# cause's subscription (gone: '').
# ARGV: P NB tid cause_sid cause_srv max -> {packed token ('' if gone), cause record, (srv, record, value, sid)...}
FOR_RETRY: Final = PRELUDE + LOOKUP + r"""
local tid, sid = ARGV[3], ARGV[4]
local tk = tkey(tid)
local h = redis.call('HGETALL', tk)
if #h == 0 then return {''} end
local rec = ''
if sid ~= '' then rec = redis.call('HGET', bkey(ARGV[5], string.sub(sid, 1, 20)), string.sub(sid, 1, 20)) or '' end
return newest(tk, '', tonumber(ARGV[6]), {pack(h), rec})
"""


@dataclass(frozen=True, slots=True)
class Located:
    """One notice as NOTIFY takes it: its subscription's server number (0: unknown server), r and sub id,
    and the last-notification value to store (codec.py ``encode_ln``)."""

    srv: int
    r: bytes
    sid: bytes
    value: bytes


def _budget_args(budgets: Mapping[PushProvider, Budget]) -> list[Any]:
    out: list[Any] = []
    for p in PushProvider:
        b = budgets[p]
        out += [p.value, repr(float(b.hidden_per_hour)), b.burst, b.overflow.value]
    return out


class NoticeScripts:
    """The scripts above, registered on the data set's client; each call goes through its health switch."""

    def __init__(self, data: DataSet) -> None:
        self._notify, self._claim, self._for_retry = data.script(NOTIFY), data.script(CLAIM), data.script(FOR_RETRY)

    def __repr__(self) -> str:
        return "<NoticeScripts>"

    async def notify(self, notices: Sequence[Located], budgets: Mapping[PushProvider, Budget], now: float,
                     first_ms: str, outbox_due: float | None, policy: tuple[str, bytes | None] | None) -> Any:
        """``outbox_due`` None: no outbox entries; ``policy`` None: the stored policy is not checked."""
        args: list[Any] = [repr(now), first_ms, KEEP_S, "0" if outbox_due is None else repr(outbox_due),
                           MAX_NOTICES, policy[0] if policy else "", (policy[1] or b"") if policy else b"",
                           "1" if policy else "0", PENDING_TTL_S, *_budget_args(budgets)]
        for n in notices:
            args += [n.srv, n.r, n.sid, n.value]
        return await self._notify(*args)

    async def claim(self, tid: bytes, b: Budget, now: float, lease_s: float) -> Any:
        return await self._claim(tid, repr(now), repr(float(b.hidden_per_hour)), b.burst, KEEP_S, repr(lease_s),
                                 MAX_NOTICES)

    async def for_retry(self, tid: bytes, cause_sid: bytes, cause_srv: int) -> Any:
        return await self._for_retry(tid, cause_sid, cause_srv, MAX_NOTICES)
