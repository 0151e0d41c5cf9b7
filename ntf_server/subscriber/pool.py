"""The subscriber pool: every notification subscription held open on its SMP server (§3.3, §4.6).

Theory of operation. One link per SMP server (hosts + port + key hash): subscriber/link.py is its I/O
shell (connection, reconnects, paging the store, sending NSUBs), subscriber/core.py its decisions (what an
answer, END, DELD, ERR or a lost connection means for the subscriptions' statuses, the link's state,
the backoff), sans-IO. Servers are independent: a slow or dead server delays nobody else.

* Subscribing. On every new connection the link pages the store for the server's live subscriptions
  (NEW, PENDING, ACTIVE, INACTIVE; constant memory however many) and sends their NSUBs many to a block,
  keeping at most ``max_in_flight`` unanswered. New subscriptions from SNEW wait ``coalesce_s`` so that a
  burst shares blocks (the Haskell server sends one NSUB per block). A queue already pending or active on
  the connection is never subscribed twice.
* Answers become statuses (§4.6), written in one store call per status per received block; a timed-out
  NSUB stays PENDING and is never forgotten: the session re-sends it on the same connection (backoff 1 s →
  10 s) and applies a late answer; the client drops a connection that keeps timing out in silence, and the
  next connection subscribes it again.
* Messages. The NMSGs of one block become ``Notice``s handed to the push pipeline together
  (push/pipeline.py ``accept``), which stores and decides them a batch at a time. Handing them over waits
  while this server has a full share of notices waiting there, and while this link waits it reads nothing
  more from its SMP server, which keeps what it has not delivered: back-pressure on the server that floods,
  never on the others, and never a silent drop.
* Which subscriptions open connections: only those of ACTIVE tokens. SNEW for a token that is
  not ACTIVE is stored and answered but not handed here; TVFY hands over the token's stored subscriptions
  (:meth:`SubscriberPool.token_activated`); resubscription pages only ACTIVE tokens' subscriptions. A link
  ends — connection closed, no more reconnects — when no live subscription needs it: checked before every
  connection attempt and after every SDEL/TDEL/expiry that touched its server (a token that became
  INVALID is noticed at the next reconnect). A new subscription later starts a new link.
* SDEL/TDEL: SMP has no unsubscribe; the link forgets the queue, and later NMSGs for it are counted, not
  pushed. Any other NMSG is handed to the store whatever this connection knows of its queue (e.g. one
  racing a reconnect): pushed when the store holds its subscription.

Which servers this instance serves is injected (``serves``): all by default; with several instances on one
Redis, the servers whose lease it holds (subscriber/leases.py), which calls ``serve`` when it gains a lease
and ``drop`` when it loses one (``hand_over`` when it gives one up): the connection closes at once, what it
already read is pushed, and the link ends instead of reconnecting. Every status write carries the lease
(``fence``): one the server no longer holds in Redis writes nothing, and its link stops (an instance paused
past its lease's expiry finds out at its first write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from ntf_server.observability.logevents import log_event
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import RemovedSub
from ntf_server.store.errors import StoreError
from ntf_server.store.health import backoff_delays
from ntf_server.store.records import RESUBSCRIBE_KINDS, SubscriptionRecord
from ntf_server.subscriber.client import SmpClient
from ntf_server.subscriber.context import LinkContext, NoticeSink, PoolSettings, PoolStore
from ntf_server.subscriber.core import SMP_NSUB_ANSWERED
from ntf_server.subscriber.link import Link
from ntf_server.subscriber.linkstate import LinkState

__all__ = ["NoticeSink", "PoolSettings", "PoolStore", "Progress", "SubscriberPool"]

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
SMP_LINKS_ENDED: Final = Counter("smp_links_ended", "SMP server links ended because no live subscription needed them")
T = TypeVar("T")

PROGRESS_EVERY_S: Final = 10.0
RECONNECT_BASE_S: Final = 0.5
RECONNECT_CAP_S: Final = 10.0  # Haskell's reconnect interval tops out at 10 s (§3.3)
STORE_ATTEMPTS: Final = 20  # store retries for a block of events before it is given up (~ a minute)


@dataclass(frozen=True, slots=True)
class Progress:
    """The start-up resubscription (stats and logs)."""

    servers: int
    servers_done: int  # paged through and every NSUB answered on the first connection
    subscriptions: int  # in the store at start (all statuses: an upper bound)
    answered: int
    elapsed_s: float


ClientFactory = Callable[[SMPServer], SmpClient]


def reconnect_delays() -> Iterator[float]:
    return backoff_delays(RECONNECT_BASE_S, RECONNECT_CAP_S)


class SubscriberPool:
    """``SubscriptionSink`` for the handlers and housekeeping; ``run`` is a long-lived server part.

    Seams: ``client_factory`` (how a connection is made: routing, proxies; tests make stand-in clients),
    ``delays`` (reconnect backoff; tests pass none), ``serves`` and ``fence`` (the lease manager's)."""

    def __init__(
        self,
        store: PoolStore,
        pusher: NoticeSink,
        stats: Stats,
        *,
        client_factory: ClientFactory = SmpClient,
        delays: Callable[[], Iterator[float]] = reconnect_delays,
        serves: Callable[[SMPServer], bool] = lambda _: True,
        fence: Callable[[SMPServer], str | None] = lambda _: None,
        services: bool = False,
    ) -> None:
        self._store = store
        self.services = services  # [subscriber] use_service_credentials (subscriber/service_link.py)
        self._stats = stats
        self._serves = serves
        self._dropping: set[asyncio.Task[None]] = set()  # links closing after their lease was lost
        self.settings = PoolSettings()
        self._links: dict[SMPServer, Link] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.resubscription = Progress(0, 0, 0, 0, 0.0)
        self._link_done = asyncio.Event()  # a link finished its first resubscription
        self.connect_failures = CountedLog(log, "SMP server unreachable, retrying with backoff",
                                           event="smp.connect_failed")
        self.disconnects = CountedLog(log, "SMP connection lost, reconnecting", event="smp.disconnected")
        self._ctx = LinkContext(
            store=store, pusher=pusher, stats=stats, settings=self.settings, connect=client_factory,
            delays=delays, fence=fence, retry=self._store_retry, clock=time.time, services=services,
            ended=self._retired, fenced=self._unlink, first_done=self._link_done.set,
            connect_failures=self.connect_failures, disconnects=self.disconnects)

    def __repr__(self) -> str:
        states: dict[str, int] = defaultdict(int)
        for link in self._links.values():
            states[link.state.value] += 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no servers"
        return f"<SubscriberPool {parts}>"

    # ------------------------------------------------------------ SubscriptionSink

    def subscribe(self, sub: SubscriptionRecord) -> None:
        link = self._link(sub.server)
        if link is not None:
            link.add(sub)

    def forget(self, subs: Sequence[RemovedSub]) -> None:
        for s in subs:
            link = self._links.get(s.server.normalized())
            if link is not None:
                link.forget(s.notifier_id)

    def serve(self, server: SMPServer) -> None:
        """Start serving ``server`` (a lease was gained): connect and page its subscriptions."""
        self._link(server)

    def drop(self, server: SMPServer) -> None:
        """Stop serving ``server`` now (its lease was lost): its connection closes at once and what it already
        read is still pushed (the SMP server sent those NMSGs to this connection only); its status writes,
        fenced, write nothing once another instance holds the lease. Returns at once: the rest runs in a task,
        so the lease manager's round is not held up."""
        link = self._links.pop(server.normalized(), None)
        if link is not None:
            task = asyncio.get_running_loop().create_task(link.hand_over(), name="smp link drop")
            self._dropping.add(task)
            task.add_done_callback(self._dropping.discard)

    async def hand_over(self, server: SMPServer) -> None:
        """Stop serving ``server`` (its lease is to be released, rebalancing): close its connection, hand the
        notices already read to the pipeline and write the statuses, then return; the lease still holds."""
        link = self._links.pop(server.normalized(), None)
        if link is not None:
            await link.hand_over()

    def token_activated(self, token_id: bytes, route: Callable[[SubscriptionRecord], None] | None = None) -> None:
        """TVFY made the token ACTIVE: its stored subscriptions now need their SMP servers. Before ``run``
        there is nothing to do: the start-up resubscription pages them. ``route``: where each goes (the lease
        manager's ``subscribe``, which hands those of servers another instance owns to that instance)."""
        if self._tg is not None:
            self._tg.create_task(self._subscribe_token(token_id, route or self.subscribe),
                                 name="subscribe activated token")

    async def _subscribe_token(self, token_id: bytes, route: Callable[[SubscriptionRecord], None]) -> None:
        try:
            subs = await self._store_retry(lambda: self._store.token_subscriptions(token_id))
        except StoreError:  # the next connection to each server pages them (they are in the store)
            log_event(log, "smp.store_unavailable", error="token subscriptions")
            return
        for sub in subs:
            if sub.status.kind in RESUBSCRIBE_KINDS:
                route(sub)

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Resubscribe every server with live subscriptions, then serve new ones; never returns."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for link in self._links.values():  # added by SNEW before run() started
                link.start(tg)
            for server in await self._store_retry(self._store.servers_with_subscriptions):
                self._link(server)
            total = (await self._store_retry(self._store.counts)).subscriptions
            await self._report_resubscription(total)
            await asyncio.Event().wait()

    async def _report_resubscription(self, total: int) -> None:
        """Progress of the start-up resubscription in the log (servers done, subscriptions/s, ETA)."""
        started, links = time.time(), list(self._links.values())
        if not links:
            log_event(log, "resubscribe.none")
            return
        log_event(log, "resubscribe.started", servers=len(links), subscriptions=total)
        while True:
            done = sum(link.resubscribed for link in links)
            answered = self._stats[SMP_NSUB_ANSWERED]
            elapsed = max(time.time() - started, 1e-3)
            self.resubscription = Progress(len(links), done, total, answered, elapsed)
            if done == len(links):
                log_event(log, "resubscribe.done", servers=done, answered=answered, elapsed_s=round(elapsed, 1))
                return
            rate = answered / elapsed
            eta = round((total - answered) / rate) if rate > 0 and total > answered else None
            log_event(log, "resubscribe.progress", servers_done=done, servers=len(links), answered=answered,
                      subscriptions=total, rate_per_s=round(rate), eta_s=eta)
            self._link_done.clear()
            with contextlib.suppress(TimeoutError):  # the next line when a server is done, or in 10 s
                async with asyncio.timeout(PROGRESS_EVERY_S):
                    await self._link_done.wait()

    def link_state(self, server: SMPServer) -> LinkState | None:
        link = self._links.get(server.normalized())
        return None if link is None else link.state

    def link_states(self) -> list[tuple[SMPServer, LinkState]]:
        """Every SMP server this instance serves, with its link's state (core.SHOWN_STATES)."""
        return [(server, link.state) for server, link in self._links.items()]

    def _unlink(self, link: Link) -> None:
        """A link that ended by itself (fenced out); a later ``serve`` starts a new one."""
        if self._links.get(link.server) is link:
            del self._links[link.server]

    def _retired(self, link: Link) -> None:
        """The link ended (no live subscription needs it); a later subscription starts a new one."""
        self._unlink(link)
        self._stats.incr(SMP_LINKS_ENDED)
        self._link_done.set()

    def _link(self, server: SMPServer) -> Link | None:
        key = server.normalized()
        link = self._links.get(key)
        if link is None:
            if not self._serves(key):
                return None
            link = self._links[key] = Link(key, self._ctx)
            if self._tg is not None:
                link.start(self._tg)
        return link

    async def _store_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(STORE_ATTEMPTS):
            try:
                return await call()
            except StoreError as e:
                if attempt == STORE_ATTEMPTS - 1:
                    raise
                log.debug("subscriber: store call failed (%s), retrying", type(e).__name__)
                await asyncio.sleep(self.settings.store_retry_s)
        raise AssertionError("unreachable")
