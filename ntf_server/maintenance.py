"""Periodic housekeeping: expire abandoned tokens (spec §6.3 — the Haskell server never does).

A token's "last used" day is refreshed whenever a client command names it; tokens not used for
``store.expire_tokens_after_days`` days are deleted with their subscriptions, and the subscriber is told
to forget them. ``expire_once`` takes ``now`` so it is tested without waiting days.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from ntf_server.interfaces import SubscriptionSink
from ntf_server.stats import Stats
from ntf_server.store.base import Store
from ntf_server.store.errors import StoreError

log = logging.getLogger(__name__)

EXPIRY_INTERVAL_S: Final = 3600.0


class Housekeeping:
    def __init__(self, store: Store, sink: SubscriptionSink, stats: Stats, *, expire_after_days: int,
                 clock: Callable[[], float] = time.time, interval_s: float = EXPIRY_INTERVAL_S) -> None:
        self._store = store
        self._sink = sink
        self._stats = stats
        self._days = expire_after_days
        self._clock = clock
        self._interval = interval_s

    async def expire_once(self, now: float | None = None) -> int:
        if self._days <= 0:
            return 0
        tokens, removed = await self._store.expire_tokens(self._clock() if now is None else now, self._days)
        self._sink.forget(removed)
        if tokens:
            self._stats.incr("tkn_expired", len(tokens))
            log.info("expired %d unused tokens (%d subscriptions)", len(tokens), len(removed))
        return len(tokens)

    async def run(self) -> None:
        """A long-lived part of the server: never returns (a part that ends stops the server)."""
        while True:
            try:
                await self.expire_once()
            except StoreError as e:
                log.warning("token expiry skipped: %s", type(e).__name__)
            await asyncio.sleep(self._interval)
