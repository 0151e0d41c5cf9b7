"""The SMP-server, subscription and service scripts (Lua, atomic; the shared Lua is in scripts.py) and
`SubScripts`, their typed wrappers: one method per script, named and typed arguments, the raw reply
returned for servers.py, subscriptions.py and services.py to decode (each script's comment gives its
reply's shape)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ntf_server.store.dataset import DataSet
from ntf_server.store.scripts import LOOKUP, PRELUDE, TIES

# ARGV: P NB index_hex encoded_server -> server number
REGISTER_SERVER: Final = (
    PRELUDE
    + r"""
local n = redis.call('HGET', P .. 'srv:id', ARGV[3])
if n then return tonumber(n) end
n = redis.call('INCR', P .. 'srv:n')
redis.call('HSET', P .. 'srv:id', ARGV[3], n)
redis.call('HSET', P .. 'srv:addr', n, ARGV[4])
return n
"""
)


# The caps (0 = none) bound what one token can make the subscriber do: subscriptions, and
# distinct SMP servers (each one a connection), counted in `t{T}:srv` (server number -> subscriptions).
# ARGV: P NB tid sid srv record max_subs max_servers
#   -> {'CREATED'} | {'EXISTS', record} | {'NOTOKEN'} | {'QUOTA'}
CREATE_SUB: Final = (
    PRELUDE
    + r"""
local tid, sid, srv = ARGV[3], ARGV[4], ARGV[5]
local max_subs, max_servers = tonumber(ARGV[7]), tonumber(ARGV[8])
local tk = tkey(tid)
if redis.call('EXISTS', tk) == 0 then return {'NOTOKEN'} end
local r = string.sub(sid, 1, 20)
local bk = bkey(srv, r)
local v = redis.call('HGET', bk, r)
if v then return {'EXISTS', v} end
if max_subs > 0 and redis.call('HLEN', tk .. ':subs') >= max_subs then return {'QUOTA'} end
if max_servers > 0 and redis.call('HEXISTS', tk .. ':srv', srv) == 0
  and redis.call('HLEN', tk .. ':srv') >= max_servers then return {'QUOTA'} end
redis.call('HSET', bk, r, ARGV[6])
redis.call('HSET', tk .. ':subs', sid, srv)
redis.call('HINCRBY', tk .. ':srv', srv, 1)
redis.call('INCR', P .. 'n:sub')
redis.call('HINCRBY', P .. 'srv:count', srv, 1)
return {'CREATED'}
"""
)


# ARGV: P NB sid srv -> record | false
DELETE_SUB: Final = (
    PRELUDE
    + r"""
local sid, srv = ARGV[3], ARGV[4]
local v = redis.call('HGET', bkey(srv, string.sub(sid, 1, 20)), string.sub(sid, 1, 20))
if not v then return false end
return del_sub(rec_tid(v), sid, srv) or false
"""
)


# ARGV: P NB srv status assoc('0'|'1'|'-') from_kinds(',A,B,' or '') fence('': none) then r ... (assoc '-') or r md5 ...
#   (assoc '0'|'1': MD5 of each notifier id, to keep the server's service ties) -> number updated
SET_SUB_STATUS: Final = (
    PRELUDE
    + TIES
    + r"""
local srv, st, assoc, from, fence = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
-- the writer's lease on the server (store/leases.py: key P ls:<n>, value token ' ' instance), when it has one
if fence ~= '' and redis.call('GET', P .. 'ls:' .. srv) ~= fence then return -1 end
local step = 1
if assoc ~= '-' then step = 2 end
local n, dn, dh = 0, 0, nil
for i = 8, #ARGV, step do
  local r = ARGV[i]
  local bk = bkey(srv, r)
  local v = redis.call('HGET', bk, r)
  if v and (from == '' or string.find(from, ',' .. kind(rec_status(v)) .. ',', 1, true)) then
    local a0 = string.sub(v, 25, 25)
    local a = assoc
    if a == '-' then a = a0 end
    redis.call('HSET', bk, r, rec_tid(v) .. a .. string.char(#st) .. st .. rec_rest(v))
    n = n + 1
    if a ~= a0 then
      if a == '1' then dn = dn + 1 else dn = dn - 1 end
      if dh == nil then dh = ARGV[i + 1] else dh = xor16(dh, ARGV[i + 1]) end
    end
  end
end
add_ties(srv, dn, dh)
return n
"""
)


# ARGV: P NB tid ... -> a string of '1'/'0': which tokens are ACTIVE (one call however many: resubscription
#   reads one per token of a page-through, subscriptions.py)
TOKENS_ACTIVE: Final = (
    PRELUDE
    + r"""
local out = {}
for i = 3, #ARGV do
  if redis.call('HGET', tkey(ARGV[i]), 'st') == 'ACTIVE' then out[i - 2] = '1' else out[i - 2] = '0' end
end
return table.concat(out)
"""
)


# ARGV: P NB srv md5 ... -> 0. Tied subscriptions that were deleted (services.py: after the deletion).
UNTIE_DELETED: Final = (
    PRELUDE
    + TIES
    + r"""
local dh = nil
for i = 4, #ARGV do
  if dh == nil then dh = ARGV[i] else dh = xor16(dh, ARGV[i]) end
end
add_ties(ARGV[3], 3 - #ARGV, dh)
return 0
"""
)


# ARGV: P NB srv sealed_chain sealed_key -> {sealed_chain, sealed_key}: the server's service credentials,
#   these ones unless some were stored first (two instances creating them at once agree).
SET_SERVICE_CREDS: Final = (
    PRELUDE
    + r"""
local k = P .. 'svc:' .. ARGV[3]
if redis.call('HEXISTS', k, 'c') == 0 then redis.call('HSET', k, 'c', ARGV[4], 'k', ARGV[5]) end
return redis.call('HMGET', k, 'c', 'k')
"""
)


# ARGV: P NB srv r pick -> {sub found, record, server address, token found, packed token hash, its id}
LOOKUP_SUB: Final = (
    PRELUDE
    + LOOKUP
    + r"""
local srv, r = ARGV[3], ARGV[4]
local _, addr = hget_or_dummy(P .. 'srv:addr', srv, 'addr')
local sfound, v = hget_or_dummy(bkey(srv, r), r, 'sub')
local tfound, h, id = token_or_standin(rec_tid(v), tonumber(ARGV[5]))
if sfound == 0 then tfound = 0 end
return {sfound, v, addr, tfound, h, id}
"""
)


# ARGV: P NB tid server_index r pick -> {token found, packed token hash, its id, server number (0: none),
#   sub found, record}
LOOKUP_SNEW: Final = (
    PRELUDE
    + LOOKUP
    + r"""
local tid, idx, r = ARGV[3], ARGV[4], ARGV[5]
local tfound, h, id = token_or_standin(tid, tonumber(ARGV[6]))
local n = redis.call('HGET', P .. 'srv:id', idx) or '0'
local sfound, v = hget_or_dummy(bkey(n, r), r, 'sub')
return {tfound, h, id, tonumber(n), sfound, v}
"""
)


class SubScripts:
    """The scripts above, registered on the data set's client; each call goes through its health switch."""

    def __init__(self, data: DataSet) -> None:
        s = data.script
        self._register, self._create, self._delete = s(REGISTER_SERVER), s(CREATE_SUB), s(DELETE_SUB)
        self._status, self._active, self._untie = s(SET_SUB_STATUS), s(TOKENS_ACTIVE), s(UNTIE_DELETED)
        self._creds, self._lookup_sub, self._lookup_snew = s(SET_SERVICE_CREDS), s(LOOKUP_SUB), s(LOOKUP_SNEW)

    def __repr__(self) -> str:
        return "<SubScripts>"

    async def register_server(self, index_hex: str, encoded: bytes) -> Any:
        return await self._register(index_hex, encoded)

    async def create(self, tid: bytes, sid: bytes, srv: int, record: bytes, max_subs: int, max_servers: int) -> Any:
        return await self._create(tid, sid, srv, record, max_subs, max_servers)

    async def delete(self, sid: bytes, srv: int) -> Any:
        return await self._delete(sid, srv)

    async def set_status(self, srv: int, status: str, assoc: str, from_kinds: str, fence: str,
                         items: Iterable[bytes]) -> Any:
        """`assoc` '-' (keep): `items` are r ...; '0'/'1': r, MD5(notifier id), ... (SET_SUB_STATUS)."""
        return await self._status(srv, status, assoc, from_kinds, fence, *items)

    async def tokens_active(self, tids: Iterable[bytes]) -> Any:
        return await self._active(*tids)

    async def untie_deleted(self, srv: int, md5s: Iterable[bytes]) -> Any:
        return await self._untie(srv, *md5s)

    async def set_service_creds(self, srv: int, sealed_chain: bytes, sealed_key: bytes) -> Any:
        return await self._creds(srv, sealed_chain, sealed_key)

    async def lookup_sub(self, srv: int, r: bytes, pick: int) -> Any:
        return await self._lookup_sub(srv, r, pick)

    async def lookup_snew(self, tid: bytes, server_index: str, r: bytes, pick: int) -> Any:
        return await self._lookup_snew(tid, server_index, r, pick)
