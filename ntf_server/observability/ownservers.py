"""Which SMP servers are the operator's own (``subscriber.own_server_domains``, §6.6 ``[SUBSCRIBER]``).

Figures per SMP server are shown only for these; every other server is folded into ``"other"``, because
which servers an operator's users talk to is metadata about those users, and the host names of servers
run by third parties are none of the metrics' business. Pure: no I/O.

A host is own when it *is* one of the listed domains or a subdomain of one (``smp1.example.org`` for
``example.org``). The Haskell server compares plain suffixes, which also counts ``badexample.org`` as
``example.org``'s; we match whole labels on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

OTHER: Final = "other"


class OwnServers:
    __slots__ = ("_domains",)

    def __init__(self, domains: Iterable[str] = ()) -> None:
        self._domains = tuple(d.strip(".").lower() for d in domains if d.strip("."))

    def __repr__(self) -> str:
        return f"<OwnServers {len(self._domains)} domains>"

    def __bool__(self) -> bool:
        return bool(self._domains)

    def is_own_host(self, host: str) -> bool:
        h = host.rstrip(".").lower()
        return any(h == d or h.endswith("." + d) for d in self._domains)

    def label(self, hosts: Sequence[str]) -> str:
        """The label of a server with these hosts: its first own host name, else ``"other"``."""
        for host in hosts:
            if self.is_own_host(host):
                return host.rstrip(".").lower()
        return OTHER
