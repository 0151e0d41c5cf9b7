"""Registration quotas applied to NTF connections before a request reaches the handlers (issue 8 item 6).

``RegistrationLimits`` is server-wide: the per-connection rate, the per-address table (ntf_server/
ratelimit.py, pure) and the counted log of refusals. The listener asks it for one ``ConnectionQuota`` per
accepted connection, keyed by the peer's address; ``NtfConnection`` asks that quota before running a
``TNEW`` or ``TRPL`` and answers ``ERR QUOTA`` when it says no (the Haskell server's answer to a request
that is valid but over a limit, as for ``TCRN``). Every ``TNEW``/``TRPL`` is charged, repeats included:
deciding whether one is a repeat costs a store lookup and an auth check, which is what a flood should not
get, and a repeat re-sends a verification push to a device. The defaults leave a retrying client (and
hundreds of phones behind one NAT) far below the limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ntf_server.logsummary import CountedLog
from ntf_server.ratelimit import AddressTable, Rate, RegistrationQuota, Verdict, address_key
from ntf_server.stats import Stat, Stats

log = logging.getLogger(__name__)


class RegistrationLimits:
    def __init__(self, per_connection: Rate, per_address: Rate, table_size: int, stats: Stats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_connection = per_connection
        self._table = AddressTable(per_address, table_size)
        self._stats = stats
        self._clock = clock
        self.refusals = CountedLog(log, "registration refused over quota", clock=clock, event="registration.refused")

    def __repr__(self) -> str:
        return f"<RegistrationLimits {self._per_connection.per_min}/min per connection, {self._table!r}>"

    def for_peer(self, host: str) -> ConnectionQuota:
        """``host``: the peer's address as text (``TlsConnection.peer``)."""
        return ConnectionQuota(self, RegistrationQuota(self._per_connection, self._table, address_key(host)))

    def _refused(self, verdict: Verdict) -> None:
        self._stats.incr(Stat.REQ_QUOTA_EXCEEDED)
        log.debug("registration refused: over the per-%s limit", verdict.value)
        self.refusals.event(f"per-{verdict.value} limit")

    def flush(self) -> None:
        self.refusals.flush()


class ConnectionQuota:
    __slots__ = ("_limits", "_quota")

    def __init__(self, limits: RegistrationLimits, quota: RegistrationQuota) -> None:
        self._limits = limits
        self._quota = quota

    def allow(self) -> bool:
        verdict = self._quota.take(self._limits._clock())
        if verdict is Verdict.OK:
            return True
        self._limits._refused(verdict)
        return False
