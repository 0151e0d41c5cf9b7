"""Server counters and gauges (STYLE 11): cheap increments, a frozen snapshot, pure renderers elsewhere.

A counter is named by a typed definition, not a free string: a ``metricdef.Counter`` declared in the
module that counts it (name, help text, family, per SMP server). A typo is a mypy error, and reading an
unknown name raises instead of silently starting a new counter. Names follow the Haskell server's
counters (§6.4) in snake case, so operators can compare. Every defined counter shows up in ``/metrics``
and ``/v1/stats`` by itself (the renderers walk ``metricdef.REGISTRY``).

Some counters are also kept per SMP server (``incr_server``, the Haskell ``…Own`` maps): per host for the
operator's own servers (``subscriber.own_server_domains``), all others together as ``"other"``. A gauge
(``metricdef.Gauge``) is a function the owner of the value registers with ``track``; the snapshot reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ntf_server.observability.metricdef import REGISTRY, Counter, Gauge
from ntf_server.observability.ownservers import OwnServers


def _key(name: Counter | str) -> str:
    """The external name of a counter; a string must name a defined counter, else ValueError."""
    if isinstance(name, Counter):
        return name.name
    if isinstance(REGISTRY.get(name), Counter):
        return name
    raise ValueError(f"{name!r} is not a counter")


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    counters: Mapping[str, int]  # external name -> count, every defined counter
    # (counter, own server host or "other") -> count, for the counters kept per SMP server
    by_server: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    gauges: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # tracked gauges

    def __getitem__(self, name: Counter | str) -> int:
        return self.counters.get(_key(name), 0)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counters)


class Stats:
    __slots__ = ("_by_server", "_c", "_gauges", "_labels", "own")

    def __init__(self, own: OwnServers | None = None) -> None:
        self._c: dict[str, int] = {}
        self._by_server: dict[tuple[str, str], int] = {}
        self._labels: dict[tuple[str, ...], str] = {}  # hosts -> label (a handful of SMP servers)
        self._gauges: dict[str, Callable[[], float]] = {}
        self.own = own or OwnServers()

    def incr(self, name: Counter, n: int = 1) -> None:
        key = name.name
        self._c[key] = self._c.get(key, 0) + n

    def incr_server(self, name: Counter, hosts: Sequence[str], n: int = 1) -> None:
        """Count ``name`` in total and for the SMP server with ``hosts`` (own host name, else "other")."""
        if not name.per_server:
            raise ValueError(f"counter {name.name} is not kept per SMP server")
        self.incr(name, n)
        key = tuple(hosts)
        label = self._labels.get(key)
        if label is None:
            label = self._labels[key] = self.own.label(key)
        k = (name.name, label)
        self._by_server[k] = self._by_server.get(k, 0) + n

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Read ``gauge`` with ``read`` whenever the figures are gathered (one reader per gauge)."""
        self._gauges[gauge.name] = read

    def __getitem__(self, name: Counter | str) -> int:
        """Read one counter; a string must be a defined name (tests read by name), else ValueError."""
        return self._c.get(_key(name), 0)

    def snapshot(self) -> StatsSnapshot:
        counters = {c.name: self._c.get(c.name, 0) for c in REGISTRY.counters()}
        gauges = {name: read() for name, read in self._gauges.items()}
        return StatsSnapshot(MappingProxyType(counters), MappingProxyType(dict(self._by_server)),
                             MappingProxyType(gauges))

    def __repr__(self) -> str:
        busy = ", ".join(f"{k}={v}" for k, v in self._c.items() if v)
        return f"<Stats {busy or 'idle'}>"
