"""The cost of one counter increment (``Stats.incr``), the call on every NTF request and every NMSG.

Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/stats_incr.py [--repeats 9] [--number 1000000]

Times ``incr`` with a ``metricdef.Counter`` (a counter defined where it is counted), ``incr_server`` with a
per-server ``Counter``, and, as the baseline, the increment as it was before counters had definitions
(every counter a member of a ``StrEnum``, a dict keyed by it, ``self._c[name] += n``, reproduced below).
Prints the median ns per call of ``--repeats`` runs and the ratio to the baseline; the
ratios are what to compare (run them in one go, on a quiet machine if you can).
"""

from __future__ import annotations

import argparse
import enum
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package

from ntf_server.handlers import TKN_CREATED
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.stats import Stats
from ntf_server.push.model import NTF_DELIVERED


class Stat(enum.StrEnum):
    """How counters were named before (stats.py's ``Stat``), a few of its members."""

    TKN_CREATED = "tkn_created"
    SMP_NSUB_SENT = "smp_nsub_sent"
    NTF_DELIVERED = "ntf_delivered"


class EnumKeyedStats:
    """The increment before metric definitions: every Stat member pre-filled, ``+=`` on the enum key."""

    __slots__ = ("_c",)

    def __init__(self) -> None:
        self._c: dict[Stat, int] = dict.fromkeys(Stat, 0)

    def incr(self, name: Stat, n: int = 1) -> None:
        self._c[name] += n


def median_ns(call: Callable[[], None], repeats: int, number: int) -> float:
    return statistics.median(timeit.repeat(call, number=number, repeat=repeats)) / number * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--number", type=int, default=1_000_000)
    a = ap.parse_args()
    stats, old = Stats(OwnServers(["own.example"])), EnumKeyedStats()
    hosts = ("smp1.own.example",)
    cases: list[tuple[str, Callable[[], None]]] = [
        ("before: enum-keyed dict, Stat member", lambda: old.incr(Stat.TKN_CREATED)),
        ("incr(Counter)", lambda: stats.incr(TKN_CREATED)),
        ("incr_server(per-server Counter)", lambda: stats.incr_server(NTF_DELIVERED, hosts)),
    ]
    base = 0.0
    for label, call in cases:
        ns = median_ns(call, a.repeats, a.number)
        base = base or ns
        print(f"{label:40} {ns:7.1f} ns/call  x{ns / base:.2f}")


if __name__ == "__main__":
    main()
