"""Fail fast while Redis is unreachable, reconnect in the background.

Theory of operation: without this, every request during a Redis outage waited through the client's whole
retry schedule (~4 s) before answering ``ERR STORE``, and nothing told the operator when Redis was back.
``StoreHealth`` is a two-state switch, up or down. A connection failure seen by any store call turns it
down; while it is down, store calls raise ``StoreUnavailable`` at once, without touching Redis; ``watch``
(a long-lived part of the server) then probes Redis with capped, jittered exponential backoff and turns it
up again on the first answer. Without a watcher (tools, tests of the store alone) the switch never turns
down, so a caller that retries on its own is never locked out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final

from redis import exceptions as rex

from ntf_server.observability.logevents import log_event
from ntf_server.store.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

PROBE_BASE_S: Final = 0.1
# A cluster in a failover (README "Cluster mode"): no primary for a slot yet, or the topology redis-py knows
# is stale; transient like a refused connection, and retried the same way.
_FAILOVER: Final = (rex.ClusterDownError, rex.TryAgainError, rex.ClusterError, rex.SlotNotCoveredError)
PROBE_CAP_S: Final = 2.0


def backoff_delays(base_s: float = PROBE_BASE_S, cap_s: float = PROBE_CAP_S) -> Iterator[float]:
    """Capped exponential backoff with full jitter (STYLE 9): an endless series of delays."""
    attempt = 0
    while True:
        yield random.uniform(0, min(cap_s, base_s * 2**attempt))
        attempt += 1


@contextmanager
def translated() -> Iterator[None]:
    """redis-py exceptions → ours, in one place (STYLE 5)."""
    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError, *_FAILOVER) as e:
        # redis-py names the address and the OS error ("Error 111 connecting to host:6379. Connection
        # refused."), never the password of the URL.
        raise StoreUnavailable(f"redis unreachable: {e or type(e).__name__}") from e
    except rex.RedisError as e:
        raise StoreError(f"redis error: {e}") from e


def _raise_if_cancelling() -> None:
    """Python 3.11's ``asyncio.wait_for`` (used inside redis-py) can swallow a cancel that arrives as the
    reply does (fixed in 3.12): the caller would carry on — a server part then sleeps for an hour or waits
    forever, and shutdown hangs. A task being cancelled gets its cancel back at the store's edge."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class StoreHealth:
    def __init__(self) -> None:
        self._watched = False
        self._down_since: float | None = None
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<StoreHealth {'up' if self.up else 'down'}{'' if self._watched else ' unwatched'}>"

    @property
    def up(self) -> bool:
        return self._down_since is None

    @contextmanager
    def guard(self) -> Iterator[None]:
        if not self.up:
            raise StoreUnavailable("redis unreachable (reconnecting in the background)")
        try:
            with translated():
                yield
            _raise_if_cancelling()
        except StoreUnavailable:
            if self._watched and self.up:
                self._down_since = time.monotonic()
                self._changed.set()
            raise

    async def watch(self, probe: Callable[[], Awaitable[object]],
                    delays: Callable[[], Iterator[float]] = backoff_delays) -> None:
        """Long-lived: whenever the switch turns down, probe until Redis answers, then turn it up."""
        self._watched = True
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                log_event(log, "redis.down")
                for delay in delays():
                    await asyncio.sleep(delay)
                    try:
                        with translated():
                            await probe()
                        break
                    except StoreError:
                        continue
                assert self._down_since is not None
                log_event(log, "redis.up", down_s=round(time.monotonic() - self._down_since, 1))
                self._down_since = None
        finally:
            self._watched = False
