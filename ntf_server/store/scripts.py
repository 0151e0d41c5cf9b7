"""Lua scripts: every change that touches more than one key is exactly one script, so it is atomic
(Redis runs a script to completion or not at all; a dropped connection cannot split it).

This module holds the Lua shared by the scripts: the prelude (key names, record fields, cascaded
deletions), the service ties and the constant-time lookups. The scripts themselves are kept by entity,
each with its typed wrapper (a method with named, typed arguments; no call by name): token_scripts.py,
sub_scripts.py, and beside their modules notices.py, outbox.py, leases.py, budget.py, census.py.

Every script gets ARGV[1] = key prefix, ARGV[2] = buckets per SMP server; the shared prelude rebuilds key
names exactly as `keys.py` does. Scripts compute the keys of cascaded deletions themselves (they are only
known after reading the token's subscription list). KEYS holds only the data set's routing key
(`Keys.route`): in cluster mode every key of the data set's shard is in that key's slot (store/client.py), so
a cluster accepts every script; a data set of several shards is several such sets of keys, each script
running in one of them (store/shards.py).
"""

from __future__ import annotations

from typing import Final

PRELUDE: Final = r"""
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


# The per-server service ties (services.py): `P svc:<n>` fields n (count of subscriptions tied to our
# service) and h (their IdsHash: XOR of MD5(notifier id), 16 bytes), changed with every tie and untie.
TIES: Final = r"""
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


# ---- read-only lookups for request verification (§4.3, STYLE 4)
# Each does the same work and gives a reply of the same shape whether or not the records exist: where
# there is no record, a stand-in is read (another token; the records written at connect, `P dummy:t` and
# `P dummy` fields sub/addr), so the time of an `ERR AUTH` does not tell whether an id exists. The Python
# side decrypts the stand-in too.
LOOKUP: Final = r"""
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
