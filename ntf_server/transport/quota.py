"""Request quotas applied to NTF connections before a request reaches the handlers.

``RequestLimits`` is server-wide for one kind of request: the per-connection rate, the per-address table
(ntf_server/transport/ratelimit.py, pure), the counter and the counted log of refusals. ``FrontDoor`` holds one per
kind: registrations (``TNEW``/``TRPL``), subscriptions (``SNEW``) and every command (the command budget:
without it, each request with a random signature cost a lookup and a signature check, ~2,100/s from one
connection). The listener asks it for one
``PeerQuotas`` per accepted connection, keyed by the peer's address; ``NtfConnection`` asks that before
running a request and answers ``ERR QUOTA`` when it says no (the Haskell server's answer to a request that
is valid but over a limit, as for ``TCRN``). Every request of a limited kind is charged, repeats included:
deciding whether one is a repeat costs a store lookup and an auth check, which is what a flood should not
get, and a repeat ``TNEW`` re-sends a verification push to a device. The defaults leave a retrying client
(and hundreds of phones behind one NAT) far below the limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ntf_server.config import RegistrationConfig, ServerConfig
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.protocol import ntf as P
from ntf_server.transport.ratelimit import AddressTable, QuotaVerdict, Rate, RegistrationQuota, address_key

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
REQ_QUOTA_EXCEEDED: Final = Counter("req_quota_exceeded",
                                    "NTF registrations refused by the registration rate limits (ERR QUOTA)")
SUB_QUOTA_EXCEEDED: Final = Counter("sub_quota_exceeded",
                                    "SNEW refused by the subscription rate limits or the per-token caps (ERR QUOTA)")
REQ_OVER_BUDGET: Final = Counter("req_over_budget",
                                 "NTF requests refused by the command budget per connection or address (ERR QUOTA)")


class RequestLimits:
    def __init__(self, per_connection: Rate, per_address: Rate, table_size: int, stats: Stats,
                 clock: Callable[[], float] = time.monotonic, *, what: str = "registration",
                 stat: Counter = REQ_QUOTA_EXCEEDED, refusals: CountedLog | None = None) -> None:
        """``what``: the kind of request (for messages); ``stat``: the counter of refusals; ``refusals``: their
        counted log (default: the registrations')."""
        self._per_connection = per_connection
        self._table = AddressTable(per_address, table_size)
        self._stats = stats
        self._stat = stat
        self._what = what
        self._clock = clock
        self.refusals = refusals or CountedLog(log, "registration refused over quota", clock=clock,
                                               event="registration.refused")

    def __repr__(self) -> str:
        return f"<RequestLimits {self._what} {self._per_connection.per_min}/min per connection, {self._table!r}>"

    def for_peer(self, host: str) -> ConnectionQuota:
        """``host``: the peer's address as text (``TlsConnection.peer``)."""
        return ConnectionQuota(self, RegistrationQuota(self._per_connection, self._table, address_key(host)))

    def _refused(self, verdict: QuotaVerdict) -> None:
        self._stats.incr(self._stat)
        log.debug("%s refused: over the per-%s limit", self._what, verdict.value)
        self.refusals.event(f"per-{verdict.value} limit")

    def flush(self) -> None:
        self.refusals.flush()


class ConnectionQuota:
    __slots__ = ("_limits", "_quota")

    def __init__(self, limits: RequestLimits, quota: RegistrationQuota) -> None:
        self._limits = limits
        self._quota = quota

    def allow(self) -> bool:
        verdict = self._quota.take(self._limits._clock())
        if verdict is QuotaVerdict.OK:
            return True
        self._limits._refused(verdict)
        return False


@dataclass(frozen=True, slots=True)
class PeerQuotas:
    """One connection's quotas, by kind of request."""

    registration: ConnectionQuota
    subscription: ConnectionQuota
    commands: ConnectionQuota

    def allow(self, cmd: P.NtfCommand) -> bool:
        """Charge ``cmd`` to the command budget and to its kind's quota; False: answer ``ERR QUOTA`` without
        running it (no store lookup, no signature check: what a flood of random signatures costs)."""
        if not self.commands.allow():
            return False
        if isinstance(cmd, P.TNew | P.TRpl):
            return self.registration.allow()
        if isinstance(cmd, P.SNew):
            return self.subscription.allow()
        return True


@dataclass(frozen=True, slots=True)
class FrontDoor:
    """The server-wide request limits of the NTF listener."""

    registration: RequestLimits
    subscription: RequestLimits
    commands: RequestLimits  # every command

    @classmethod
    def from_config(cls, r: RegistrationConfig, s: ServerConfig, stats: Stats) -> FrontDoor:
        return cls(
            RequestLimits(Rate(r.per_connection_per_min, r.per_connection_burst),
                          Rate(r.per_ip_per_min, r.per_ip_burst), r.ip_table_size, stats),
            RequestLimits(Rate(r.snew_per_connection_per_min, r.snew_per_connection_burst),
                          Rate(r.snew_per_ip_per_min, r.snew_per_ip_burst), r.ip_table_size, stats,
                          what="subscription", stat=SUB_QUOTA_EXCEEDED,
                          refusals=CountedLog(log, "subscription refused over quota", event="subscription.refused")),
            RequestLimits(Rate(s.commands_per_connection_per_min, s.commands_per_connection_burst),
                          Rate(s.commands_per_ip_per_min, s.commands_per_ip_burst), r.ip_table_size, stats,
                          what="request", stat=REQ_OVER_BUDGET,
                          refusals=CountedLog(log, "request refused over the command budget",
                                              event="request.over_budget")),
        )

    @property
    def summaries(self) -> list[CountedLog]:
        return [self.registration.refusals, self.subscription.refusals, self.commands.refusals]

    def for_peer(self, host: str) -> PeerQuotas:
        return PeerQuotas(self.registration.for_peer(host), self.subscription.for_peer(host),
                          self.commands.for_peer(host))
