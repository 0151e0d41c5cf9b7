"""The subscriber pool: every notification subscription held open on its SMP server (§3.3, §4.6).

Theory of operation. One ``_Link`` per SMP server (hosts + port + key hash) owns at most one connection
(``client.SmpClient``) at a time: connect (DNS resolved anew every time), subscribe, read, and after any
loss reconnect with capped, jittered exponential backoff (an injected strategy; by default up to 10 s, as
Haskell's reconnect interval). Servers are independent: a slow or dead server delays nobody else.

* Subscribing. On every new connection the link pages the store for the server's live subscriptions
  (NEW, PENDING, ACTIVE, INACTIVE; constant memory however many) and sends their NSUBs many to a block,
  keeping at most ``max_in_flight`` unanswered. New subscriptions from SNEW wait ``coalesce_s`` so that a
  burst shares blocks (the Haskell server sends one NSUB per block). A queue already pending or active on
  the connection is never subscribed twice.
* Answers become statuses (§4.6), written in one store call per status per received block: OK/SOK →
  ACTIVE, ERR AUTH → AUTH, other errors → ERR, END → END, DELD → DELETED; a lost connection turns what
  it held into INACTIVE. Sent NSUBs are PENDING. A timed-out NSUB stays PENDING and is never forgotten:
  the session re-sends it on the same connection (backoff 1 s → 10 s) and applies a late answer; the
  client drops a connection that keeps timing out in silence, and the next connection subscribes it again.
  Other errors become ``ERR <text>`` with the text Haskell writes (``SMP error …``), which SCHK shows.
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
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, assert_never

from ntf_server.logevents import log_event
from ntf_server.logsummary import CountedLog
from ntf_server.protocol import crypto, smp_events as E
from ntf_server.protocol.encoding import CodecError, SMPServer
from ntf_server.protocol.smp_session import NotifierQueue
from ntf_server.stats import Stat, Stats
from ntf_server.store.base import RemovedSub, ResubscriptionStore, ServiceStore, StoreStats
from ntf_server.store.errors import FencedOut, StoreError
from ntf_server.store.health import backoff_delays
from ntf_server.store.records import (
    RESUBSCRIBE_KINDS,
    Notice,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
)
from ntf_server.subscriber.client import EventBatch, SmpClient
from ntf_server.subscriber.errors import ClientError, ServiceRefused
from ntf_server.subscriber.service_link import LinkService

log = logging.getLogger(__name__)
T = TypeVar("T")

LOST_FROM: Final = (SubStatusKind.PENDING, SubStatusKind.ACTIVE)  # what a lost connection makes INACTIVE
PROGRESS_EVERY_S: Final = 10.0
RECONNECT_BASE_S: Final = 0.5
RECONNECT_CAP_S: Final = 10.0  # Haskell's reconnect interval tops out at 10 s (§3.3)
STORE_ATTEMPTS: Final = 20  # store retries for a block of events before it is given up (~ a minute)
_FAILURE_STATUS: Final = {E.FailureKind.AUTH: SubStatus(SubStatusKind.AUTH),
                          E.FailureKind.SERVICE: SubStatus(SubStatusKind.SERVICE)}
# What the SMP server answered, counted by the status it gives (§6.4's subscription counters).
_STATUS_COUNTER: Final = {
    SubStatusKind.ACTIVE: Stat.SMP_SUB_OK, SubStatusKind.AUTH: Stat.SMP_SUB_AUTH,
    SubStatusKind.SERVICE: Stat.SMP_SUB_SERVICE, SubStatusKind.ERR: Stat.SMP_SUB_ERR,
    SubStatusKind.END: Stat.SMP_SUB_END, SubStatusKind.DELETED: Stat.SMP_SUB_DELD,
}


@dataclass(frozen=True, slots=True)
class Progress:
    """The start-up resubscription (stats and logs)."""

    servers: int
    servers_done: int  # paged through and every NSUB answered on the first connection
    subscriptions: int  # in the store at start (all statuses: an upper bound)
    answered: int
    elapsed_s: float


class PoolStore(ResubscriptionStore, ServiceStore, StoreStats, Protocol):
    """What the pool needs of the store (store/base.py)."""


class NoticeSink(Protocol):
    async def accept(self, server: SMPServer, notices: Sequence[Notice]) -> None: ...


@dataclass(frozen=True, slots=True)
class PoolSettings:
    coalesce_s: float = 0.005  # new subscriptions wait this long to share blocks
    page_size: int = 1000  # subscriptions read from the store (and signed) between two awaits
    max_in_flight: int = 50_000  # NSUBs sent and not yet answered, per connection
    stable_after_s: float = 60.0  # a connection up this long resets the backoff
    store_retry_s: float = 3.0  # wait between store retries of a block of events


ClientFactory = Callable[[SMPServer], SmpClient]
Sleep = Callable[[float], Awaitable[None]]


class SubscriberPool:
    """``SubscriptionSink`` for the handlers and housekeeping; ``run`` is a long-lived server part."""

    def __init__(
        self,
        store: PoolStore,
        pusher: NoticeSink,
        stats: Stats,
        *,
        client_factory: ClientFactory = SmpClient,
        delays: Callable[[], Iterator[float]] = lambda: backoff_delays(RECONNECT_BASE_S, RECONNECT_CAP_S),
        serves: Callable[[SMPServer], bool] = lambda _: True,
        fence: Callable[[SMPServer], str | None] = lambda _: None,
        settings: PoolSettings = PoolSettings(),
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        services: bool = False,
    ) -> None:
        self._store = store
        self.services = services  # [subscriber] use_service_credentials (subscriber/service_link.py)
        self._pusher = pusher
        self._stats = stats
        self._factory = client_factory
        self._delays = delays
        self._serves = serves
        self._fence = fence  # the lease a status write must still hold (store/leases.py), None: unchecked
        self._dropping: set[asyncio.Task[None]] = set()  # links closing after their lease was lost
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._links: dict[SMPServer, _Link] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.resubscription = Progress(0, 0, 0, 0, 0.0)
        self._link_done = asyncio.Event()  # a link finished its first resubscription
        self.connect_failures = CountedLog(log, "SMP server unreachable, retrying with backoff",
                                           event="smp.connect_failed")
        self.disconnects = CountedLog(log, "SMP connection lost, reconnecting", event="smp.disconnected")

    def __repr__(self) -> str:
        states: dict[str, int] = defaultdict(int)
        for link in self._links.values():
            states[link.state] += 1
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

    def _unlink(self, link: _Link) -> None:
        """A link that ended by itself (fenced out); a later ``serve`` starts a new one."""
        if self._links.get(link.server) is link:
            del self._links[link.server]

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
        started, links = self._clock(), list(self._links.values())
        if not links:
            log_event(log, "resubscribe.none")
            return
        log_event(log, "resubscribe.started", servers=len(links), subscriptions=total)
        while True:
            done = sum(link.resubscribed for link in links)
            answered = self._stats[Stat.SMP_NSUB_ANSWERED]
            elapsed = max(self._clock() - started, 1e-3)
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

    def link_state(self, server: SMPServer) -> str | None:
        link = self._links.get(server.normalized())
        return None if link is None else link.state

    def link_states(self) -> list[tuple[SMPServer, str]]:
        """Every SMP server this instance serves, with its connection state (idle, connecting, up, down)."""
        return [(server, link.state) for server, link in self._links.items()]

    def _retired(self, link: _Link) -> None:
        """The link ended (no live subscription needs it); a later subscription starts a new one."""
        if self._links.get(link.server) is link:
            del self._links[link.server]
        self._stats.incr(Stat.SMP_LINKS_ENDED)
        self._link_done.set()

    def _link(self, server: SMPServer) -> _Link | None:
        key = server.normalized()
        link = self._links.get(key)
        if link is None:
            if not self._serves(key):
                return None
            link = self._links[key] = _Link(key, self)
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
                await self._sleep(self.settings.store_retry_s)
        raise AssertionError("unreachable")


class _Link:
    """One SMP server: its connection, reconnects and the subscriptions waiting to be sent."""

    def __init__(self, server: SMPServer, pool: SubscriberPool) -> None:
        self.server = server
        self._pool = pool
        self.state = "idle"
        self._new: dict[bytes, bytes] = {}  # notifier id → notifier key (PKCS#8), from SNEW
        self._wake = asyncio.Event()
        self._client: SmpClient | None = None
        self._answered = asyncio.Event()
        self._recheck = asyncio.Event()  # subscriptions were forgotten: is this link still needed?
        self._service = LinkService(server, pool._store, pool._stats, pool._store_retry, enabled=pool.services)
        self.resubscribed = False  # the first connection paged everything and had every NSUB answered
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # handed over: end after this connection instead of reconnecting

    def __repr__(self) -> str:
        return f"<_Link {self.server!r} {self.state} new={len(self._new)}>"

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._run(), name="smp link")

    async def hand_over(self) -> None:
        """Closed: the connection's event stream ends after what it already read, which ``_read`` handles as
        usual (notices to the pipeline, statuses), then ``_run`` marks the queues INACTIVE and ends instead
        of reconnecting. Not connected: cancelled, as nothing was read."""
        self._stopping = True
        if self._task is None:
            return
        if self._client is not None:
            await self._client.close()
        else:
            self._task.cancel()
        await asyncio.wait([self._task])
        self.state = "dropped"

    def handed_over(self) -> bool:
        return self._stopping

    def add(self, sub: SubscriptionRecord) -> None:
        self._new[sub.notifier_id] = sub.notifier_key
        self._wake.set()

    def forget(self, notifier_id: bytes) -> None:
        self._new.pop(notifier_id, None)
        if self._client is not None:
            self._client.forget(notifier_id)
        self._recheck.set()

    async def _still_needed(self) -> bool:
        """Whether a live subscription needs this server; if not, the link retires (synchronously after
        the store's answer, so a subscription added meanwhile is seen, or goes to a new link)."""
        pool = self._pool
        if self._new:
            return True
        try:
            needed = await pool._store_retry(lambda: pool._store.has_live_subscriptions(self.server))
        except StoreError:
            return True  # cannot tell: keep serving
        if needed or self._new:
            return True
        self.state, self.resubscribed = "ended", True
        pool._retired(self)
        return False

    # ------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        pool, stats = self._pool, self._pool._stats
        delays = pool._delays()
        while not self.handed_over() and await self._still_needed():
            self._recheck.clear()
            self.state = "connecting"
            client = pool._factory(self.server)
            try:
                await self._service.prepare(client)
                await client.start()
            except ServiceRefused:
                try:
                    await self._service.refused_by_server()  # plain sessions from now on; retry at once
                except StoreError as e:  # the plain NSUBs untie the queues one by one anyway
                    log_event(log, "smp.store_unavailable", error=type(e).__name__)
                continue
            except StoreError as e:  # our service certificate or ties unavailable: try again later
                log_event(log, "smp.store_unavailable", error=type(e).__name__)
                await client.close()
                self.state = "down"
                await pool._sleep(next(delays))
                continue
            except ClientError as e:
                stats.incr(Stat.SMP_CONNECT_FAILED)
                # which SMP servers users use is metadata: the host only at debug
                log.debug("SMP server unreachable: %s: %s", type(e).__name__, e)
                pool.connect_failures.event(type(e).__name__)
                self.state = "down"
                await pool._sleep(next(delays))
                continue
            stats.incr(Stat.SMP_CONNECTED)
            up_since = pool._clock()
            self.state, self._client = "up", client
            try:
                await self._serve(client)
            except StoreError as e:  # the store stayed away: start over, a new connection pages it again
                log_event(log, "smp.store_unavailable", error=type(e).__name__)
            except FencedOut:  # another instance owns the server now: stop, write nothing more
                log_event(log, "lease.fenced_out")
                pool._unlink(self)
                self.state = "dropped"
                return
            finally:
                self._client = None
                await client.close()
            if self.state == "ended":  # no live subscription needs this server: closed on purpose
                await self._lost(client)
                return
            self.state = "down"
            stats.incr(Stat.SMP_DISCONNECTED)
            log.debug("SMP connection lost: %s", client.close_error or "closed")
            pool.disconnects.event(type(client.close_error).__name__ if client.close_error else "closed")
            await self._lost(client)
            if self.handed_over():
                return
            if pool._clock() - up_since >= pool.settings.stable_after_s:
                delays = pool._delays()
            await pool._sleep(next(delays))

    async def _serve(self, client: SmpClient) -> None:
        """Until the connection ends: read its events, subscribe what the store holds, then new ones."""
        tasks = [asyncio.create_task(self._read(client)), asyncio.create_task(self._send(client)),
                 asyncio.create_task(self._watch_need())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, ClientError | asyncio.CancelledError):
                raise r

    async def _watch_need(self) -> None:
        """Returns (ending the connection) once subscriptions were forgotten and none needs this server."""
        pool = self._pool
        while True:
            await self._recheck.wait()
            await pool._sleep(pool.settings.coalesce_s)  # a TDEL forgets several at once: check once
            self._recheck.clear()
            if not await self._still_needed():
                return

    async def _lost(self, client: SmpClient) -> None:
        tied = self._service.tied_here  # tied to our service: left ACTIVE, NSUBS takes them back (Haskell)
        held = [q for q in client.queues(E.QueueState.PENDING, E.QueueState.ACTIVE) if q not in tied]
        if held:
            try:
                await self._set_statuses(held, SubStatus(SubStatusKind.INACTIVE), only_from=LOST_FROM)
            except StoreError:  # informational; the next connection sets them again
                log_event(log, "smp.mark_inactive_failed", count=len(held))
            except FencedOut:  # the lease was lost meanwhile: the new owner writes the statuses
                pass

    async def _set_statuses(self, nids: Sequence[bytes], status: SubStatus,
                            only_from: Collection[SubStatusKind] | None = None, tied: bool | None = None) -> None:
        store = self._pool._store
        fence = self._pool._fence(self.server)
        await self._pool._store_retry(lambda: store.set_subscription_statuses(
            self.server, nids, status, service_assoc=tied, only_from=only_from, fence=fence))

    # ------------------------------------------------------------ sending

    async def _send(self, client: SmpClient) -> None:
        pool = self._pool
        skip_tied = await self._service.start(client)  # one NSUBS for the queues tied to our service
        await self._page(client, skip_tied=skip_tied)
        while not self.resubscribed and client.awaiting:
            self._answered.clear()
            await self._answered.wait()
        self.resubscribed = True
        pool._link_done.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await pool._sleep(pool.settings.coalesce_s)
            if self._service.fallback:  # NSUBS did not cover the tied queues: one NSUB each
                drop = self._service.drop
                self._service.fallback = self._service.drop = False
                if drop:  # ERR SERVICE: untie all, then subscribe every live subscription again
                    await self._service.drop_ties()
                    await self._page(client)
                else:  # drift: the tied ones again, and their count and IdsHash as our records say
                    await self._service.recount(await self._page(client, only_tied=True))
            batch, self._new = list(self._new.items()), {}
            for i in range(0, len(batch), pool.settings.page_size):
                await self._subscribe(client, batch[i: i + pool.settings.page_size])

    async def _page(self, client: SmpClient, *, skip_tied: bool = False, only_tied: bool = False) -> list[bytes]:
        """NSUB what the store holds for this server (live, ACTIVE tokens), page by page; with ``only_tied``
        only those tied to our service, whose notifier ids it returns."""
        pool, tied = self._pool, []
        async for page in pool._store.iter_server_subscriptions(self.server, pool.settings.page_size,
                                                                 RESUBSCRIBE_KINDS, active_tokens_only=True,
                                                                 untied_only=skip_tied):
            subs = [(s.notifier_id, s.notifier_key) for s in page if s.service_assoc or not only_tied]
            if only_tied:
                tied += [nid for nid, _ in subs]
            await self._subscribe(client, subs)
        return tied

    async def _subscribe(self, client: SmpClient, subs: Sequence[tuple[bytes, bytes]]) -> None:
        pool = self._pool
        while client.awaiting >= pool.settings.max_in_flight:
            self._answered.clear()
            await self._answered.wait()
        queues = []
        for nid, key_der in subs:
            if client.queue_state(nid) in (E.QueueState.PENDING, E.QueueState.ACTIVE):
                continue  # already on this connection (an SNEW seen while paging)
            self._new.pop(nid, None)
            try:
                queues.append(NotifierQueue(nid, crypto.decode_stored_notifier_key(key_der)))
            except CodecError:
                pool._stats.incr(Stat.SUB_BAD_KEY)
        if not queues:
            return
        client.subscribe(queues)
        pool._stats.incr(Stat.SMP_NSUB_SENT, len(queues))
        await self._set_statuses([q.notifier_id for q in queues], SubStatus(SubStatusKind.PENDING),
                                 only_from=(SubStatusKind.NEW, SubStatusKind.INACTIVE))

    # ------------------------------------------------------------ receiving

    async def _read(self, client: SmpClient) -> None:
        async for batch in client.events():
            await self._handle(batch)

    async def _handle(self, batch: EventBatch) -> None:
        pool, stats = self._pool, self._pool._stats
        statuses: dict[SubStatus, list[bytes]] = defaultdict(list)
        tied: dict[bool, list[bytes]] = defaultdict(list)  # ACTIVE, tied to our service or not
        messages: list[Notice] = []
        now_ms = int(pool._clock() * 1000)
        client = self._client
        our_service = client.service_id if client is not None else None
        for ev in batch:
            match ev:
                case E.Subscribed(nid, sid):
                    is_tied = sid is not None and sid == our_service
                    tied[is_tied].append(nid)
                    if is_tied:
                        self._service.tied_here.add(nid)
                case E.SubscriptionFailed(nid, kind):
                    status = _FAILURE_STATUS.get(kind) or SubStatus.error(ev.status_text())
                    statuses[status].append(nid)
                case E.Ended(nid):
                    statuses[SubStatus(SubStatusKind.END)].append(nid)
                case E.Deleted(nid):
                    statuses[SubStatus(SubStatusKind.DELETED)].append(nid)
                case E.Message(nid, nonce, enc_meta, state):
                    stats.incr_server(Stat.NTF_RECEIVED, self.server.hosts)
                    if state is None:
                        stats.incr(Stat.NTF_RECEIVED_FORGOTTEN)  # SDEL/TDEL'd: SMP cannot unsubscribe
                    else:
                        messages.append(Notice(self.server, nid, now_ms, nonce, enc_meta))
                case E.SubscriptionTimedOut() | E.PingTimedOut():
                    stats.incr(Stat.SMP_TIMEOUTS)
                case E.Pong():
                    pass
                case E.ServiceSubscribed() | E.ServiceSubscriptionFailed() | E.ServiceEnded():
                    if self._service.on_event(ev, client.version if client is not None else None):
                        self._wake.set()  # the sender falls back to one NSUB per tied queue
                case E.ServerError() | E.Unexpected():
                    stats.incr(Stat.SMP_UNEXPECTED)
                    log.debug("SMP server sent something unexpected: %r", ev)
                case _:
                    assert_never(ev)
        answered = sum(isinstance(ev, E.Subscribed | E.SubscriptionFailed) for ev in batch)
        if answered:
            stats.incr(Stat.SMP_NSUB_ANSWERED, answered)
        if answered or any(isinstance(ev, E.SubscriptionTimedOut | E.ServiceSubscribed | E.ServiceSubscriptionFailed)
                           for ev in batch):
            self._answered.set()  # fewer commands awaited in time (a timed-out NSUB is re-sent by the session)
        # In a service session SOK serviceId ties the queue and any other SOK, or a final status, unties it.
        # Elsewhere the ties are left alone (no MD5s to compute): if a plain session untied queues at the
        # SMP server, the next NSUBS sees the drift and recounts.
        service = our_service is not None
        try:
            for is_tied, nids in tied.items():
                stats.incr(Stat.SMP_SUB_OK, len(nids))
                await self._set_statuses(nids, SubStatus(SubStatusKind.ACTIVE), tied=is_tied if service else None)
            for status, nids in statuses.items():
                stats.incr(_STATUS_COUNTER[status.kind], len(nids))
                await self._set_statuses(nids, status, tied=False if service else None)
        except FencedOut:  # the notices below came to this connection only: pushed all the same, then stop
            if messages:
                await self._notify(messages)
            raise
        if messages:
            await self._notify(messages)

    async def _notify(self, notices: list[Notice]) -> None:
        """Hand the block's notices to the push pipeline; waits while this server has a full share waiting
        there, and this link then reads nothing more (back-pressure on this SMP server only)."""
        await self._pool._pusher.accept(self.server, notices)
