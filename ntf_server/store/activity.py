"""Daily, weekly and monthly active tokens (§6.4 ``activeTokens``): Redis HyperLogLogs.

A token is active in a period when a message notification was stored for it (it was pushed to, or
would have been). What goes into Redis is a *keyed* hash of the token id (HMAC with a key derived from the
store key, truncated to 8 bytes): a HyperLogLog keeps no elements, and the key means that even someone
with the Redis data and a list of token ids cannot test which were active. Counts are HyperLogLog
estimates (standard error 0.81%).

Periods are calendar periods in UTC, as the Haskell server's: the day, the ISO week (Monday first) and the
month so far. Keys expire a while after their period ends.

Cheap on the NMSG path: ``record`` only adds 8 bytes to an in-memory set; ``run`` (a server part) sends
the set every few seconds as three PFADDs. A crash loses at most that interval's activity, which an
estimate can afford. The set is bounded; past the bound new ids are skipped until the next flush.
Several instances (or workers) each flush their own set into the same HyperLogLogs: PFADD of an element
already there changes nothing, so nothing is counted twice; a kill -9 loses that instance's last interval.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError

log = logging.getLogger(__name__)

FLUSH_EVERY_S: Final = 5.0
MAX_PENDING: Final = 200_000  # ~16 MB at most between two flushes
PFADD_CHUNK: Final = 10_000
HASH_BYTES: Final = 8
_TTL_S: Final = {"d": 3 * 86400, "w": 15 * 86400, "m": 63 * 86400}


@dataclass(frozen=True, slots=True)
class ActiveTokens:
    day: int
    week: int
    month: int


def period_keys(prefix: str, now: float) -> dict[str, str]:
    """``{"d": …, "w": …, "m": …}``: the HyperLogLog keys of the periods containing ``now`` (UTC)."""
    t = datetime.fromtimestamp(now, UTC)
    year, week, _ = t.isocalendar()
    return {"d": f"{prefix}act:d:{t:%Y%m%d}", "w": f"{prefix}act:w:{year}W{week:02d}", "m": f"{prefix}act:m:{t:%Y%m}"}


class ActivityStore:
    def __init__(self, dataset: DataSet, hash_key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        """``dataset``: the store's (``RedisStore.dataset``): every call passes its health switch."""
        self._d = dataset
        self._prefix = dataset.keys.prefix
        self._key = hash_key
        self._clock = clock
        self._pending: set[bytes] = set()
        self.skipped = 0  # ids not recorded because the set was full (Redis away for long)

    def __repr__(self) -> str:
        return f"<ActivityStore {len(self._pending)} pending>"

    def record(self, token_id: bytes) -> None:
        """A notification was stored for this token (called on the NMSG path: no I/O, no hashing: the ids are
        hashed at the flush, once per token however many notifications it had)."""
        if len(self._pending) >= MAX_PENDING:
            self.skipped += 1
            return
        self._pending.add(token_id)

    async def flush(self) -> None:
        """Send what was recorded; on a Redis error it stays pending (raises StoreError)."""
        if not self._pending:
            return
        ids = list(self._pending)
        items = [hmac.digest(self._key, tid, "sha256")[:HASH_BYTES] for tid in ids]
        keys = period_keys(self._prefix, self._clock())
        async with self._d.pipeline() as pipe:
            for period, key in keys.items():
                for i in range(0, len(items), PFADD_CHUNK):
                    pipe.pfadd(key, *items[i: i + PFADD_CHUNK])
                pipe.expire(key, _TTL_S[period])
            await pipe.execute()
        self._pending.difference_update(ids)

    async def run(self, every_s: float = FLUSH_EVERY_S,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Long-lived server part: flush every ``every_s``."""
        while True:
            await sleep(every_s)
            try:
                await self.flush()
            except StoreError as e:
                log.debug("active tokens not flushed yet: %s", e)

    async def counts(self) -> ActiveTokens:
        keys = period_keys(self._prefix, self._clock())
        with self._d.guard():  # three calls at once, not a pipeline: a cluster pipeline refuses PFCOUNT
            day, week, month = await asyncio.gather(*(self._d.r.pfcount(key) for key in keys.values()))
        return ActiveTokens(int(day), int(week), int(month))
