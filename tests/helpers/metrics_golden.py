"""One fixed admin state, rendered as ``/metrics`` and ``/v1/stats``, for the names-unchanged check.

tests/admin/test_golden.py renders this state and compares it with tests/admin/data/, which was written by
the code before metrics were defined where they are counted (with ``Stat(name)`` as ``lookup``): so the
comparison proves that change kept every external name, label, help text and value. ``cd tests && python -m
helpers.metrics_golden`` rewrites the fixture from the code as it is: only for a deliberate change of an
external name. The state is built from the counter *names* in data/counters.json, so it does not depend on
where a counter is defined.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ntf_server.admin import metrics, views
from ntf_server.admin.figures import Figures
from ntf_server.admin.workers import WorkerFigures, from_json, merge, to_json
from ntf_server.observability.apns_metrics import ApnsMetrics
from ntf_server.observability.metricdef import lookup  # the fixture was written with ``Stat`` (the name's enum) here
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.pipeline import RETRIES_WAITING
from ntf_server.store.activity import ActiveTokens
from ntf_server.store.base import StoreCounts
from ntf_server.store.census import Census
from ntf_server.subscriber.linkstate import LinkState
from ntf_server.subscriber.pool import Progress

DATA = Path(__file__).parent.parent / "admin" / "data"
OWN_DOMAINS = ["own.example"]
OWN = SMPServer(("smp1.own.example", "abcdefghijklmnop.onion"), "5223", b"\x01" * 32)
THEIRS = SMPServer(("smp.thirdparty.example",), "", b"\x02" * 32)
PER_SERVER = ("ntf_received", "ntf_received_auth")  # the counters kept per SMP server


def counter_names() -> list[str]:
    return json.loads((DATA / "counters.json").read_text())


def state(names: list[str], worker: int) -> Stats:
    stats = Stats(OwnServers(OWN_DOMAINS))
    for i, name in enumerate(names):
        if name in PER_SERVER:
            stats.incr_server(lookup(name), OWN.hosts, i + 1 + worker)
            stats.incr_server(lookup(name), THEIRS.hosts, 2 * i + 1)
        else:
            stats.incr(lookup(name), i + 1 + 10 * worker)
    stats.track(RETRIES_WAITING, lambda: 1 + worker)  # before the change: a field of the figures
    return stats


def apns(worker: int) -> ApnsMetrics:
    m = ApnsMetrics()
    m.observe("test", 200, "", 0.02 + worker)
    m.observe("test", 410, "Unregistered", 0.03)
    m.observe("production", 0, "Timeout", 10.5)
    return m


def worker_figures(stats: Stats, worker: int) -> WorkerFigures:
    links = ((OWN, LinkState.UP),) if worker == 0 else ((THEIRS, LinkState.CONNECTING),)
    return WorkerFigures(worker, 1000 + worker, stats.snapshot(), apns(worker).snapshot(), links, 3 + worker,
                         Progress(1, 1, 5, 4 + worker, 1.5 + worker), True, 6 + worker, worker)


def figures(names: list[str]) -> tuple[Figures, Figures]:
    """The one-process figures, and the same with a second worker's summed in (through its JSON)."""
    stats = state(names, 0)
    c = Census(MappingProxyType({"ACTIVE": 5, "REGISTERED": 1}), MappingProxyType({"ACTIVE": 9, "END": 1}),
               MappingProxyType({OWN: {"ACTIVE": 4}, THEIRS: {"ACTIVE": 5, "END": 1}}), 1000.0, 0.5)
    one = Figures("0.1.0", 1060.0, stats.snapshot(), apns(0).snapshot(), True, StoreCounts(6, 10, 3, 2),
                  ActiveTokens(2, 3, 4), c, ((OWN, LinkState.UP),), 3, Progress(1, 1, 5, 4, 1.5), True, 6)
    peer = from_json(json.loads(json.dumps(to_json(worker_figures(state(names, 1), 1)))))
    return one, merge(one, worker_figures(stats, 0), [peer, None])


def rendered(names: list[str]) -> dict[str, Any]:
    own = OwnServers(OWN_DOMAINS)
    one, two = figures(names)
    return {"metrics": metrics.render(one, own).decode(), "metrics_workers": metrics.render(two, own).decode(),
            "stats": views.stats_json(one), "stats_workers": views.stats_json(two),
            "smp_servers_workers": views.smp_servers_json(two, own)}


def write(out: dict[str, Any]) -> None:
    for key in ("metrics", "metrics_workers"):
        (DATA / f"{key}.prom").write_text(out[key])
    for key in ("stats", "stats_workers", "smp_servers_workers"):
        (DATA / f"{key}.json").write_text(json.dumps(out[key], indent=1) + "\n")


if __name__ == "__main__":
    write(rendered(counter_names()))
