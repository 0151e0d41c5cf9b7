"""``GET /metrics``: Prometheus text rendered from one ``Figures`` value (prometheus-client's format).

A custom collector over the snapshot, not prometheus-client's own counters: the server keeps its counters
in ``Stats`` (one increment per event, no locks), and this turns a frozen copy into metric families, so
nothing is counted twice. Counters and tracked gauges come from ``metricdef.REGISTRY``: a metric defined
next to its counting code appears here without a line of code (as ``ntf_<name>_total``, or in its labelled
family). The other gauges are assembled below from ``Figures``. Every name starts with ``ntf_``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from ntf_server.admin.figures import Figures
from ntf_server.observability.metricdef import REGISTRY, Counter, Family, metric_name
from ntf_server.observability.ownservers import OTHER, OwnServers
from ntf_server.subscriber.linkstate import SHOWN_STATES, LinkState

PREFIX = "ntf_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(fig: Figures, own: OwnServers) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(fig, own))
    return generate_latest(registry)


class _Collector:
    def __init__(self, fig: Figures, own: OwnServers) -> None:
        self._fig = fig
        self._own = own

    def collect(self) -> Iterator[Metric]:
        yield from _counters(self._fig)
        yield from _gauges(self._fig)
        yield from _tracked(self._fig)
        yield from _smp(self._fig, self._own)
        yield from _apns(self._fig)
        yield from _workers(self._fig)


def _counters(fig: Figures) -> Iterator[Metric]:
    families: dict[str, tuple[Family, list[tuple[str, int]]]] = {}
    for c in REGISTRY.counters():
        value = fig.stats.counters.get(c.name, 0)
        if c.family is None:
            yield CounterMetricFamily(PREFIX + metric_name(c.name), c.help, value=value)
        else:
            family, samples = families.setdefault(c.family.name, (c.family, []))
            if family != c.family:
                raise ValueError(f"family {family.name}: defined twice, with another label or help text")
            samples.append((c.value, value))
    for family, samples in families.values():
        m = CounterMetricFamily(PREFIX + family.name, family.help, labels=[family.label])
        for label_value, value in samples:
            m.add_metric([label_value], value)
        yield m
    per: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (name, server), value in fig.stats.by_server.items():
        per[name].append((server, value))
    for name, samples in per.items():
        defined = REGISTRY.get(name)
        doc = defined.help if isinstance(defined, Counter) else f"Counter {name}"
        m = CounterMetricFamily(f"{PREFIX}{metric_name(name)}_by_server",
                                doc + f", per own SMP server ({OTHER!r}: all others)", labels=["server"])
        for server, value in sorted(samples):
            m.add_metric([server], value)
        yield m


def _tracked(fig: Figures) -> Iterator[Metric]:
    """The gauges defined next to the code that knows them (``Stats.track``)."""
    for g in REGISTRY.gauges():
        value = fig.stats.gauges.get(g.name)
        if value is not None:
            yield _gauge(g.name, g.help, value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _gauges(fig: Figures) -> Iterator[Metric]:
    yield InfoMetricFamily(PREFIX + "build", "ntf-server version", value={"version": fig.version})
    yield _gauge("store_up", "1 when Redis answered this scrape", 1 if fig.store_up else 0)
    yield _gauge("listener_up", "1 while the NTF listener accepts connections", 1 if fig.listening else 0)
    yield _gauge("client_connections", "Open NTF client sockets (any phase)", fig.connections)
    yield _gauge("push_queue_length", "Pushes waiting for a push worker (verification and message)",
                 fig.queue_length)
    if fig.counts is not None:
        yield _gauge("tokens_stored", "Tokens in the store (exact)", fig.counts.tokens)
        yield _gauge("subscriptions_stored", "Subscriptions in the store (exact)", fig.counts.subscriptions)
        yield _gauge("last_notifications_stored", "Last notifications kept for devices (≤ 6 a token)",
                     fig.counts.last_notifications)
        yield _gauge("smp_servers_with_subscriptions", "SMP servers with at least one subscription",
                     fig.counts.smp_servers)
    if fig.active is not None:
        m = GaugeMetricFamily(PREFIX + "active_tokens", "Distinct tokens a notification was stored for in "
                              "the current UTC day, ISO week and month (HyperLogLog estimate)", labels=["period"])
        for period, n in (("day", fig.active.day), ("week", fig.active.week), ("month", fig.active.month)):
            m.add_metric([period], n)
        yield m
    if fig.census is not None:
        c = fig.census
        for what, counts in (("tokens", c.tokens), ("subscriptions", c.subscriptions)):
            m = GaugeMetricFamily(f"{PREFIX}{what}_by_status", f"{what.capitalize()} by status, from the last "
                                  "census (approximate; see ntf_census_age_seconds)", labels=["status"])
            for status, n in sorted(counts.items()):
                m.add_metric([status], n)
            yield m
        yield _gauge("census_age_seconds", "Seconds since the last census of tokens and subscriptions ended",
                     max(0.0, fig.now - c.finished_at))
        yield _gauge("census_duration_seconds", "How long the last census took (it is paced)", c.duration_s)
    p = fig.resubscription
    yield _gauge("resubscription_servers", "SMP servers to resubscribe at start", p.servers)
    yield _gauge("resubscription_servers_done", "SMP servers whose start-up resubscription is complete",
                 p.servers_done)
    yield _gauge("resubscription_subscriptions", "Subscriptions in the store at start (upper bound)",
                 p.subscriptions)
    yield _gauge("resubscription_answered", "NSUBs answered since start", p.answered)
    yield _gauge("resubscription_elapsed_seconds", "Time the start-up resubscription took so far",
                 p.elapsed_s)


def _smp(fig: Figures, own: OwnServers) -> Iterator[Metric]:
    states: dict[str, int] = defaultdict(int)
    for _, state in fig.links:
        states[state] += 1
    m = GaugeMetricFamily(PREFIX + "smp_connections", "SMP servers served by this instance, by connection "
                          "state (idle, connecting, up, down)", labels=["state"])
    for state in SHOWN_STATES:
        m.add_metric([state], states.get(state, 0))
    yield m
    up = GaugeMetricFamily(PREFIX + "smp_server_up", "1 while the connection to an own SMP server is up "
                           "(other servers: ntf_smp_connections)", labels=["server"])
    for server, state in fig.links:
        label = own.label(server.hosts)
        if label != OTHER:
            up.add_metric([label], 1 if state == LinkState.UP else 0)
    yield up
    if fig.census is not None:
        subs = GaugeMetricFamily(PREFIX + "smp_server_subscriptions", "Subscriptions per own SMP server by "
                                 f"status, from the last census ({OTHER!r}: all other servers)",
                                 labels=["server", "status"])
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for server, counts in fig.census.per_server.items():
            label = own.label(server.hosts)
            for status, n in counts.items():
                totals[(label, status)] += n
        for (label, status), n in sorted(totals.items()):
            subs.add_metric([label, status], n)
        yield subs


def _apns(fig: Figures) -> Iterator[Metric]:
    h = HistogramMetricFamily(PREFIX + "apns_request_duration_seconds", "APNs request latency, from sending "
                              "a request to its answer (or its loss)", labels=["environment"])
    for env, hist in sorted(fig.apns.latency.items()):
        buckets = [("+Inf" if b == float("inf") else f"{b:g}", n) for b, n in hist.cumulative()]
        h.add_metric([env], buckets, hist.sum_s)
    yield h
    a = CounterMetricFamily(PREFIX + "apns_responses", "APNs answers by environment, HTTP status and reason "
                            "(status 0: no answer; reason Timeout or ConnectionLost)",
                            labels=["environment", "status", "reason"])
    for (env, status, reason), n in sorted(fig.apns.answers.items()):
        a.add_metric([env, str(status), reason], n)
    yield a


def _workers(fig: Figures) -> Iterator[Metric]:
    """Each worker's own figures, labelled by worker number (none for one process); the families above
    are their sums."""
    if not fig.workers:
        return
    families = (("worker_up", "1 when the worker answered this scrape", lambda w: 1 if w.up else 0),
                ("worker_client_connections", "Open NTF client sockets of the worker", lambda w: w.connections),
                ("worker_push_queue_length", "Pushes waiting in the worker's pipeline", lambda w: w.queue_length),
                ("worker_smp_servers", "SMP servers the worker holds (its leases)", lambda w: len(w.servers)))
    for name, doc, value in families:
        m = GaugeMetricFamily(PREFIX + name, doc, labels=["worker"])
        for w in fig.workers:
            m.add_metric([str(w.worker)], value(w))
        yield m
    restarts = CounterMetricFamily(PREFIX + "worker_restarts", "Times the supervisor started the worker again "
                                   "after it died (since the supervisor started)", labels=["worker"])
    for w in fig.workers:
        if w.up:
            restarts.add_metric([str(w.worker)], w.restarts)
    yield restarts
