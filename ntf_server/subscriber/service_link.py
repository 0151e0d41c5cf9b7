"""Our SMP service on one SMP server's link (``[subscriber] use_service_credentials``).

Theory of operation (simplexmq master's ``Notifications/Server.hs`` and ``Client/Agent.hs`` do the same):

* Before each connection the link asks for our service certificate for this server (the store makes it
  when first needed); the client offers it in TLS and in its hello (v16+). A server that refuses it
  (``BAD_SERVICE``) gets plain sessions from then on in this process, and the ties are dropped.
* After the handshake (:meth:`LinkService.start`): a new or changed service id drops the ties the store
  holds (they belonged to the old id) and remembers the new id; otherwise, when queues are tied, one
  ``NSUBS`` with the stored count and IdsHash is sent first, and the page-through of the store skips the
  tied subscriptions (the SMP server subscribes them all at once). NSUBs in a service session tie their
  queues (``SOK serviceId`` → the record's ``assoc`` flag and the server's count and IdsHash, in one
  store script).
* ``SOKS`` with another count (or, from v19, another IdsHash) is drift: the tied queues are subscribed
  one by one again on the same connection. ``ERR SERVICE`` (or any other NSUBS failure) drops the ties
  and subscribes everything one by one; an NSUBS timeout only falls back.
* Tied queues are not tracked one by one: a lost connection leaves their statuses as they are (ACTIVE),
  as Haskell does; their NMSGs are pushed when the store holds their subscription.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

from ntf_server.observability.logevents import log_event
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.protocol import smp as S, smp_events as E
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import SimpleError
from ntf_server.protocol.framing import SMP_VERSION_RCV_SERVICE
from ntf_server.store.base import ResubscriptionStore, ServiceStore
from ntf_server.store.records import SUB_INACTIVE
from ntf_server.subscriber.client import SmpClient
from ntf_server.transport.certs import new_service_credentials

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
SMP_SERVICE_REFUSED: Final = Counter("smp_service_refused",
                                     "SMP servers that refused our service certificate (plain sessions from then on)")
SMP_SERVICE_CHANGED: Final = Counter("smp_service_changed",
                                     "SMP servers that gave our service another id: ties dropped")
SMP_SERVICE_SUBSCRIBED: Final = Counter("smp_service_subscribed", "NSUBS answered with the count and IdsHash we stored")
SMP_SERVICE_DRIFT: Final = Counter("smp_service_drift",
                                   "NSUBS answered with another count or IdsHash: tied queues subscribed one by one")
SMP_SERVICE_FAILED: Final = Counter("smp_service_failed", "NSUBS failed (ERR SERVICE drops the ties) or timed out: "
                                    "queues subscribed one by one")
SMP_SERVICE_ENDED: Final = Counter("smp_service_ended", "ENDS: another session of our service took its queues")

T = TypeVar("T")
SERVICE_ERR: Final = SimpleError("SERVICE")
DROP_PAGE: Final = 1000


class LinkServiceStore(ServiceStore, ResubscriptionStore, Protocol):
    """What the service logic needs of the store."""


Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]  # the pool's store retry


class LinkService:
    def __init__(self, server: SMPServer, store: LinkServiceStore, stats: Stats, retry: Retry, *,
                 enabled: bool) -> None:
        self.server = server
        self._store = store
        self._stats = stats
        self._retry = retry
        self.enabled = enabled
        self.refused = False  # the SMP server refused our certificate: plain sessions from now on
        self.expected: tuple[int, bytes] | None = None  # what our NSUBS said we hold (this connection)
        self.fallback = False  # the sender subscribes tied queues one by one (drift, failure)
        self.drop = False  # ... after dropping the ties (ERR SERVICE)
        self.tied_here: set[bytes] = set()  # tied by NSUBs on this connection (not marked INACTIVE on loss)

    def __repr__(self) -> str:
        state = "off" if not self.enabled else "refused" if self.refused else "on"
        return f"<LinkService {state}{' fallback' if self.fallback else ''}>"

    async def prepare(self, client: SmpClient) -> None:
        """Before connecting: our certificate for this server, if we use services with it."""
        if self.enabled and not self.refused:
            make = new_service_credentials  # made by the store when first needed, then stored
            client.service = await self._call(lambda: self._store.service_credentials(self.server, make))

    async def refused_by_server(self) -> None:
        self.refused = True
        self._stats.incr(SMP_SERVICE_REFUSED)
        log_event(log, "smp.service_fallback", reason="refused", count=0)
        await self.drop_ties()

    async def start(self, client: SmpClient) -> bool:
        """After the handshake; True when NSUBS was sent (the pager then skips tied subscriptions)."""
        self.expected, self.fallback, self.drop, self.tied_here = None, False, False, set()
        sid = client.service_id
        if sid is None:
            return False
        state = await self._call(lambda: self._store.service_state(self.server))
        if state.service_id != sid:
            if state.service_id is not None or state.count:
                self._stats.incr(SMP_SERVICE_CHANGED)
                log_event(log, "smp.service_fallback", reason="new service id", count=state.count)
                await self.drop_ties()
            await self._call(lambda: self._store.set_service_id(self.server, sid))
            return False
        if state.count <= 0:
            return False
        client.subscribe_service(state.count, state.ids_hash)
        self.expected = (state.count, state.ids_hash)
        return True

    def on_event(self, ev: E.ServiceSubscribed | E.ServiceSubscriptionFailed | E.ServiceEnded,
                 version: int | None) -> bool:
        """An NSUBS answer or ENDS; True when the sender must fall back to NSUBs."""
        match ev:
            case E.ServiceSubscribed(count, ids_hash):
                same_hash = version is None or version < SMP_VERSION_RCV_SERVICE or self.expected is None \
                    or ids_hash == self.expected[1]
                if self.expected is not None and count == self.expected[0] and same_hash:
                    self._stats.incr(SMP_SERVICE_SUBSCRIBED)
                    return False
                self._stats.incr(SMP_SERVICE_DRIFT)
                log_event(log, "smp.service_fallback", reason="drift", count=count)
                self.fallback = True
                return True
            case E.ServiceSubscriptionFailed(error, detail):
                self._stats.incr(SMP_SERVICE_FAILED)
                log_event(log, "smp.service_fallback", reason=detail or str(error), count=0)
                self.fallback, self.drop = True, error == SERVICE_ERR
                return True
            case E.ServiceEnded(count):
                self._stats.incr(SMP_SERVICE_ENDED)
                log.debug("SMP service subscription of %d queues taken by another session", count)
                return False

    async def drop_ties(self) -> None:
        """Untie every subscription of this server (INACTIVE, to be subscribed again) and forget the id.
        One pass over the server's subscriptions (a store failure ends the connection; the next one
        finds the id gone or changed and drops again)."""
        async with contextlib.aclosing(self._store.tied_subscriptions(self.server, DROP_PAGE)) as pages:
            async for page in pages:
                await self._store.set_subscription_statuses(self.server, [s.notifier_id for s in page],
                                                            SUB_INACTIVE, service_assoc=False)
        await self._call(lambda: self._store.set_service_ties(self.server, 0, S.EMPTY_IDS_HASH))
        await self._call(lambda: self._store.set_service_id(self.server, None))

    async def recount(self, tied: list[bytes]) -> None:
        """After a drift: the count and IdsHash of the tied subscriptions just paged (what we hold)."""
        await self._call(lambda: self._store.set_service_ties(self.server, len(tied), S.queue_ids_hash(tied)))

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        result: T = await self._retry(call)
        return result
