"""APNs request figures for the metrics (as Sygnal, the Matrix push gateway, exports them): a latency
histogram per APNs environment and answers counted by (environment, HTTP status, reason).

Fed by ``apns.ApnsClient``'s observer callback, once per request that reached APNs or was lost on the
way (status 0, reason ``Timeout``/``ConnectionLost``). Cheap: a bisect and two dict increments. The reason
text comes from the remote side, so distinct label sets are capped (a misbehaving endpoint cannot grow the
metrics without bound); past the cap the reason is counted as ``other``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

# seconds; APNs answers in tens of ms, retries and timeouts take seconds (request_timeout_s = 10)
BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_ANSWER_LABELS: Final = 64
MAX_REASON_CHARS: Final = 40


@dataclass(frozen=True, slots=True)
class Histogram:
    counts: tuple[int, ...]  # per bucket of BUCKETS_S (not cumulative), then one for > the last bound
    total: int
    sum_s: float

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count ≤ bound) pairs, ending with +Inf, as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip((*BUCKETS_S, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True, slots=True)
class ApnsSnapshot:
    latency: Mapping[str, Histogram]  # environment -> histogram
    answers: Mapping[tuple[str, int, str], int]  # (environment, status, reason) -> count

    def as_dict(self) -> dict[str, object]:
        return {
            "latency": {env: {"count": h.total, "sum_s": round(h.sum_s, 6),
                              "buckets": {("+Inf" if b == float("inf") else f"{b:g}"): n
                                          for b, n in h.cumulative()}}
                        for env, h in self.latency.items()},
            "answers": [{"environment": e, "status": s, "reason": r, "count": n}
                        for (e, s, r), n in sorted(self.answers.items())],
        }


class ApnsMetrics:
    __slots__ = ("_answers", "_counts", "_sums")

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._answers: dict[tuple[str, int, str], int] = {}

    def __repr__(self) -> str:
        return f"<ApnsMetrics {sum(self._answers.values())} answers>"

    def observe(self, app: str, status: int, reason: str, seconds: float) -> None:
        """``apns.client.Observer``."""
        counts = self._counts.get(app)
        if counts is None:
            counts = self._counts[app] = [0] * (len(BUCKETS_S) + 1)
        counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self._sums[app] = self._sums.get(app, 0.0) + seconds
        key = (app, status, reason[:MAX_REASON_CHARS])
        if key not in self._answers and len(self._answers) >= MAX_ANSWER_LABELS:
            key = (app, status, "other")
        self._answers[key] = self._answers.get(key, 0) + 1

    def snapshot(self) -> ApnsSnapshot:
        latency = {app: Histogram(tuple(c), sum(c), self._sums[app]) for app, c in self._counts.items()}
        return ApnsSnapshot(MappingProxyType(latency), MappingProxyType(dict(self._answers)))
