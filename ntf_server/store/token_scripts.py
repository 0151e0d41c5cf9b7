"""The token scripts (Lua: every multi-key change of a token is one atomic script; the shared Lua is in
scripts.py) and `TokenScripts`, their typed wrappers: one method per script, named and typed arguments,
the raw reply returned for tokens.py to decode (each script's comment gives its reply's shape)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ntf_server.store.codec import Fields
from ntf_server.store.dataset import DataSet
from ntf_server.store.scripts import LOOKUP, PRELUDE

# `P tv` (field x:vh -> token id) finds the token of a (provider, device token, verify key) without reading
# the device token's other registrations; `max_per_device` (0 = no cap) bounds how many one device token
# may have (each TNEW with a new verify key is one), so a TVFY deleting the others stays small.
# ARGV: P NB tid x vh day created max_per_device field value ...
#   -> 'OK' | 'SAME' | 'DUPLICATE' | 'CLASH' | 'QUOTA'
CREATE_TOKEN: Final = (
    PRELUDE
    + r"""
local tid, x, vh, day, created = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local max_per_device = tonumber(ARGV[8])
local tk = tkey(tid)
if redis.call('EXISTS', tk) == 1 then
  if redis.call('HGET', tk, 'vh') == vh and redis.call('HGET', tk, 'x') == x then return 'SAME' end
  return 'CLASH'
end
if redis.call('HEXISTS', P .. 'tv', x .. ':' .. vh) == 1 then return 'DUPLICATE' end
if max_per_device > 0 and redis.call('HLEN', P .. 'dt:' .. x) >= max_per_device then return 'QUOTA' end
redis.call('HSET', tk, unpack(ARGV, 9))
redis.call('HSET', P .. 'dt:' .. x, tid, vh)
redis.call('HSET', P .. 'tv', x .. ':' .. vh, tid)
redis.call('ZADD', P .. 'used', day, tid)
if kind(redis.call('HGET', tk, 'st')) ~= 'ACTIVE' then redis.call('ZADD', P .. 'unv', created, tid) end
return 'OK'
"""
)


# ARGV: P NB tid newx max_per_device field value ... (fields: p dt rc st pm sm)
#   -> 'OK' | 'NOTOKEN' | 'DUPLICATE' | 'QUOTA'
REPLACE_TOKEN: Final = (
    PRELUDE
    + r"""
local tid, newx, max_per_device = ARGV[3], ARGV[4], tonumber(ARGV[5])
local tk = tkey(tid)
local old = redis.call('HGET', tk, 'x')
if not old then return 'NOTOKEN' end
if old ~= newx then
  local vh = redis.call('HGET', tk, 'vh')
  if redis.call('HEXISTS', P .. 'tv', newx .. ':' .. vh) == 1 then return 'DUPLICATE' end
  if max_per_device > 0 and redis.call('HLEN', P .. 'dt:' .. newx) >= max_per_device then return 'QUOTA' end
  redis.call('HDEL', P .. 'dt:' .. old, tid)
  redis.call('HSET', P .. 'dt:' .. newx, tid, vh)
  redis.call('HDEL', P .. 'tv', old .. ':' .. vh)
  redis.call('HSET', P .. 'tv', newx .. ':' .. vh, tid)
end
redis.call('HSET', tk, 'x', newx, unpack(ARGV, 6))
return 'OK'
"""
)


# sm: the MAC of the new status (codec.py), written with it.
# ARGV: P NB tid new_status sm mode('only'|'except') kind ...  -> {changed, status} | false
SET_TOKEN_STATUS: Final = (
    PRELUDE
    + r"""
local tk = tkey(ARGV[3])
local st = redis.call('HGET', tk, 'st')
if not st then return false end
local listed = false
for i = 7, #ARGV do if ARGV[i] == kind(st) then listed = true end end
if (ARGV[6] == 'only') == listed then
  redis.call('HSET', tk, 'st', ARGV[4], 'sm', ARGV[5])
  if kind(ARGV[4]) == 'ACTIVE' then redis.call('ZREM', P .. 'unv', ARGV[3]) end
  return {1, ARGV[4]}
end
return {0, st}
"""
)


# ARGV: P NB tid sm(ACTIVE) allowed_kind ... -> {'OK'|'DENIED'|'NOTOKEN', {sid, srv, record, ...}}
ACTIVATE_TOKEN: Final = (
    PRELUDE
    + r"""
local tid = ARGV[3]
local tk = tkey(tid)
local st = redis.call('HGET', tk, 'st')
if not st then return {'NOTOKEN', {}} end
local ok = false
for i = 5, #ARGV do if ARGV[i] == kind(st) then ok = true end end
if not ok then return {'DENIED', {}} end
redis.call('HSET', tk, 'st', 'ACTIVE', 'sm', ARGV[4])
redis.call('ZREM', P .. 'unv', tid)
local others = redis.call('HKEYS', P .. 'dt:' .. redis.call('HGET', tk, 'x'))
local out = {}
for _, other in ipairs(others) do
  if other ~= tid then del_token(other, out) end
end
return {'OK', out}
"""
)


# ARGV: P NB tid -> {found(0|1), {sid, srv, record, ...}}
DELETE_TOKEN: Final = (
    PRELUDE
    + r"""
local out = {}
local found = del_token(ARGV[3], out)
return {found and 1 or 0, out}
"""
)


# ARGV: P NB cutoff_day limit -> {{tid...}, {sid, srv, record, ...}}
EXPIRE_TOKENS: Final = (
    PRELUDE
    + r"""
local tids = redis.call('ZRANGEBYSCORE', P .. 'used', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, tid in ipairs(tids) do del_token(tid, out) end
return {tids, out}
"""
)


# Tokens never verified (still in `unv`) created at or before the cutoff; an entry whose token is gone or
# ACTIVE (cannot happen: activation and deletion remove it) is dropped from the index, nothing else.
# ARGV: P NB cutoff limit -> {scanned, {tid...}, {sid, srv, record, ...}}
EXPIRE_UNVERIFIED: Final = (
    PRELUDE
    + r"""
local tids = redis.call('ZRANGEBYSCORE', P .. 'unv', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local out, gone = {}, {}
for _, tid in ipairs(tids) do
  local st = redis.call('HGET', tkey(tid), 'st')
  if st and kind(st) ~= 'ACTIVE' then
    del_token(tid, out)
    table.insert(gone, tid)
  else
    redis.call('ZREM', P .. 'unv', tid)
  end
end
return {#tids, gone, out}
"""
)


# ARGV: P NB tid interval_min due -> 1 | 0 (no token)
SET_CRON: Final = (
    PRELUDE
    + r"""
local tid = ARGV[3]
local tk = tkey(tid)
if redis.call('EXISTS', tk) == 0 then return 0 end
redis.call('HSET', tk, 'ci', ARGV[4])
if tonumber(ARGV[4]) > 0 then redis.call('ZADD', P .. 'cron', ARGV[5], tid)
else redis.call('ZREM', P .. 'cron', tid) end
return 1
"""
)


# ARGV: P NB tid now -> 1 | 0
CRON_SENT: Final = (
    PRELUDE
    + r"""
local tid = ARGV[3]
local tk = tkey(tid)
local ci = redis.call('HGET', tk, 'ci')
if not ci then return 0 end
redis.call('HSET', tk, 'cs', ARGV[4])
if tonumber(ci) > 0 then redis.call('ZADD', P .. 'cron', tonumber(ARGV[4]) + 60 * tonumber(ci), tid) end
return 1
"""
)


# ARGV: P NB tid day -> 1 if changed
TOUCH_TOKEN: Final = (
    PRELUDE
    + r"""
local tid = ARGV[3]
local tk = tkey(tid)
local ud = redis.call('HGET', tk, 'ud')
if (not ud) or ud == ARGV[4] then return 0 end
redis.call('HSET', tk, 'ud', ARGV[4])
redis.call('ZADD', P .. 'used', ARGV[4], tid)
return 1
"""
)


# The token of a repeated TNEW (its auth is already checked with the key it names, so there is nothing to
# hide by timing): one index read, one record. ARGV: P NB x:vh -> {found(0|1), packed token hash, its id}
LOOKUP_TNEW: Final = (
    PRELUDE
    + LOOKUP
    + r"""
local tid = redis.call('HGET', P .. 'tv', ARGV[3])
if not tid then return {0, '', ''} end
local h = redis.call('HGETALL', tkey(tid))
if #h == 0 then return {0, '', ''} end
return {1, pack(h), tid}
"""
)


# ARGV: P NB tid pick -> {found(0|1), packed token hash, its id}
LOOKUP_TOKEN: Final = (
    PRELUDE
    + LOOKUP
    + r"""
local found, h, id = token_or_standin(ARGV[3], tonumber(ARGV[4]))
return {found, h, id}
"""
)


class TokenScripts:
    """The scripts above, registered on the data set's client; each call goes through its health switch."""

    def __init__(self, data: DataSet) -> None:
        s = data.script
        self._create, self._replace, self._status = s(CREATE_TOKEN), s(REPLACE_TOKEN), s(SET_TOKEN_STATUS)
        self._activate, self._delete, self._touch = s(ACTIVATE_TOKEN), s(DELETE_TOKEN), s(TOUCH_TOKEN)
        self._expire, self._expire_unv = s(EXPIRE_TOKENS), s(EXPIRE_UNVERIFIED)
        self._set_cron, self._cron_sent = s(SET_CRON), s(CRON_SENT)
        self._lookup_tnew, self._lookup = s(LOOKUP_TNEW), s(LOOKUP_TOKEN)

    def __repr__(self) -> str:
        return "<TokenScripts>"

    async def create(self, tid: bytes, x: str, vh: bytes, day: int, created: int, max_per_device: int,
                     fields: Fields) -> Any:
        return await self._create(tid, x, vh, day, created, max_per_device, *fields)

    async def replace(self, tid: bytes, new_x: str, max_per_device: int, fields: Fields) -> Any:
        return await self._replace(tid, new_x, max_per_device, *fields)

    async def set_status(self, tid: bytes, status: str, status_mac: bytes, *, only: bool,
                         kinds: Iterable[str]) -> Any:
        """`only`: change it only from one of `kinds`; else only from any other kind."""
        return await self._status(tid, status, status_mac, "only" if only else "except", *kinds)

    async def activate(self, tid: bytes, status_mac: bytes, allowed_kinds: Iterable[str]) -> Any:
        return await self._activate(tid, status_mac, *allowed_kinds)

    async def delete(self, tid: bytes) -> Any:
        return await self._delete(tid)

    async def expire(self, cutoff_day: int, limit: int) -> Any:
        return await self._expire(cutoff_day, limit)

    async def expire_unverified(self, cutoff: int, limit: int) -> Any:
        return await self._expire_unv(cutoff, limit)

    async def set_cron(self, tid: bytes, interval_min: int, due: int) -> Any:
        return await self._set_cron(tid, interval_min, due)

    async def cron_sent(self, tid: bytes, now: int) -> Any:
        return await self._cron_sent(tid, now)

    async def touch(self, tid: bytes, day: int) -> Any:
        return await self._touch(tid, day)

    async def lookup_tnew(self, field: bytes) -> Any:
        return await self._lookup_tnew(field)

    async def lookup(self, tid: bytes, pick: int) -> Any:
        return await self._lookup(tid, pick)
