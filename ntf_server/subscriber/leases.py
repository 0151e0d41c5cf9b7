"""The lease manager: which SMP servers this instance subscribes, when several share one Redis.

Theory of operation. Every SMP server is subscribed by exactly one instance at a time: the one holding its
lease in Redis (store/leases.py: set-if-absent with expiry and a fencing token). Each start picks a random
instance id (``instance_ids``: a start on the state directory of a dead one frees that one's leases at once).
Every ``renew_s`` the manager

1. says it is alive (presence, expiring after ``ttl_s``) and learns how many instances are;
2. renews the leases it holds; one that is not its own any more is *lost*: its link stops at once;
3. reads the listing (every SMP server with subscriptions, its count and owner) and decides, purely
   (``plan``), which free servers to take: while this instance holds fewer subscriptions than its fair share
   (all subscriptions / instances alive), the largest free servers first, and any server free for longer
   than ``grace_s`` whatever the share (so nothing stays unsubscribed because of rounding);
4. takes them (set-if-absent: two instances racing for one server, one wins) and tells the pool to serve
   them, which pages the server's subscriptions from the store as on any new connection.

When Redis cannot be reached the leases cannot be renewed: a lease not confirmed for ``ttl_s - renew_s``
is dropped by its holder before Redis can give it to another (and a round that comes that late, in a starved
process, closes those links before renewing, serving them again only if the lease is still its own), so
two connections never hold one server's queues (the SMP server would END one of them: the ping-pong of the
Haskell server). After kill -9 nothing is released: the leases expire after ``ttl_s`` and the other
instances take them at their next round.

An SNEW that lands on an instance that does not own its SMP server is stored as NEW, as always, and its
subscription id handed to the owner through the server's hand-off list (store/leases.py ``lh``): the
owner pops it every ``handoff_s`` and subscribes it. A server nobody owns yet keeps its list until an
owner takes it; that owner pages every NEW subscription anyway.

5. rebalances when an instance joins (``to_give_up``): with no server free, an instance over its fair share
   hands one server a round to an instance below it (its link stops, then the lease is released, and the
   poorer instance takes it at its next round); only moves that narrow the gap and leave the giver at its
   share, so a server never goes back and forth.

Each worker of an instance (``[server] workers``) is one such holder, with its own instance id
(supervisor/role.py). Status writes carry the lease
(``fence``; the status script of store/sub_scripts.py refuses a stale one), so a holder paused past its expiry
writes nothing once another has the server.

Why one module of about 320 lines: the round's steps, the SNEW hand-off and the rebalancing share one
held-lease state; the pure decisions (``plan``, ``to_give_up``, ``overdue``) are apart, in lease_plan.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final, Protocol

from ntf_server.observability.logevents import log_event
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import RemovedSub
from ntf_server.store.errors import StoreError
from ntf_server.store.leases import NO_LEASE, Lease, ServerLease, fence
from ntf_server.store.records import RESUBSCRIBE_KINDS, SubscriptionRecord
from ntf_server.subscriber.lease_plan import DEFAULT_LEASES, LeaseSettings, overdue, plan, to_give_up

log = logging.getLogger(__name__)

HANDOFF_QUEUE: Final = 10_000  # SNEWs waiting to be handed off; beyond, the owner finds them at its next connect
LEASE_INSTANCE_FILE: Final = "instance"  # in the state directory: the id of the last start (instance_ids)
HANDOFF_BATCH: Final = 1000  # subscription ids popped per server per round


class LeaseStore(Protocol):
    """What the manager needs of the store (store/leases.py)."""

    async def listing(self) -> list[ServerLease]: ...
    async def acquire(self, server: SMPServer, number: int, instance: str, ttl_s: float) -> Lease | None: ...
    async def renew(self, leases: Sequence[Lease], instance: str, ttl_s: float) -> list[bool]: ...
    async def release(self, leases: Sequence[Lease], instance: str) -> int: ...
    async def presence(self, instance: str, ttl_s: float) -> list[str]: ...
    async def release_instance(self, instance: str) -> int: ...
    async def hand_off(self, server: SMPServer, sub_id: bytes) -> None: ...
    async def take_handoffs(self, lease: Lease, instance: str, limit: int) -> list[bytes]: ...


class Served(Protocol):
    """The subscriber pool as the manager drives it."""

    def serve(self, server: SMPServer) -> None: ...
    def drop(self, server: SMPServer) -> None: ...
    async def hand_over(self, server: SMPServer) -> None: ...
    def subscribe(self, sub: SubscriptionRecord) -> None: ...
    def forget(self, subs: Sequence[RemovedSub]) -> None: ...
    def token_activated(self, token_id: bytes, route: Callable[[SubscriptionRecord], None] | None = None) -> None: ...


def instance_ids(path: Path) -> tuple[str, str | None]:
    """A new instance id, recorded in ``path`` (in the state directory), and the one recorded there by the
    previous start, if any. The state lock (statelock.py) proves that one is no longer running: its leases
    are freed at once instead of after their expiry, so a restart after kill -9 resubscribes at once."""
    try:
        previous: str | None = path.read_text().strip() or None
    except FileNotFoundError:
        previous = None
    new = secrets.token_hex(8)
    path.write_text(new + "\n")
    return new, previous


# ---------------------------------------------------------------- the loop


class LeaseManager:
    """``SubscriptionSink`` for the handlers (SNEW on a server owned elsewhere is handed off); ``run`` is a
    long-lived server part; ``release_all`` at a graceful stop, once the pool has stopped."""

    def __init__(
        self,
        store: LeaseStore,
        lookup: Callable[[bytes], Awaitable[SubscriptionRecord | None]],
        settings: LeaseSettings = DEFAULT_LEASES,
        *,
        instance: str | None = None,
        predecessor: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._lookup = lookup
        self.settings = settings
        self.instance = instance or secrets.token_hex(8)
        self._predecessor = predecessor
        self._clock = clock
        self._sleep = sleep
        self._pool: Served | None = None
        self._held: dict[SMPServer, Lease] = {}
        self._confirmed: dict[SMPServer, float] = {}
        self._free_since: dict[SMPServer, float] = {}
        self._outgoing: asyncio.Queue[SubscriptionRecord] = asyncio.Queue(HANDOFF_QUEUE)
        self._outgoing_ready = asyncio.Event()
        self.alive = 1
        self._rounds = 0
        self.handoffs_dropped = 0

    def __repr__(self) -> str:
        return f"<LeaseManager {self.instance} holds {len(self._held)} of {self.alive} instances>"

    def attach(self, pool: Served) -> None:
        self._pool = pool

    def holds(self, server: SMPServer) -> bool:
        return server.normalized() in self._held

    def fence(self, server: SMPServer) -> str:
        """What a status write on ``server`` must still hold in Redis: this instance's lease, or (not held)
        a value no lease has, so the write is refused."""
        lease = self._held.get(server.normalized())
        return fence(lease.token if lease is not None else NO_LEASE, self.instance)

    def held(self) -> list[Lease]:
        return list(self._held.values())

    # ------------------------------------------------------------ SubscriptionSink

    def subscribe(self, sub: SubscriptionRecord) -> None:
        assert self._pool is not None, "attach the pool first"
        if self.holds(sub.server):
            self._pool.subscribe(sub)
            return
        try:
            self._outgoing.put_nowait(sub)
            self._outgoing_ready.set()
        except asyncio.QueueFull:  # stored NEW: the owner subscribes it when it next connects
            self.handoffs_dropped += 1
            log_event(log, "lease.handoff_dropped", count=1)

    def forget(self, subs: Sequence[RemovedSub]) -> None:
        assert self._pool is not None, "attach the pool first"
        self._pool.forget(subs)  # a queue owned elsewhere stays on its owner's connection: SMP cannot unsubscribe

    def token_activated(self, token_id: bytes) -> None:
        """TVFY: the token's stored subscriptions go to their servers' owners (here, or handed off)."""
        assert self._pool is not None, "attach the pool first"
        self._pool.token_activated(token_id, route=self.subscribe)

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._hand_off(), name="lease hand-off out")
            tg.create_task(self._pick_up(), name="lease hand-off in")
            if not self._rounds:
                await self.round()
            while True:
                await self._sleep(self.settings.renew_s)
                await self.round()

    async def round(self) -> None:
        """One round: presence, renewals, listing, acquisitions (module docstring)."""
        s, started = self.settings, self._clock()
        self._rounds += 1
        # a round that comes late (the process starved: an overloaded event loop, a paused VM) may find a lease
        # already freed by Redis and taken by another instance, whose links then subscribe the same queues:
        # such a lease's link stops before anything else; if the renewal below finds it still ours, it is
        # served again (a resubscription, instead of two connections holding its queues)
        late = [self._held[x] for x, at in self._confirmed.items() if overdue(started, at, s)]
        for lease in late:  # closed before the renewal (and before a new link of its own, if it is still ours)
            assert self._pool is not None, "attach the pool first"
            del self._held[lease.server], self._confirmed[lease.server]
            log_event(log, "lease.lost", server=lease.number, token=lease.token, reason="late")
            await self._pool.hand_over(lease.server)
        try:
            for lease, ok in zip(late, await self._store.renew(late, self.instance, s.ttl_s) if late else [],
                                 strict=True):
                if ok:
                    self._gain(lease, started)
            if self._predecessor is not None:
                freed = await self._store.release_instance(self._predecessor)
                self._predecessor = None
                if freed:
                    log_event(log, "lease.predecessor_released", count=freed)
            alive = await self._store.presence(self.instance, s.ttl_s)
            self.alive = max(len(alive), 1)
            held = list(self._held.values())
            for lease, ok in zip(held, await self._store.renew(held, self.instance, s.ttl_s), strict=True):
                if ok:
                    self._confirmed[lease.server] = started
                else:
                    self._lose(lease.server, "taken")
            listing = await self._store.listing()
        except StoreError as e:
            log_event(log, "lease.store_failed", error=type(e).__name__)
            for server in [x for x, at in self._confirmed.items() if overdue(self._clock(), at, s)]:
                self._lose(server, "unconfirmed")
            return
        now = self._clock()
        free = {x.server for x in listing if x.owner is None}
        self._free_since = {x: self._free_since.get(x, now) for x in free}
        # what this instance holds counts as its own even if the listing raced a renewal
        view = [replace(x, owner=self.instance) if x.server in self._held else x for x in listing]
        for x in plan(view, self.instance, self.alive, self._free_since, now, s.grace_s):
            try:
                got = await self._store.acquire(x.server, x.number, self.instance, s.ttl_s)
            except StoreError as e:
                log_event(log, "lease.store_failed", error=type(e).__name__)
                return
            if got is not None:
                self._gain(got, now)
        handed = to_give_up(view, self.instance, alive)
        if handed is not None and handed.server in self._held:
            await self._give_up(handed.server)

    def _gain(self, lease: Lease, now: float) -> None:
        assert self._pool is not None, "attach the pool first"
        self._held[lease.server] = lease
        self._confirmed[lease.server] = now
        self._free_since.pop(lease.server, None)
        log_event(log, "lease.gained", server=lease.number, token=lease.token)
        self._pool.serve(lease.server)

    def _lose(self, server: SMPServer, why: str) -> None:
        assert self._pool is not None, "attach the pool first"
        lease = self._held.pop(server)
        self._confirmed.pop(server, None)
        log_event(log, "lease.lost", server=lease.number, token=lease.token, reason=why)
        self._pool.drop(server)

    async def _give_up(self, server: SMPServer) -> None:
        """Hand a server over (rebalancing): its link stops first (what it read is pushed, its statuses
        written), then the lease is released, so the next owner never subscribes while this connection
        still holds the queues."""
        assert self._pool is not None, "attach the pool first"
        lease = self._held.pop(server)
        self._confirmed.pop(server, None)
        log_event(log, "lease.given_up", server=lease.number, token=lease.token)
        await self._pool.hand_over(server)
        with contextlib.suppress(StoreError):  # else it expires after ttl_s
            await self._store.release([lease], self.instance)

    async def release_all(self) -> None:
        """Graceful stop (after the pool stopped): give every lease up, so others take them at once."""
        held, self._held = list(self._held.values()), {}
        self._confirmed.clear()
        with contextlib.suppress(StoreError):  # unreleased leases expire after ttl_s
            await self._store.release(held, self.instance)
            await self._store.presence(self.instance, 0)

    # ------------------------------------------------------------ SNEW hand-off

    async def _hand_off(self) -> None:
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            await self.hand_off_waiting()

    async def hand_off_waiting(self) -> None:
        """Write the SNEWs queued for other owners to their servers' hand-off lists."""
        while not self._outgoing.empty():
            sub = self._outgoing.get_nowait()
            if self.holds(sub.server) and self._pool is not None:  # gained meanwhile
                self._pool.subscribe(sub)
                continue
            try:
                await self._store.hand_off(sub.server, sub.sub_id)
            except StoreError:
                self.handoffs_dropped += 1
                log_event(log, "lease.handoff_dropped", count=1)

    async def _pick_up(self) -> None:
        while True:
            await self._sleep(self.settings.handoff_s)
            await self.pick_up()

    async def pick_up(self) -> None:
        """Subscribe the SNEWs other instances handed to the servers this one owns."""
        for lease in list(self._held.values()):
            # on a store error, ids already popped stay NEW in the store: subscribed at the next connect
            with contextlib.suppress(StoreError):
                for sid in await self._store.take_handoffs(lease, self.instance, HANDOFF_BATCH):
                    self._take(lease, await self._lookup(sid))

    def _take(self, lease: Lease, sub: SubscriptionRecord | None) -> None:
        if sub is None or sub.server != lease.server or sub.status.kind not in RESUBSCRIBE_KINDS:
            return  # deleted meanwhile
        if self.holds(sub.server) and self._pool is not None:
            self._pool.subscribe(sub)
