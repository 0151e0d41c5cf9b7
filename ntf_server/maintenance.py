"""Periodic housekeeping: expire abandoned and never-verified tokens (§6.3 — the Haskell server never does).

A token's "last used" day is refreshed whenever a client command names it; tokens not used for
``store.expire_tokens_after_days`` days are deleted with their subscriptions, and the subscriber is told
to forget them. Tokens never verified (no accepted ``TVFY``) are deleted ``store.expire_unverified_after_h``
hours after their ``TNEW`` (registrations nobody completes would otherwise pile up forever; an
app whose token expired meanwhile gets ``ERR AUTH`` and registers again, §4.5). Both walk an index
in Redis, never the keyspace. ``expire_once`` takes ``now`` so it is tested without waiting.

Once per data set: the server runs ``expire_once`` through a job lease (ntf_server/jobs.py), so of several
instances (or workers) on one Redis one expires tokens at a time, every hour, and another takes over within
``[subscriber] lease_ttl_s`` after it dies and expires at once. Two runs that overlap (a holder paused past
its lease) do no harm: every batch is one atomic script, a token is deleted once, and ``forget`` of a
subscription another instance subscribes is its owner's to act on. A kill -9 mid-run loses nothing: the
batches done are done, the rest is found by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from ntf_server.interfaces import SubscriptionSink
from ntf_server.observability.logevents import log_event
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.store.base import TokenExpiryStore
from ntf_server.store.errors import StoreError

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
TKN_EXPIRED: Final = Counter("tkn_expired", "Tokens deleted after store.expire_tokens_after_days unused")
TKN_EXPIRED_UNVERIFIED: Final = Counter("tkn_expired_unverified", "Tokens deleted for not being verified within "
                                        "store.expire_unverified_after_h")

EXPIRY_INTERVAL_S: Final = 3600.0
HOUR_S: Final = 3600.0


class Housekeeping:
    def __init__(self, store: TokenExpiryStore, sink: SubscriptionSink, stats: Stats, *, expire_after_days: int,
                 expire_unverified_after_h: float = 0.0, clock: Callable[[], float] = time.time,
                 interval_s: float = EXPIRY_INTERVAL_S) -> None:
        self._store = store
        self._sink = sink
        self._stats = stats
        self._days = expire_after_days
        self._unverified_s = expire_unverified_after_h * HOUR_S
        self._clock = clock
        self._interval = interval_s

    @property
    def enabled(self) -> bool:
        return self._days > 0 or self._unverified_s > 0

    async def expire_once(self, now: float | None = None) -> int:
        """Both expiries, once; returns the number of tokens deleted."""
        now = self._clock() if now is None else now
        return await self.expire_unverified_once(now) + await self.expire_unused_once(now)

    async def expire_unused_once(self, now: float) -> int:
        if self._days <= 0:
            return 0
        tokens, removed = await self._store.expire_tokens(now, self._days)
        self._sink.forget(removed)
        if tokens:
            self._stats.incr(TKN_EXPIRED, len(tokens))
            log_event(log, "housekeeping.expired_unused", tokens=len(tokens), subscriptions=len(removed))
        return len(tokens)

    async def expire_unverified_once(self, now: float) -> int:
        if self._unverified_s <= 0:
            return 0
        tokens, removed = await self._store.expire_unverified(now, self._unverified_s)
        self._sink.forget(removed)
        if tokens:
            self._stats.incr(TKN_EXPIRED_UNVERIFIED, len(tokens))
            log_event(log, "housekeeping.expired_unverified", tokens=len(tokens), after_h=self._unverified_s / HOUR_S)
        return len(tokens)

    async def run(self) -> None:
        """A long-lived part of the server: never returns (a part that ends stops the server), also when
        nothing is enabled, when it only waits."""
        task = asyncio.current_task()
        while True:
            try:
                await self.expire_once()
            except StoreError as e:
                log_event(log, "housekeeping.skipped", error=type(e).__name__)
            if task is not None and task.cancelling():
                # A cancel that arrived during a store call can be lost on the way (Python 3.11's
                # asyncio.wait_for, used inside redis-py, may swallow it): stop now, not in an hour.
                raise asyncio.CancelledError
            await asyncio.sleep(self._interval)
