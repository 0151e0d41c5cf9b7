"""Which accepted sockets the NTF listener keeps: connection caps as pure bookkeeping.

Theory of operation: every accepted TCP socket is counted from ``admit`` until ``release``, whatever
phase it is in, so sockets that never finish TLS hold a slot like any other. Four limits apply at accept:
all sockets (``max_connections``), sockets still in the TLS or NTF handshake (``max_handshakes``, smaller:
a handshake is short for a real client, so many at once means a flood), and sockets per client address
(``max_per_ip``), and sockets in a handshake per client address (``max_handshakes_per_ip``: without it,
two addresses could hold every handshake slot and lock everyone else out). A client address is the IPv4
address, or the /56 prefix of an IPv6 address (ratelimit.address_key); an IPv4-mapped IPv6 address
counts as its IPv4 address. Refusing happens before any TLS work, so a refused socket costs nothing.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass


class Refusal(enum.StrEnum):
    """Why a socket was refused (each counted: listener.py `_REFUSED_BY`)."""

    CONNECTIONS = "connections"
    HANDSHAKES = "handshakes"
    PER_IP = "per_ip"
    HANDSHAKES_PER_IP = "handshakes_per_ip"


@dataclass(frozen=True, slots=True)
class Caps:
    max_connections: int
    max_handshakes: int
    max_per_ip: int
    max_handshakes_per_ip: int | None = None  # None: only the global handshake cap


class Admission:
    """Counts of live sockets: total, in handshake, per client key. Not thread-safe (one event loop)."""

    __slots__ = ("_caps", "_handshaking", "_handshaking_per_key", "_per_key", "_total")

    def __init__(self, caps: Caps) -> None:
        self._caps = caps
        self._total = 0
        self._handshaking = 0
        self._per_key: Counter[str] = Counter()
        self._handshaking_per_key: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<Admission {self._total} sockets, {self._handshaking} in handshake, {len(self._per_key)} clients>"

    @property
    def total(self) -> int:
        return self._total

    @property
    def handshaking(self) -> int:
        return self._handshaking

    def count(self, key: str) -> int:
        return self._per_key.get(key, 0)

    def admit(self, key: str) -> Refusal | None:
        """Count a just-accepted socket (in handshake), or say which limit refuses it."""
        if self._total >= self._caps.max_connections:
            return Refusal.CONNECTIONS
        if self._handshaking >= self._caps.max_handshakes:
            return Refusal.HANDSHAKES
        if self._per_key.get(key, 0) >= self._caps.max_per_ip:
            return Refusal.PER_IP
        per_ip = self._caps.max_handshakes_per_ip
        if per_ip is not None and self._handshaking_per_key.get(key, 0) >= per_ip:
            return Refusal.HANDSHAKES_PER_IP
        self._total += 1
        self._handshaking += 1
        self._per_key[key] += 1
        self._handshaking_per_key[key] += 1
        return None

    def handshake_done(self, key: str) -> None:
        """An admitted socket finished its handshakes (TLS and NTF): it no longer holds a handshake slot."""
        assert self._handshaking > 0, "handshake_done without a socket in handshake"
        self._handshaking -= 1
        _decrement(self._handshaking_per_key, key)

    def release(self, key: str, *, handshaking: bool) -> None:
        """An admitted socket is gone; ``handshaking`` = it ended before ``handshake_done``."""
        assert self._per_key[key] > 0, "release of a key with no sockets"
        self._total -= 1
        if handshaking:
            self._handshaking -= 1
            _decrement(self._handshaking_per_key, key)
        _decrement(self._per_key, key)


def _decrement(counts: Counter[str], key: str) -> None:
    """One less for ``key``; keys at zero are dropped (the table holds only live addresses)."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
