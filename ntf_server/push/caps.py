"""A per-key cap on events in any sliding window (pure, ``now`` passed in): verification pushes per device.

Verification pushes are sent whenever an app sends TNEW (or repeats it, or TRPL), never delayed by the
hidden-push budget; without a cap anyone who knows a device token could make the server push to it as
often as the registration rate limits allow. ``SlidingCap`` allows at most ``limit`` events per key in any
``window_s``: it keeps, per key, the times of the last ``limit`` allowed events.

State is in memory, bounded by ``max_keys`` (least recently seen keys are forgotten first, which only
makes the cap more lenient for a forgotten key). Each instance caps on its own, and a restart forgets:
the server uses the Redis-backed ``store/vrfcap.py`` instead; ``MemoryDeviceCap`` is this cap
behind the same interface, for a push service without one.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Final, Generic, Protocol, TypeVar

from ntf_server.store.records import PushProvider

K = TypeVar("K", bound=Hashable)

MAX_KEYS: Final = 100_000  # ~200 bytes each at limit 10


class SlidingCap(Generic[K]):
    def __init__(self, limit: int, window_s: float, max_keys: int = MAX_KEYS) -> None:
        if limit < 0 or window_s <= 0 or max_keys < 1:
            raise ValueError("limit >= 0, window_s > 0 and max_keys >= 1 are required")
        self._limit = limit
        self._window = window_s
        self._max_keys = max_keys
        self._seen: OrderedDict[K, deque[float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<SlidingCap {self._limit} per {self._window:g} s, {len(self._seen)} keys>"

    def allow(self, key: K, now: float) -> bool:
        """Record one event for ``key`` at ``now`` if fewer than ``limit`` happened in the window before it."""
        times = self._seen.get(key)
        if times is None:
            times = self._seen[key] = deque(maxlen=self._limit or 1)
            if len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        if self._limit == 0:
            return False
        if len(times) == self._limit and now - times[0] < self._window:
            return False
        times.append(now)
        return True


class DeviceCap(Protocol):
    """Verification pushes per device token (store/vrfcap.py ``VerificationCap`` in the server)."""

    async def allow(self, provider: PushProvider, device_token: bytes) -> bool: ...


class MemoryDeviceCap:
    """``SlidingCap`` per device as a ``DeviceCap``: this instance's memory only."""

    def __init__(self, cap: SlidingCap[bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self._cap = cap
        self._clock = clock

    def __repr__(self) -> str:
        return f"<MemoryDeviceCap {self._cap!r}>"

    async def allow(self, provider: PushProvider, device_token: bytes) -> bool:
        device = hashlib.blake2b(provider.value.encode() + b" " + device_token, digest_size=16).digest()
        return self._cap.allow(device, self._clock())
