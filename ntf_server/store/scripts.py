"""Lua scripts: every change that touches more than one key is exactly one script, so it is atomic
(Redis runs a script to completion or not at all; a dropped connection cannot split it).

Every script gets ARGV[1] = key prefix, ARGV[2] = buckets per SMP server; the shared prelude rebuilds key
names exactly as `keys.py` does. Scripts compute the keys of cascaded deletions themselves (they are only
known after reading the token's subscription list). KEYS holds only the data set's routing key
(`Keys.route`): in cluster mode every key of the data set is in that key's slot (store/client.py), so a
cluster accepts every script; spreading a data set over several slots would need every touched key
declared and each script's keys in one slot (README "Cluster mode").
"""

from __future__ import annotations

from typing import Final

_PRELUDE: Final = r"""
local P = ARGV[1]
local NB = tonumber(ARGV[2])
local function hex(s)  -- one format call (a gsub callback per byte costs ~0.5 µs each)
  return string.format(string.rep('%02x', #s), string.byte(s, 1, -1))
end
local function tkey(tid) return P .. 't{' .. hex(tid) .. '}' end
local function bkey(srv, r)
  return P .. 's:' .. srv .. ':' .. ((string.byte(r, 1) * 256 + string.byte(r, 2)) % NB)
end
local function kind(st) return string.match(st, '^[A-Z]+') end
local function rec_tid(v) return string.sub(v, 1, 24) end
local function rec_status(v) return string.sub(v, 27, 26 + string.byte(v, 26)) end
local function rec_rest(v) return string.sub(v, 27 + string.byte(v, 26)) end
-- Remove one subscription of token tid and its last notification; returns its record or nil.
local function del_sub(tid, sid, srv)
  local tk = tkey(tid)
  redis.call('HDEL', tk .. ':subs', sid)
  if redis.call('HDEL', tk .. ':ln', sid) == 1 then redis.call('DECR', P .. 'n:ln') end
  local r = string.sub(sid, 1, 20)
  local bk = bkey(srv, r)
  local v = redis.call('HGET', bk, r)
  if (not v) or rec_tid(v) ~= tid then return nil end
  redis.call('HDEL', bk, r)
  redis.call('DECR', P .. 'n:sub')
  redis.call('HINCRBY', P .. 'srv:count', srv, -1)
  -- per-token server counts (CREATE_SUB's cap); absent for subscriptions stored before they existed
  if redis.call('HINCRBY', tk .. ':srv', srv, -1) <= 0 then redis.call('HDEL', tk .. ':srv', srv) end
  return v
end
-- Appends server number, record, value, sub id of one last notification to out (store/notices.py decodes it).
local function item_out(tk, s, v, out)
  local sv = redis.call('HGET', tk .. ':subs', s)
  local rec = sv and redis.call('HGET', bkey(sv, string.sub(s, 1, 20)), string.sub(s, 1, 20))
  if rec then
    table.insert(out, sv); table.insert(out, rec); table.insert(out, v); table.insert(out, s)
  end
end
-- The token's last notifications trimmed to the newest `max`; appends a push's list to out, oldest first:
-- with `first` (the sub id of the notice being stored, the push's cause) the newest max - 1 others, then
-- `first` itself last, even when others arrived later (another SMP server's, stored first) and it is no
-- longer among the newest kept; without it (''), the newest `max`.
local function newest(tk, first, max, out)
  local all = redis.call('HGETALL', tk .. ':ln')
  local items = {}
  for i = 1, #all, 2 do table.insert(items, {all[i], all[i + 1]}) end
  table.sort(items, function(a, b)
    local ta, tb = string.sub(a[2], 1, 13), string.sub(b[2], 1, 13)
    if ta ~= tb then return ta > tb end
    if a[1] == first then return true end
    if b[1] == first then return false end
    return a[1] > b[1]
  end)
  for i = max + 1, #items do
    redis.call('HDEL', tk .. ':ln', items[i][1])
    redis.call('DECR', P .. 'n:ln')
  end
  local picked, cause = {}, nil
  local limit = (first ~= '') and (max - 1) or max
  for i = 1, #items do
    if items[i][1] == first then cause = items[i]
    elseif #picked < limit then table.insert(picked, items[i]) end
  end
  for i = #picked, 1, -1 do item_out(tk, picked[i][1], picked[i][2], out) end
  if cause then item_out(tk, cause[1], cause[2], out) end
  return out
end
-- Remove a token with everything hanging off it; appends sid, server number, record to out.
local function del_token(tid, out)
  local tk = tkey(tid)
  local x = redis.call('HGET', tk, 'x')
  if not x then return false end
  local subs = redis.call('HGETALL', tk .. ':subs')
  for i = 1, #subs, 2 do
    local v = del_sub(tid, subs[i], subs[i + 1])
    if v then
      table.insert(out, subs[i]); table.insert(out, subs[i + 1]); table.insert(out, v)
    end
  end
  local nln = redis.call('HLEN', tk .. ':ln')
  if nln > 0 then redis.call('DECRBY', P .. 'n:ln', nln) end
  redis.call('HDEL', P .. 'dt:' .. x, tid)
  redis.call('HDEL', P .. 'tv', x .. ':' .. (redis.call('HGET', tk, 'vh') or ''))
  redis.call('ZREM', P .. 'used', tid)
  redis.call('ZREM', P .. 'cron', tid)
  redis.call('ZREM', P .. 'unv', tid)
  redis.call('ZREM', P .. 'dfr', tid)  -- a deferred push (store/budget.py) dies with its token
  redis.call('DEL', tk, tk .. ':subs', tk .. ':ln', tk .. ':dfr', tk .. ':srv')
  return true
end
"""

# `P tv` (field x:vh -> token id) finds the token of a (provider, device token, verify key) without reading
# the device token's other registrations; `max_per_device` (0 = no cap) bounds how many one device token
# may have (each TNEW with a new verify key is one), so a TVFY deleting the others stays small.
# ARGV: P NB tid x vh day created max_per_device field value ...
#   -> 'OK' | 'SAME' | 'DUPLICATE' | 'CLASH' | 'QUOTA'
CREATE_TOKEN: Final = (
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
    + r"""
local out = {}
local found = del_token(ARGV[3], out)
return {found and 1 or 0, out}
"""
)

# ARGV: P NB cutoff_day limit -> {{tid...}, {sid, srv, record, ...}}
EXPIRE_TOKENS: Final = (
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
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

# ARGV: P NB index_hex encoded_server -> server number
REGISTER_SERVER: Final = (
    _PRELUDE
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
    _PRELUDE
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
    _PRELUDE
    + r"""
local sid, srv = ARGV[3], ARGV[4]
local v = redis.call('HGET', bkey(srv, string.sub(sid, 1, 20)), string.sub(sid, 1, 20))
if not v then return false end
return del_sub(rec_tid(v), sid, srv) or false
"""
)

# The per-server service ties (services.py): `P svc:<n>` fields n (count of subscriptions tied to our
# service) and h (their IdsHash: XOR of MD5(notifier id), 16 bytes), changed with every tie and untie.
_TIES: Final = r"""
local function xor16(a, b)
  local t = {}
  for i = 1, 16 do t[i] = string.char(bit.bxor(string.byte(a, i), string.byte(b, i))) end
  return table.concat(t)
end
local function add_ties(srv, dn, dh)
  if dn == 0 and dh == nil then return end
  local k = P .. 'svc:' .. srv
  redis.call('HINCRBY', k, 'n', dn)
  if dh ~= nil then
    local h = redis.call('HGET', k, 'h') or string.rep('\0', 16)
    redis.call('HSET', k, 'h', xor16(h, dh))
  end
end
"""

# ARGV: P NB srv status assoc('0'|'1'|'-') from_kinds(',A,B,' or '') fence('': none) then r ... (assoc '-') or r md5 ...
#   (assoc '0'|'1': MD5 of each notifier id, to keep the server's service ties) -> number updated
SET_SUB_STATUS: Final = (
    _PRELUDE
    + _TIES
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
    _PRELUDE
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
    _PRELUDE
    + _TIES
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
    _PRELUDE
    + r"""
local k = P .. 'svc:' .. ARGV[3]
if redis.call('HEXISTS', k, 'c') == 0 then redis.call('HSET', k, 'c', ARGV[4], 'k', ARGV[5]) end
return redis.call('HMGET', k, 'c', 'k')
"""
)

# ---- read-only lookups for request verification (§4.3, STYLE 4)
# Each does the same work and gives a reply of the same shape whether or not the records exist: where
# there is no record, a stand-in is read (another token; the records written at connect, `P dummy:t` and
# `P dummy` fields sub/addr), so the time of an `ERR AUTH` does not tell whether an id exists. The Python
# side decrypts the stand-in too.
_LOOKUP: Final = r"""
-- A token hash as one string of u16-length-prefixed items (field, value, ...): redis-py's pure-Python parser
-- spends ~3 µs per reply item, so 24 bulk strings cost more than the whole script (values are < 64 KiB).
local function pack(flat)
  local out = {}
  for i = 1, #flat do
    local n = #flat[i]
    out[i] = string.char(math.floor(n / 256), n % 256) .. flat[i]
  end
  return table.concat(out)
end
-- Either branch reads one record and misses one key; where the token is missing, the stand-in is another,
-- real token (rank `pick` of the `used` set; the fixed dummy only in an empty store). A real one, because a
-- fixed stand-in stays hot in the CPU caches and in Lua's string table and was measurably faster (~1 %).
-- Returns found, packed hash, id of the record returned ('' for the dummy).
local function token_or_standin(tid, pick)
  local n = redis.call('ZCARD', P .. 'used')
  local other = n > 0 and redis.call('ZRANGE', P .. 'used', pick % n, pick % n)[1] or ''
  local key, other_key = tkey(tid), (other ~= '' and tkey(other)) or (P .. 'dummy:t')
  local h = redis.call('HGETALL', key)
  if #h > 0 then
    redis.call('HGETALL', P .. 'dummy:none')
    return 1, pack(h), tid
  end
  return 0, pack(redis.call('HGETALL', other_key)), other
end
local function hget_or_dummy(key, field, dfield)
  local v = redis.call('HGET', key, field)
  if v then
    redis.call('HGET', P .. 'dummy', 'none')
    return 1, v
  end
  return 0, redis.call('HGET', P .. 'dummy', dfield) or ''
end
"""

# The token of a repeated TNEW (its auth is already checked with the key it names, so there is nothing to
# hide by timing): one index read, one record. ARGV: P NB x:vh -> {found(0|1), packed token hash, its id}
LOOKUP_TNEW: Final = (
    _PRELUDE
    + _LOOKUP
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
    _PRELUDE
    + _LOOKUP
    + r"""
local found, h, id = token_or_standin(ARGV[3], tonumber(ARGV[4]))
return {found, h, id}
"""
)

# ARGV: P NB srv r pick -> {sub found, record, server address, token found, packed token hash, its id}
LOOKUP_SUB: Final = (
    _PRELUDE
    + _LOOKUP
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
    _PRELUDE
    + _LOOKUP
    + r"""
local tid, idx, r = ARGV[3], ARGV[4], ARGV[5]
local tfound, h, id = token_or_standin(tid, tonumber(ARGV[6]))
local n = redis.call('HGET', P .. 'srv:id', idx) or '0'
local sfound, v = hget_or_dummy(bkey(n, r), r, 'sub')
return {tfound, h, id, tonumber(n), sfound, v}
"""
)
