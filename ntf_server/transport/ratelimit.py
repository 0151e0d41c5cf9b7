"""Registration rate limits: GCRA per connection and per client address, ``now`` injected.

Theory of operation: a limit is a sustained rate and a burst (``Rate``). Its state is one number per key,
the theoretical arrival time ``tat`` of GCRA (the generic cell rate algorithm, equivalent to a token
bucket): a request at ``now`` conforms when ``max(tat, now) - now <= (burst - 1) * T`` with ``T = 60 /
per_min``, and then moves ``tat`` to ``max(tat, now) + T``. A key whose ``tat`` is in the past is in the
same state as a key never seen, so it can be forgotten: the per-address table drops such keys as it goes
(oldest first) and never holds more than ``max_keys`` (beyond that the least recently seen address is
forgotten, i.e. forgiven — the price of bounded memory).

``RegistrationQuota`` is one connection's view: its own GCRA plus the shared per-address table. A
registration is taken only when both conform, and then charged to both (a refused request costs
nothing, so a client that backs off gets through as soon as either limit allows).

Address keys: an IPv4 address, or the /56 network of an IPv6 address (one subscriber line usually gets a
/56 or a /64; keyed per /64, a /56 would get 256 quotas). IPv4-mapped IPv6 counts as IPv4.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

IPV6_PREFIX_LEN: Final = 56


@dataclass(frozen=True, slots=True)
class Rate:
    per_min: float  # sustained; 0 = unlimited
    burst: int  # requests allowed back to back from a rested state

    @property
    def unlimited(self) -> bool:
        return self.per_min <= 0

    @property
    def interval_s(self) -> float:
        return 60.0 / self.per_min

    def next_tat(self, tat: float | None, now: float) -> float | None:
        """The new ``tat`` if a request at ``now`` conforms, else None."""
        start = now if tat is None or tat < now else tat
        if start - now > (self.burst - 1) * self.interval_s:
            return None
        return start + self.interval_s


class AddressTable:
    """GCRA state per client address, bounded: ``max_keys`` entries at most, rested ones dropped."""

    def __init__(self, rate: Rate, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate = rate
        self._max = max_keys
        self._tat: OrderedDict[str, float] = OrderedDict()  # least recently charged first

    def __len__(self) -> int:
        return len(self._tat)

    def __repr__(self) -> str:
        return f"<AddressTable {len(self._tat)}/{self._max} addresses, {self.rate.per_min}/min burst {self.rate.burst}>"

    def peek(self, key: str, now: float) -> float | None:
        return self.rate.next_tat(self._tat.get(key), now)

    def charge(self, key: str, tat: float, now: float) -> None:
        self._tat[key] = tat
        self._tat.move_to_end(key)
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat > now and len(self._tat) <= self._max:
                return
            del self._tat[key]


class QuotaVerdict(enum.Enum):
    OK = "ok"
    CONNECTION = "connection"  # over the per-connection limit
    ADDRESS = "address"  # over the per-address limit


class RegistrationQuota:
    """One connection's registration quota (``TNEW``/``TRPL``): its own limit and its address's."""

    __slots__ = ("_address", "_key", "_rate", "_tat")

    def __init__(self, rate: Rate, address: AddressTable | None, key: str) -> None:
        self._rate = rate
        self._address = address if address is not None and not address.rate.unlimited else None
        self._key = key
        self._tat: float | None = None

    def take(self, now: float) -> QuotaVerdict:
        conn_tat = None if self._rate.unlimited else self._rate.next_tat(self._tat, now)
        if conn_tat is None and not self._rate.unlimited:
            return QuotaVerdict.CONNECTION
        addr_tat = None
        if self._address is not None:
            addr_tat = self._address.peek(self._key, now)
            if addr_tat is None:
                return QuotaVerdict.ADDRESS
            self._address.charge(self._key, addr_tat, now)
        if conn_tat is not None:
            self._tat = conn_tat
        return QuotaVerdict.OK


def address_key(host: str) -> str:
    """The per-address limiter key of a peer address (see the module doc); unparseable hosts (a unix
    socket, a test transport) share one key."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "other"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX_LEN), strict=False))
    return str(ip)
