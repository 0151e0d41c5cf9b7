"""One SMP server's link: the I/O shell around its ``LinkCore`` (subscriber/core.py, which decides).

Theory of operation. A link owns at most one connection (``client.SmpClient``) at a time: connect (DNS
resolved anew every time), subscribe, read, and after any loss reconnect after the core's backoff.
While connected three tasks run: the reader hands every batch of events to the core and carries out its
effects (status writes, notices to the pipeline, counters); the sender pages the store for the server's
live subscriptions and sends their NSUBs many to a block, keeping at most ``max_in_flight`` unanswered,
then sends new subscriptions as they come (after ``coalesce_s``, so that a burst shares blocks); the
watcher ends the connection once forgotten subscriptions leave no live one needing the server.

What the link needs of the pool comes in a ``LinkContext`` (subscriber/context.py); it touches nothing
else of the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from ntf_server.observability.logevents import log_event
from ntf_server.observability.metricdef import Counter
from ntf_server.protocol import smp_events as E
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.errors import FencedOut, StoreError
from ntf_server.store.records import SubscriptionRecord
from ntf_server.subscriber import core as C
from ntf_server.subscriber.client import SmpClient
from ntf_server.subscriber.context import LinkContext
from ntf_server.subscriber.core import LinkCore
from ntf_server.subscriber.link_errors import ClientError, ServiceRefused
from ntf_server.subscriber.linkstate import LinkEvent, LinkState
from ntf_server.subscriber.service_link import LinkService

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
SMP_UNEXPECTED: Final = Counter("smp_unexpected", "Unexpected SMP responses")
SMP_CONNECT_FAILED: Final = Counter("smp_connect_failed", "SMP connection attempts that failed")


class Link:
    """One SMP server: its connection, reconnects and the subscriptions waiting to be sent."""

    def __init__(self, server: SMPServer, ctx: LinkContext) -> None:
        self.server = server
        self._ctx = ctx
        self.core = LinkCore(server, ctx.delays, ctx.settings.stable_after_s)
        self._wake = asyncio.Event()
        self._client: SmpClient | None = None
        self._answered = asyncio.Event()
        self._recheck = asyncio.Event()  # subscriptions were forgotten: is this link still needed?
        self._service = LinkService(server, ctx.store, ctx.stats, ctx.retry, enabled=ctx.services)
        self.resubscribed = False  # the first connection paged everything and had every NSUB answered
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Link {self.server!r} {self.core.state.value} new={len(self.core.new)}>"

    @property
    def state(self) -> LinkState:
        return self.core.state

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._run(), name="smp link")

    async def hand_over(self) -> None:
        """Closed: the connection's event stream ends after what it already read, which ``_read`` handles as
        usual (notices to the pipeline, statuses), then ``_run`` marks the queues INACTIVE and ends instead
        of reconnecting. Not connected: cancelled, as nothing was read."""
        self.core.stopping = True
        if self._task is not None:
            if self._client is not None:
                await self._client.close()
            else:
                self._task.cancel()
            await asyncio.wait([self._task])
        self.core.move(LinkEvent.GONE)

    def add(self, sub: SubscriptionRecord) -> None:
        self.core.add(sub.notifier_id, sub.notifier_key)
        self._wake.set()

    def forget(self, notifier_id: bytes) -> None:
        self.core.forget(notifier_id)
        if self._client is not None:
            self._client.forget(notifier_id)
        self._recheck.set()

    async def _still_needed(self) -> bool:
        """Whether a live subscription needs this server; if not, the link ends (synchronously after the
        store's answer, so a subscription added meanwhile is seen, or goes to a new link)."""
        if self.core.new:
            return True
        try:
            needed = await self._ctx.retry(lambda: self._ctx.store.has_live_subscriptions(self.server))
        except StoreError:
            return True  # cannot tell: keep serving
        if needed or self.core.new:
            return True
        self.core.move(LinkEvent.NOT_NEEDED)
        self.resubscribed = True
        self._ctx.ended(self)
        return False

    async def _do(self, effects: Sequence[C.Effect]) -> None:
        """Carry out the core's effects in order. A fenced-out status write still hands on the notices
        (they came to this connection only), then raises."""
        ctx, stats = self._ctx, self._ctx.stats
        for i, fx in enumerate(effects):
            match fx:
                case C.Count(stat, n, per_server):
                    if per_server:
                        stats.incr_server(stat, self.server.hosts, n)
                    else:
                        stats.incr(stat, n)
                case C.WriteStatuses():
                    try:
                        await self._write(fx)
                    except FencedOut:
                        await self._do([n for n in effects[i + 1:] if isinstance(n, C.Notify)])
                        raise
                case C.Notify(notices):  # waits while this server has a full share waiting in the pipeline
                    await ctx.pusher.accept(self.server, notices)
                case C.Tie(nids):
                    self._service.tied_here.update(nids)
                case C.ServiceEvent(ev):
                    if self._service.on_event(ev, self._client.version if self._client is not None else None):
                        self._wake.set()  # the sender falls back to one NSUB per tied queue
                case C.Progress():
                    self._answered.set()
                case C.Odd(ev):
                    stats.incr(SMP_UNEXPECTED)
                    log.debug("SMP server sent something unexpected: %r", ev)
                case C.Sleep(seconds):
                    await asyncio.sleep(seconds)

    async def _write(self, w: C.WriteStatuses) -> None:
        store, fence = self._ctx.store, self._ctx.fence(self.server)
        await self._ctx.retry(lambda: store.set_subscription_statuses(self.server, w.nids, w.status, w.tied,
                                                                      w.only_from, fence))

    # ------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        ctx, core = self._ctx, self.core
        while not core.stopping and await self._still_needed():
            self._recheck.clear()
            core.move(LinkEvent.CONNECT)
            client = ctx.connect(self.server)
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
                await self._do(core.apply(C.ConnectFailed()))
                continue
            except ClientError as e:
                ctx.stats.incr(SMP_CONNECT_FAILED)
                # which SMP servers users use is metadata: the host only at debug
                log.debug("SMP server unreachable: %s: %s", type(e).__name__, e)
                ctx.connect_failures.event(type(e).__name__)
                await self._do(core.apply(C.ConnectFailed()))
                continue
            await self._do(core.apply(C.Connected(ctx.clock())))
            self._client = client
            try:
                await self._serve(client)
            except StoreError as e:  # the store stayed away: start over, a new connection pages it again
                log_event(log, "smp.store_unavailable", error=type(e).__name__)
            except FencedOut:  # another instance owns the server now: stop, write nothing more
                log_event(log, "lease.fenced_out")
                ctx.fenced(self)
                core.move(LinkEvent.GONE)
                return
            finally:
                self._client = None
                await client.close()
            if core.state is LinkState.UP:
                log.debug("SMP connection lost: %s", client.close_error or "closed")
                ctx.disconnects.event(type(client.close_error).__name__ if client.close_error else "closed")
            await self._lost(client)
            if core.final:  # ended on purpose (no live subscription needs the server)
                return

    async def _lost(self, client: SmpClient) -> None:
        tied = self._service.tied_here  # tied to our service: left ACTIVE, NSUBS takes them back (Haskell)
        held = [q for q in client.queues(E.QueueState.PENDING, E.QueueState.ACTIVE) if q not in tied]
        try:
            await self._do(self.core.apply(C.Lost(self._ctx.clock(), held)))
        except StoreError:  # informational; the next connection sets them again
            log_event(log, "smp.mark_inactive_failed", count=len(held))
        except FencedOut:  # the lease was lost meanwhile: the new owner writes the statuses
            pass

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
        while True:
            await self._recheck.wait()
            await asyncio.sleep(self._ctx.settings.coalesce_s)  # a TDEL forgets several at once: check once
            self._recheck.clear()
            if not await self._still_needed():
                return

    # ------------------------------------------------------------ sending

    async def _send(self, client: SmpClient) -> None:
        settings = self._ctx.settings
        skip_tied = await self._service.start(client)  # one NSUBS for the queues tied to our service
        await self._page(client, skip_tied=skip_tied)
        while not self.resubscribed and client.awaiting:
            self._answered.clear()
            await self._answered.wait()
        self.resubscribed = True
        self._ctx.first_done()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(settings.coalesce_s)
            if self._service.fallback:  # NSUBS did not cover the tied queues: one NSUB each
                drop = self._service.drop
                self._service.fallback = self._service.drop = False
                if drop:  # ERR SERVICE: untie all, then subscribe every live subscription again
                    await self._service.drop_ties()
                    await self._page(client)
                else:  # drift: the tied ones again, and their count and IdsHash as our records say
                    await self._service.recount(await self._page(client, only_tied=True))
            batch = self.core.take_new()
            for i in range(0, len(batch), settings.page_size):
                await self._subscribe(client, batch[i: i + settings.page_size])

    async def _page(self, client: SmpClient, *, skip_tied: bool = False, only_tied: bool = False) -> list[bytes]:
        """NSUB what the store holds for this server (live, ACTIVE tokens), page by page; with ``only_tied``
        only those tied to our service, whose notifier ids it returns."""
        tied = []
        async for page in self._ctx.store.iter_server_queues(self.server, self._ctx.settings.page_size,
                                                             untied_only=skip_tied):
            subs = [(q.notifier_id, q.notifier_key) for q in page if q.service_assoc or not only_tied]
            if only_tied:
                tied += [nid for nid, _ in subs]
            await self._subscribe(client, subs)
        return tied

    async def _subscribe(self, client: SmpClient, subs: Sequence[tuple[bytes, bytes]]) -> None:
        while client.awaiting >= self._ctx.settings.max_in_flight:
            self._answered.clear()
            await self._answered.wait()
        queues, effects = self.core.to_send(subs, client.queue_state)
        if queues:
            client.subscribe(queues)
        await self._do(effects)

    # ------------------------------------------------------------ receiving

    async def _read(self, client: SmpClient) -> None:
        async for batch in client.events():
            await self._do(self.core.apply(C.Received(batch, self._ctx.clock(), client.service_id)))
