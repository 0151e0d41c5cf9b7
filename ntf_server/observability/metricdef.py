"""Metric definitions, declared next to the code that counts (as Sygnal declares prometheus-client metrics).

A counter is one module-level ``Counter`` in the module that counts it: its stable external name (the
``/v1/stats`` key; ``ntf_<spelled name>_total`` in ``/metrics``), its help text, the labelled ``Family`` it
is shown in (if any), and whether it is also kept per SMP server. A gauge is one ``Gauge`` there too, and
the instance that knows the value tracks it (``Stats.track``). Defining one registers it here, and the
renderers walk this registry: ``/metrics`` (admin/metrics.py), ``/v1/stats`` (admin/views.py) and the sums
across workers (admin/workers.py) pick a new metric up with no other edit.

Why not prometheus-client's own ``Counter`` objects: the server runs several worker processes whose
figures worker 0 sums from JSON, folds per-SMP-server counts by ``own_server_domains``, and serves the same
figures as JSON (``/v1/stats``). So the values stay in ``Stats`` (a plain dict per process, one increment
per event, no locks), frozen into a snapshot per request; these objects only describe them.

``MODULES`` lists the modules that define metrics, imported before the registry is read, so a renderer
shows every metric (at zero) even in a process that has not imported the module yet;
tests/admin/test_metricdef.py checks the list is complete.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Final, Literal

MODULES: Final = (
    "ntf_server.handlers",
    "ntf_server.maintenance",
    "ntf_server.transport.listener",
    "ntf_server.transport.ntf_connection",
    "ntf_server.transport.quota",
    "ntf_server.push.cron",
    "ntf_server.push.deferred",
    "ntf_server.push.model",
    "ntf_server.push.pipeline",
    "ntf_server.subscriber.core",
    "ntf_server.subscriber.link",
    "ntf_server.subscriber.pool",
    "ntf_server.subscriber.service_link",
)


@dataclass(frozen=True, slots=True)
class Family:
    """Counters shown as one labelled metric family (``ntf_<name>_total{<label>="..."}``)."""

    name: str  # without the ntf_ prefix and _total suffix
    label: str
    help: str


@dataclass(frozen=True, slots=True)
class Counter:
    name: str  # stable external name: the /v1/stats key, and the metric name unless in a family
    help: str
    family: Family | None = None
    value: str = ""  # its label value in ``family``
    per_server: bool = False  # also kept per SMP server (``Stats.incr_server``; own hosts, else "other")

    def __post_init__(self) -> None:
        if (self.family is None) != (self.value == ""):
            raise ValueError(f"counter {self.name}: a family needs a label value, and only a family")
        REGISTRY.add(self)


@dataclass(frozen=True, slots=True)
class Gauge:
    """A value read when the figures are gathered (``Stats.track``), summed (or the max) across workers."""

    name: str  # the /v1/stats key; ``ntf_<name>`` in /metrics
    help: str
    across_workers: Literal["sum", "max"] = "sum"

    def __post_init__(self) -> None:
        REGISTRY.add(self)


Metric = Counter | Gauge


class Registry:
    """Every defined metric by name; a name defined twice is an error at import."""

    __slots__ = ("_by_name", "_loaded")

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}
        self._loaded = False

    def __repr__(self) -> str:
        return f"<Registry {len(self._by_name)} metrics>"

    def add(self, m: Metric) -> None:
        old = self._by_name.get(m.name)
        if old is not None and old != m:
            raise ValueError(f"metric {m.name!r} is defined twice")
        self._by_name[m.name] = m

    def forget(self, m: Metric) -> None:
        """Drop a definition (tests that define a metric of their own)."""
        self._by_name.pop(m.name, None)

    def _load(self) -> None:
        if not self._loaded:
            for module in MODULES:
                importlib.import_module(module)
            self._loaded = True

    def counters(self) -> list[Counter]:
        self._load()
        return [m for m in self._by_name.values() if isinstance(m, Counter)]

    def gauges(self) -> list[Gauge]:
        self._load()
        return [m for m in self._by_name.values() if isinstance(m, Gauge)]

    def get(self, name: str) -> Metric | None:
        self._load()
        return self._by_name.get(name)


REGISTRY: Final = Registry()

# counter name prefixes spelled out in metric names, as the Haskell server's (simplex_ntf_tokens_created)
_SPELLED: Final = (("tkn_", "tokens_"), ("sub_", "subscriptions_"), ("ntf_", "notifications_"))


def metric_name(name: str) -> str:
    """A counter's metric family name without the ``ntf_`` prefix: ``tkn_created`` -> ``tokens_created``."""
    for short, long in _SPELLED:
        if name.startswith(short):
            return long + name[len(short):]
    return name


def lookup(name: str) -> Counter:
    """The counter with this external name; ValueError if there is none (a misspelt name in a test)."""
    m = REGISTRY.get(name)
    if not isinstance(m, Counter):
        raise ValueError(f"{name!r} is not a counter")
    return m
