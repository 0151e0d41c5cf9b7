"""The cap on verification pushes per device token, kept in Redis.

Verification pushes answer a client's TNEW, repeated TNEW or TRPL, never delayed by the hidden-push
budget; without a cap anyone who knows a device token could make the server push to it as often as the
registration limits allow. At most ``limit`` are sent per device in any ``window_s``.

In Redis rather than in memory (``push/caps.py`` ``SlidingCap``, which this replaces in the server): a
restart no longer forgets it, several instances share it, and nothing bounds how many devices it covers
(the memory cap forgot the least recently seen of 100,000 devices, i.e. let them through again).

Per device one sorted set, ``P vc:<keyed hash of provider and device token>`` (no device token is
stored: the hash key derives from the store key), members the times of the pushes allowed in the window;
one script drops the times that left the window, counts, and records the new one only when under the cap.
The key expires one window after its last push, so idle devices cost nothing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Final

from ntf_server.store.dataset import DataSet
from ntf_server.store.records import PushProvider

HASH_BYTES: Final = 16

# KEYS: the device's set. ARGV: now_ms window_ms limit member -> 1 (allowed, recorded) | 0
_ALLOW: Final = r"""
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window)
return 1
"""


class VerificationCap:
    def __init__(self, dataset: DataSet, hasher: Callable[[bytes, bytes], bytes], limit: int,
                 window_s: float, *, clock: Callable[[], float] = time.time) -> None:
        """``hasher(provider, device token)``: the keyed hash naming a device's set (``AtRest.index``).
        ``clock``: wall-clock seconds (stored times must mean the same after a restart)."""
        if limit < 0 or window_s <= 0:
            raise ValueError("limit >= 0 and window_s > 0 are required")
        self._prefix = dataset.keys.prefix
        self._hasher = hasher
        self._limit = limit
        self._window_ms = int(window_s * 1000)
        self._clock = clock
        self._script = dataset.keyed_script(_ALLOW)

    def __repr__(self) -> str:
        return f"<VerificationCap {self._limit} per {self._window_ms / 1000:g} s per device, in Redis>"

    async def allow(self, provider: PushProvider, device_token: bytes) -> bool:
        """Record one verification push to the device if fewer than ``limit`` were in the window before."""
        if self._limit == 0:
            return False
        device = self._hasher(provider.value.encode(), device_token)[:HASH_BYTES].hex()
        now_ms = int(self._clock() * 1000)
        member = f"{now_ms}:{secrets.token_hex(4)}"  # two pushes in one millisecond are two members
        allowed = await self._script([f"{self._prefix}vc:{device}"], [now_ms, self._window_ms, self._limit, member])
        return bool(allowed)
