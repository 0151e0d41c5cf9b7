"""The push outbox: every push that must not be lost, from its decision until APNs answered (ntf_server/README.md).

Keys (``P`` = key prefix):
  P ob     hash  id -> kind (1 byte) ‖ token id (24) ‖ first try, Unix ms (13 digits) ‖ cause
                 (the notice that caused a message push: its sub id (24) ‖ its last-notification value; empty
                 for other kinds)
  P ob:a   hash  id -> tries made so far, once a try failed with "retry later"
  P obq    zset  id by when it is due
  P ob:n   counter of ids

A message push is written here by the script that decides it (store/notices.py NOTIFY), due one *lease*
after its decision: the instance that decided it sends it at once and acknowledges it (``ack``) when APNs
answered for good, or moves it to its retry time (``retry``); if that instance dies first, the entry falls
due when the lease ends and any instance's retry scheduler claims it (``claim``: due again one lease later,
so exactly one claimer sends it at a time) and sends it again: after kill -9 a push may be sent twice, never
lost. An instance extends the claims of the pushes it still holds (``extend``, every third of a lease), so a
push that waits in its queue or at a slow APNs longer than one lease is not sent by another meanwhile.
Pushes of the other kinds (verification, deferred, periodic) have their own records until their first try;
they are written here (``add``) only when APNs answered "retry later". A graceful stop that cannot finish
sending within its grace makes what is left due at once (``release``), so the next start sends it.

The body is not kept (4 KB a push): a push sent again is built again from its kind, its token's current
record and notifications, and its cause (push/pipeline.py), so it always carries the notice that caused it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import SUB_ID_BYTES, TOKEN_ID_BYTES

TS_DIGITS: Final = 13

# Lua: add an entry (used by the scripts here and by NOTIFY, which needs P and f() in scope)
ADD_LUA: Final = r"""
local function ob_add(kind, tid, first_ms, cause, due)
  local id = redis.call('INCR', P .. 'ob:n')
  redis.call('HSET', P .. 'ob', id, kind .. tid .. first_ms .. cause)
  redis.call('ZADD', P .. 'obq', string.format('%.17g', due), id)
  return id
end
"""

_P: Final = "local P = ARGV[1]\n"

# ARGV: P NB kind tid first_ms cause due tries -> id
ADD: Final = _P + ADD_LUA + r"""
local id = ob_add(ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]))
if tonumber(ARGV[8]) > 0 then redis.call('HSET', P .. 'ob:a', id, ARGV[8]) end
return id
"""

# ARGV: P NB id ... -> entries removed
ACK: Final = _P + r"""
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('HDEL', P .. 'ob', ARGV[i])
  redis.call('HDEL', P .. 'ob:a', ARGV[i])
  redis.call('ZREM', P .. 'obq', ARGV[i])
end
return n
"""

# ARGV: P NB id due tries -> 1 | 0 (gone: acknowledged meanwhile)
RETRY: Final = _P + r"""
if redis.call('HEXISTS', P .. 'ob', ARGV[3]) == 0 then return 0 end
redis.call('ZADD', P .. 'obq', ARGV[4], ARGV[3])
redis.call('HSET', P .. 'ob:a', ARGV[3], ARGV[5])
return 1
"""

# ARGV: P NB now lease limit -> {id, entry, tries, ...}
CLAIM: Final = _P + r"""
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', P .. 'obq', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', P .. 'ob', id)
  if v then
    redis.call('ZADD', P .. 'obq', string.format('%.17g', now + lease), id)
    table.insert(out, id); table.insert(out, v); table.insert(out, redis.call('HGET', P .. 'ob:a', id) or '0')
  else
    redis.call('ZREM', P .. 'obq', id)
  end
end
return out
"""

# ARGV: P NB due id ... -> entries whose claim was extended (only later, never earlier: a retry stays when it is)
EXTEND: Final = _P + r"""
local n = 0
for i = 4, #ARGV do n = n + redis.call('ZADD', P .. 'obq', 'XX', 'GT', 'CH', ARGV[3], ARGV[i]) end
return n
"""

# ARGV: P NB due id ... -> entries made due
RELEASE: Final = _P + r"""
local n = 0
for i = 4, #ARGV do n = n + redis.call('ZADD', P .. 'obq', 'XX', 'CH', ARGV[3], ARGV[i]) end
return n
"""


class PushKindCode(enum.Enum):
    """What an entry is; the code is its first byte."""

    ALERT = "a"  # a message push, alert (SimpleX parity, or over the hidden budget)
    HIDDEN = "h"  # a message push, hidden (within the budget)
    DEFERRED = "d"  # a deferred push (hidden, the token's newest <= 6)
    PERIODIC = "c"  # a periodic (TCRN) push
    VERIFICATION = "v"


@dataclass(frozen=True, slots=True)
class Cause:
    """The notice that caused a message push, as the store keeps it (decoded by store/notices.py)."""

    sub_id: bytes = field(repr=False)
    value: bytes = field(repr=False)

    def encode(self) -> bytes:
        return self.sub_id + self.value


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    kind: PushKindCode
    token_id: bytes = field(repr=False)
    first_at: float  # Unix seconds of the first try: the retry deadline counts from here
    tries: int
    cause: Cause | None = None


def decode_entry(id_: int, v: bytes, tries: int) -> OutboxEntry:
    head = 1 + TOKEN_ID_BYTES
    if len(v) < head + TS_DIGITS:
        raise StoreError("corrupted outbox entry")
    rest = v[head + TS_DIGITS:]
    cause = Cause(rest[:SUB_ID_BYTES], rest[SUB_ID_BYTES:]) if len(rest) > SUB_ID_BYTES else None
    try:
        kind = PushKindCode(v[:1].decode())
    except ValueError as e:
        raise StoreError("corrupted outbox entry") from e
    return OutboxEntry(id_, kind, v[1:head], int(v[head:head + TS_DIGITS]) / 1000, tries, cause)


def first_ms(at: float) -> str:
    return f"{int(at * 1000):0{TS_DIGITS}d}"


class RedisOutbox:
    def __init__(self, data: DataSet) -> None:
        self._d = data
        self._add = data.script(ADD)
        self._ack = data.script(ACK)
        self._retry = data.script(RETRY)
        self._claim = data.script(CLAIM)
        self._release = data.script(RELEASE)
        self._extend = data.script(EXTEND)

    def __repr__(self) -> str:
        return f"<RedisOutbox {self._d.keys.prefix}ob>"

    async def add(self, kind: PushKindCode, token_id: bytes, first_at: float, due: float, tries: int,
                  cause: Cause | None = None) -> int:
        """A push of another kind that must be tried again at ``due`` (``tries`` made so far)."""
        enc = cause.encode() if cause is not None else b""
        return int(await self._add(kind.value, token_id, first_ms(first_at), enc, repr(due), tries))

    async def ack(self, ids: Sequence[int]) -> int:
        """These pushes were answered for good (delivered, invalid token, or failed): forget them."""
        return int(await self._ack(*ids)) if ids else 0

    async def retry(self, id_: int, due: float, tries: int) -> bool:
        """Push ``id_`` is to be tried again at ``due``; False when it was acknowledged meanwhile."""
        return bool(await self._retry(id_, repr(due), tries))

    async def claim(self, now: float, lease_s: float, limit: int) -> list[OutboxEntry]:
        """The entries due at ``now``, each now due again one lease later (this caller sends them)."""
        flat: Any = await self._claim(repr(now), repr(lease_s), limit)
        return [decode_entry(int(flat[i]), flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def extend(self, ids: Sequence[int], due: float) -> int:
        """Pushes this instance is still sending (queued behind others, or APNs is slow): claimed until ``due``,
        so no other instance claims them while this one lives."""
        return int(await self._extend(repr(due), *ids)) if ids else 0

    async def release(self, ids: Sequence[int], now: float) -> int:
        """Pushes this instance will not finish (graceful stop): due at ``now``, for whoever runs next."""
        return int(await self._release(repr(now), *ids)) if ids else 0

    async def count(self) -> int:
        return int(await self._d.call(self._d.r.zcard, self._d.keys.g("obq")))

    async def next_due(self) -> float | None:
        first: Any = await self._d.call(self._d.r.zrange, self._d.keys.g("obq"), 0, 0, False, True)
        return float(first[0][1]) if first else None
