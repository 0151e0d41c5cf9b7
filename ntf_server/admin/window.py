"""Pushes in the last hour: a small ring of per-minute counter samples (pure; ``now`` is passed in).

Theory of operation. The server's counters (stats.py) count since start. To answer "how many in the
last hour" without a time series database, a sampler part records the push counters once a minute
(``record``); a sample is a few dozen integers, and only the samples still needed are kept: the newest
one at least an hour old (the baseline) and every younger one, so about ``span_s / step_s + 2``. A
question (``recent``) subtracts the baseline from the current counters. The window is therefore between
one hour and one hour plus a step long, and the answer says exactly how long (``Recent.seconds``); on a
server younger than an hour the baseline is the all-zero sample taken at start, so the answer is "since
start" and says so. If the sampler lags (a blocked event loop), the window grows and says that too.

Push kinds are rows of counter names, looked up by string: a counter this build does not have (another
change adds it) is left out of the sums, and a kind with none of its counters answers ``None`` ("not
counted by this version") instead of a misleading 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ntf_server.observability.metricdef import REGISTRY

SPAN_S: Final = 3600.0
STEP_S: Final = 60.0
MIN_GAP: Final = 0.9  # of a step: a sampler waking a little early still records

# kind (JSON key) -> counters summed for it; names no counter of this build defines are skipped
PUSH_KINDS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("verification", ("ntf_vrf_delivered",)),
    ("message_hidden", ("ntf_hidden",)),  # within the budget (push policy)
    ("message_alert", ("ntf_alert",)),  # parity mode, or over budget with overflow = alert
    ("message_deferred", ("ntf_deferred",)),  # joined a pending push (overflow = defer)
    ("message_dropped", ("ntf_dropped",)),  # over budget with overflow = drop
    ("message_delivered", ("ntf_delivered",)),  # message pushes APNs accepted
    ("periodic", ("ntf_cron_delivered",)),
    ("failed", ("ntf_vrf_failed", "ntf_failed", "ntf_cron_failed")),
    ("retried", ("ntf_vrf_retried", "ntf_retried")),
)


def known(names: Iterable[str]) -> tuple[str, ...]:
    """The names that are counters of this build, in order."""
    values = {c.name for c in REGISTRY.counters()}
    return tuple(n for n in names if n in values)


def push_counter_names(kinds: Iterable[tuple[str, tuple[str, ...]]] = PUSH_KINDS) -> tuple[str, ...]:
    return known(dict.fromkeys(n for _, names in kinds for n in names))


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    counters: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Recent:
    seconds: float  # how far back the baseline is (≤ span_s only on a server younger than the span)
    counts: Mapping[str, int]  # counter name -> increase since the baseline


class CounterWindow:
    """Per-step samples of ``names``, answering increases over the last ``span_s`` (see module doc)."""

    def __init__(self, names: Iterable[str], start: float, *, span_s: float = SPAN_S, step_s: float = STEP_S,
                 ) -> None:
        assert span_s > 0 and step_s > 0
        self.names = tuple(names)
        self.span_s, self.step_s = span_s, step_s
        # counters start at 0 with the process: the first baseline is exact
        # bounded without a maxlen: samples are ≥ 0.9 step apart and all but the baseline are < span old
        self._samples: deque[Sample] = deque([Sample(start, dict.fromkeys(self.names, 0))])

    def __repr__(self) -> str:
        return f"<CounterWindow {len(self.names)} counters, {len(self._samples)} samples>"

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, now: float, counters: Mapping[str, int]) -> None:
        """Keep a sample of ``counters`` unless the last one is younger than (nearly) a step: a second
        call in the same minute, or a clock that went back, changes nothing."""
        if now - self._samples[-1].at < MIN_GAP * self.step_s:
            return
        self._samples.append(Sample(now, {n: counters.get(n, 0) for n in self.names}))
        while len(self._samples) >= 2 and self._samples[1].at <= now - self.span_s:
            self._samples.popleft()  # the next one is old enough to be the baseline

    def recent(self, now: float, counters: Mapping[str, int]) -> Recent:
        """Increase of each counter since the newest sample at least ``span_s`` old (else the oldest)."""
        base = self._samples[0]
        for s in self._samples:
            if s.at > now - self.span_s:
                break
            base = s
        counts = {n: max(0, counters.get(n, 0) - base.counters.get(n, 0)) for n in self.names}
        return Recent(max(0.0, now - base.at), counts)


def push_kinds(recent: Recent, since_start: Mapping[str, int],
               kinds: Iterable[tuple[str, tuple[str, ...]]] = PUSH_KINDS) -> dict[str, dict[str, int | None]]:
    """``{kind: {"last_hour": n, "since_start": n}}``; ``None`` for a kind none of whose counters exist."""
    out: dict[str, dict[str, int | None]] = {}
    for kind, names in kinds:
        have = known(names)
        if not have:
            out[kind] = {"last_hour": None, "since_start": None}
            continue
        out[kind] = {"last_hour": sum(recent.counts.get(n, 0) for n in have),
                     "since_start": sum(since_start.get(n, 0) for n in have)}
    return out
