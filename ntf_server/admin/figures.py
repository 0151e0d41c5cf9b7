"""Everything the admin API shows, gathered once per request into one frozen value (``Figures``).

The renderers (metrics.py for Prometheus text, views.py for JSON) are pure functions of it, so
``/metrics`` and ``/v1/stats`` never disagree and nothing is counted twice. Gathering reads the process's
own counters (no I/O) and asks Redis for a few totals (three small pipelines); when Redis is away those
figures are left out (``None``) and the rest is still served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from ntf_server import __version__
from ntf_server.admin.window import CounterWindow
from ntf_server.observability.apns_metrics import ApnsMetrics, ApnsSnapshot
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.stats import Stats, StatsSnapshot
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.activity import ActiveTokens
from ntf_server.store.base import StoreCounts
from ntf_server.store.census import Census
from ntf_server.store.errors import StoreError
from ntf_server.subscriber.linkstate import LinkState
from ntf_server.subscriber.pool import Progress

STORE_TIMEOUT_S: Final = 2.0  # a figure from Redis that takes longer is left out (and /healthz fails)


class AdminStore(Protocol):
    @property
    def healthy(self) -> bool: ...
    async def counts(self) -> StoreCounts: ...
    async def ping(self) -> None: ...


class AdminPool(Protocol):
    resubscription: Progress

    def link_states(self) -> list[tuple[SMPServer, LinkState]]: ...


class AdminListener(Protocol):
    @property
    def listening(self) -> bool: ...
    @property
    def connections(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker of the instance (``[server] workers``; admin/workers.py)."""

    worker: int
    up: bool  # answered this request
    pid: int
    connections: int
    queue_length: int
    servers: tuple[SMPServer, ...]  # the SMP servers it holds (its links)
    restarts: int = 0  # times the supervisor started it again


@dataclass(frozen=True)
class Sources:
    """The narrow views of the running server that the admin API reads."""

    stats: Stats
    apns: ApnsMetrics
    store: AdminStore
    pool: AdminPool
    listener: AdminListener
    queue_length: Callable[[], int]
    census: Callable[[], Census | None]
    active_tokens: Callable[[], Awaitable[ActiveTokens]]
    own: OwnServers
    started_at: float = field(default_factory=time.time)  # Unix time (uptime in /v1/status)
    window: CounterWindow | None = None  # push counters a minute apart (pushes in the last hour)
    # with several workers: worker 0's figures -> the instance's (admin/workers.py); None: one process
    across_workers: Callable[[Figures], Awaitable[Figures]] | None = None


@dataclass(frozen=True)
class Figures:
    version: str
    now: float
    stats: StatsSnapshot
    apns: ApnsSnapshot
    store_up: bool
    counts: StoreCounts | None  # exact totals from Redis; None when Redis did not answer
    active: ActiveTokens | None
    census: Census | None  # approximate, refreshed every admin.census_interval_s
    links: tuple[tuple[SMPServer, LinkState], ...]
    queue_length: int
    resubscription: Progress
    listening: bool
    connections: int
    workers: tuple[WorkerRow, ...] = ()  # empty: one process
    owner: Mapping[SMPServer, int] = field(default_factory=lambda: MappingProxyType({}))  # server -> worker


async def gather(src: Sources) -> Figures:
    counts = active = None
    up = src.store.healthy
    if up:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                counts = await src.store.counts()
                active = await src.active_tokens()
        except (StoreError, TimeoutError):
            up = False
    fig = Figures(
        version=__version__, now=time.time(), stats=src.stats.snapshot(), apns=src.apns.snapshot(),
        store_up=up, counts=counts, active=active, census=src.census(), links=tuple(src.pool.link_states()),
        queue_length=src.queue_length(), resubscription=src.pool.resubscription,
        listening=src.listener.listening, connections=src.listener.connections,
    )
    return fig if src.across_workers is None else await src.across_workers(fig)


async def health(src: Sources) -> str | None:
    """None when healthy, else why not (for ``/healthz``): the store answers and the listener is up."""
    if not src.listener.listening:
        return "NTF listener is not running"
    if not src.store.healthy:
        return "store: Redis unreachable"
    try:
        async with asyncio.timeout(STORE_TIMEOUT_S):
            await src.store.ping()
    except (StoreError, TimeoutError):
        return "store: Redis does not answer"
    return None


class _RedisStore(Protocol):
    @property
    def healthy(self) -> bool: ...
    async def counts(self) -> StoreCounts: ...
    async def ping(self) -> None: ...


class StoreView:
    """``AdminStore`` over the Redis store: its health switch, its totals, and a PING."""

    def __init__(self, store: _RedisStore) -> None:
        self._store = store

    @property
    def healthy(self) -> bool:
        return self._store.healthy

    async def counts(self) -> StoreCounts:
        return await self._store.counts()

    async def ping(self) -> None:
        await self._store.ping()  # StoreError when Redis fails or is away
