"""Counters summed across workers that never go backwards when a worker restarts (pure; admin/workers.py).

Theory of operation. Worker 0 sums every worker's own counters for ``/metrics``, ``/v1/stats`` and the push
window. A worker the supervisor starts again counts from zero, and a worker that does not answer is left out;
summed as they are, the instance's counters would drop, and Prometheus would read a counter reset (``rate()``
counting the whole value again as new). So worker 0 keeps, per worker slot, the last counters it read from the
process now in that slot (``last``) and what the slot's earlier processes had counted when last read (``base``);
the slot's contribution to every sum is ``base + last``, also while the worker does not answer.

A worker is known by ``(pid, restarts)``: ``restarts`` is the supervisor's count for the slot, passed to each
new process, so it only grows. Figures with a higher count (or the same count and another pid) are a new
process: ``last`` is carried into ``base`` and the new figures become ``last``. Figures with a lower count are a
late answer from a process already replaced (two admin requests at once), ignored. With the same identity a
counter lower than ``last`` can only be such a late answer too (one process's counters only grow), so ``last``
takes the higher of each. What a process counted after worker 0 last read it, before it died, is not in the
sums (undercounted, never counted twice). Only counters are carried: gauges (connections, queue lengths, SMP
links, resubscription progress) are the workers' figures now. Worker 0's own counters and everything carried
live in worker 0's process: when worker 0 restarts, its counters start from zero and the others' are summed as
their current processes counted them, so the sums fall: a real counter reset (README "Admin API and metrics").
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from ntf_server.observability.apns_metrics import ApnsSnapshot, Histogram
from ntf_server.observability.stats import StatsSnapshot

K = TypeVar("K")


def _histograms(op: Callable[[Any, Any], Any], a: Histogram, b: Histogram) -> Histogram:
    return Histogram(tuple(op(x, y) for x, y in zip(a.counts, b.counts, strict=True)), op(a.total, b.total),
                     op(a.sum_s, b.sum_s))


def _counts(op: Callable[[int, int], int], a: Mapping[K, int], b: Mapping[K, int]) -> Mapping[K, int]:
    return MappingProxyType({k: op(a.get(k, 0), b.get(k, 0)) for k in {**a, **b}})


@dataclass(frozen=True, slots=True)
class Counted:
    """One worker's counters: what only grows while its process lives."""

    counters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    by_server: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    latency: Mapping[str, Histogram] = field(default_factory=lambda: MappingProxyType({}))
    answers: Mapping[tuple[str, int, str], int] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, stats: StatsSnapshot, apns: ApnsSnapshot) -> Counted:
        return cls(stats.counters, stats.by_server, apns.latency, apns.answers)

    def _combine(self, other: Counted, op: Callable[[Any, Any], Any]) -> Counted:
        latency = dict(self.latency)
        for env, h in other.latency.items():
            latency[env] = _histograms(op, latency[env], h) if env in latency else h
        return Counted(_counts(op, self.counters, other.counters), _counts(op, self.by_server, other.by_server),
                       MappingProxyType(latency), _counts(op, self.answers, other.answers))

    def __add__(self, other: Counted) -> Counted:
        return self._combine(other, operator.add)

    def higher(self, other: Counted) -> Counted:
        """Each counter's higher value (two reads of one process: the later one's)."""
        return self._combine(other, max)


@dataclass(frozen=True, slots=True)
class Identity:
    """Which process answered for a worker slot."""

    pid: int
    restarts: int  # the supervisor's count for the slot: grows with each new process


@dataclass(slots=True)
class _Slot:
    identity: Identity
    last: Counted
    base: Counted = field(default_factory=Counted)


class Carried:
    """Per worker slot, the counters to add to the instance's sums (see the module doc)."""

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}

    def __repr__(self) -> str:
        return f"<Carried {len(self._slots)} slots>"

    def update(self, index: int, identity: Identity, counted: Counted) -> None:
        """What worker ``index`` answered now."""
        slot = self._slots.get(index)
        if slot is None:
            self._slots[index] = _Slot(identity, counted)
        elif identity == slot.identity:
            slot.last = slot.last.higher(counted)
        elif identity.restarts >= slot.identity.restarts:  # a new process in the slot
            slot.base = slot.base + slot.last
            slot.identity, slot.last = identity, counted
        # else: a late answer from a process already replaced

    def total(self, index: int) -> Counted:
        """Worker ``index``'s part of the sums: its earlier processes' and its own, last read (also while it
        does not answer); nothing for a worker never read."""
        slot = self._slots.get(index)
        return Counted() if slot is None else slot.base + slot.last
