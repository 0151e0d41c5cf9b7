"""Pure statistics for the auth-timing test and benchmark (issue 8 item 4).

Samples are taken interleaved: each round sends one request of every (class, kind) pair in a shuffled
order, so slow phases of a noisy shared machine hit both kinds alike. The difference is the median of the
per-round differences `known - unknown` (paired samples taken a few hundred µs apart, so a load burst that
moves both does not move the difference; robust to the long tail of a preempted request), overall and per
chunk of consecutive rounds: an id-existence leak shows as the same sign in (nearly) every chunk.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

KNOWN = "known"  # an existing id, wrong signature
UNKNOWN = "unknown"  # an id that does not exist


@dataclass(frozen=True, slots=True)
class Sample:
    round: int
    cls: str
    kind: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ClassResult:
    cls: str
    known_us: float  # median
    unknown_us: float  # median
    diff_us: float  # median of the per-round differences
    known_slower_chunks: int
    chunks: int

    @property
    def diff_pct(self) -> float:
        return 100.0 * self.diff_us / self.unknown_us

    @property
    def one_sided(self) -> bool:
        """The sign of the per-chunk difference is (almost) always the same."""
        return max(self.known_slower_chunks, self.chunks - self.known_slower_chunks) >= self.chunks - 1

    def line(self) -> str:
        return (f"{self.cls:5} known {self.known_us:8.1f} µs  unknown {self.unknown_us:8.1f} µs  "
                f"diff {self.diff_us:+7.1f} µs ({self.diff_pct:+5.1f} %)  "
                f"known slower in {self.known_slower_chunks}/{self.chunks} chunks")


def _paired_diffs_us(samples: Sequence[Sample], cls: str) -> list[float]:
    by_round: dict[int, dict[str, float]] = {}
    for s in samples:
        if s.cls == cls:
            by_round.setdefault(s.round, {})[s.kind] = s.seconds
    return [1e6 * (r[KNOWN] - r[UNKNOWN]) for r in by_round.values() if len(r) == 2]


def _median_us(samples: Sequence[Sample], cls: str, kind: str) -> float:
    return 1e6 * statistics.median(s.seconds for s in samples if s.cls == cls and s.kind == kind)


def analyse(samples: Sequence[Sample], classes: Sequence[str], chunks: int) -> list[ClassResult]:
    rounds = max(s.round for s in samples) + 1
    size = -(-rounds // chunks)
    parts = [[s for s in samples if s.round // size == c] for c in range(chunks)]
    out = []
    for cls in classes:
        slower = sum(statistics.median(_paired_diffs_us(p, cls)) > 0 for p in parts)
        out.append(ClassResult(cls, _median_us(samples, cls, KNOWN), _median_us(samples, cls, UNKNOWN),
                               statistics.median(_paired_diffs_us(samples, cls)), slower, chunks))
    return out
