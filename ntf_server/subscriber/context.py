"""What a link needs of its pool (``LinkContext``), and the pool's settings and narrow dependencies.

The pool (subscriber/pool.py) builds one ``LinkContext`` and hands it to every link (subscriber/link.py):
the link reaches the store, the pipeline, the counters and the pool's callbacks through it only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import ResubscriptionStore, ServiceStore, StoreStats
from ntf_server.store.records import Notice
from ntf_server.subscriber.client import SmpClient

if TYPE_CHECKING:
    from ntf_server.subscriber.link import Link


class PoolStore(ResubscriptionStore, ServiceStore, StoreStats, Protocol):
    """What the pool and its links need of the store (store/base.py)."""


class NoticeSink(Protocol):
    async def accept(self, server: SMPServer, notices: Sequence[Notice]) -> None: ...


@dataclass(frozen=True, slots=True)
class PoolSettings:
    coalesce_s: float = 0.005  # new subscriptions wait this long to share blocks
    page_size: int = 1000  # subscriptions read from the store (and signed) between two awaits
    max_in_flight: int = 50_000  # NSUBs sent and not yet answered, per connection
    stable_after_s: float = 60.0  # a connection up this long resets the backoff
    store_retry_s: float = 3.0  # wait between store retries of a block of events


@dataclass(frozen=True, slots=True)
class LinkContext:
    """What every link of one pool shares: its parts, and the pool's callbacks."""

    store: PoolStore
    pusher: NoticeSink
    stats: Stats
    settings: PoolSettings
    connect: Callable[[SMPServer], SmpClient]
    delays: Callable[[], Iterator[float]]
    fence: Callable[[SMPServer], str | None]
    retry: Callable[[Callable[[], Awaitable[object]]], Awaitable[object]]
    clock: Callable[[], float]
    services: bool
    ended: Callable[[Link], None]  # no live subscription needs it: forget the link
    fenced: Callable[[Link], None]  # another instance owns its server now: forget the link
    first_done: Callable[[], None]  # a link finished its first resubscription
    connect_failures: CountedLog
    disconnects: CountedLog
