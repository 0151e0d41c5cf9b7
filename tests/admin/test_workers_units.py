"""The admin API across workers (admin/workers.py): a worker's figures survive their JSON between workers,
and worker 0's answer sums every worker's, labels each, and shows a worker that did not answer as down; the
summed counters carry what a restarted or silent worker counted before (admin/carry.py)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families
from test_admin_units import OWN, THEIRS, figures

from ntf_server.admin import metrics, views
from ntf_server.admin.carry import Carried, Counted, Identity
from ntf_server.admin.status import status_json
from ntf_server.admin.workers import WorkerFigures, from_json, merge, to_json
from ntf_server.cli import screen
from ntf_server.handlers import TKN_CREATED
from ntf_server.observability.apns_metrics import ApnsMetrics
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.pipeline import RETRIES_WAITING
from ntf_server.subscriber.core import NTF_RECEIVED
from ntf_server.subscriber.pool import Progress

ANOTHER = SMPServer(("smp.elsewhere.example",), "443", b"\x03" * 32)


def worker(index: int, links: tuple[tuple[SMPServer, str], ...], tokens: int, connections: int) -> WorkerFigures:
    stats = Stats(OwnServers(("own.example",)))
    stats.incr(TKN_CREATED, tokens)
    stats.track(RETRIES_WAITING, lambda: index)
    stats.incr_server(NTF_RECEIVED, ("smp1.own.example",), tokens)
    apns = ApnsMetrics()
    apns.observe("test", 200, "", 0.02 * (index + 1))
    return WorkerFigures(index, 1000 + index, stats.snapshot(), apns.snapshot(), links, index + 1,
                         Progress(len(links), len(links), 10 * tokens, 10 * tokens, 1.0 + index), True, connections)


def test_a_workers_figures_survive_their_json() -> None:
    f = replace(worker(1, ((OWN, "up"), (THEIRS, "connecting")), 5, 3), restarts=2)
    assert from_json(to_json(f)) == f


def test_worker_0_sums_every_worker_and_labels_each() -> None:
    zero = worker(0, ((OWN, "up"),), 2, 4)
    one = worker(1, ((THEIRS, "up"), (ANOTHER, "down")), 5, 3)
    fig = merge(figures(Stats()), zero, [replace(one, restarts=3), None])
    assert fig.stats[TKN_CREATED] == 7
    assert fig.stats.by_server[(NTF_RECEIVED.name, "smp1.own.example")] == 7
    assert fig.apns.latency["test"].total == 2 and fig.apns.answers[("test", 200, "")] == 2
    assert (fig.connections, fig.queue_length, fig.stats.gauges["push_retries_waiting"]) == (7, 3, 1)
    assert fig.resubscription == Progress(3, 3, 70, 70, 2.0)
    assert fig.owner == MappingProxyType({OWN: 0, THEIRS: 1, ANOTHER: 1})
    assert [(w.worker, w.up, w.connections, len(w.servers)) for w in fig.workers] == [
        (0, True, 4, 1), (1, True, 3, 2), (2, False, 0, 0)]
    own = OwnServers(("own.example",))
    samples = {(s.name, s.labels.get("worker")): s.value
               for fam in text_string_to_metric_families(metrics.render(fig, own).decode()) for s in fam.samples}
    assert samples[("ntf_tokens_created_total", None)] == 7
    assert [samples[("ntf_worker_up", str(i))] for i in range(3)] == [1, 1, 0]
    assert [samples[("ntf_worker_smp_servers", str(i))] for i in range(3)] == [1, 2, 0]
    assert [samples.get(("ntf_worker_restarts_total", str(i))) for i in range(3)] == [0, 3, None]
    smp = views.smp_servers_json(fig, own)
    assert [(r["server"], r["worker"]) for r in smp["own"]] == [("smp1.own.example", 0)]
    assert smp["other"]["by_worker"] == {"0": 0, "1": 2, "2": 0}
    rows = status_json(fig, own, {}, 0.0, None)["workers"]
    assert [(r["worker"], r["own_servers"], r["other_servers"]) for r in rows] == [
        (0, ["smp1.own.example"], 0), (1, [], 2), (2, [], 0)]


def test_one_process_shows_no_workers() -> None:
    fig = figures(Stats())
    assert views.stats_json(fig)["workers"] == []
    assert "worker" not in str(views.smp_servers_json(fig, OwnServers(("own.example",))))
    assert b"ntf_worker_" not in metrics.render(fig, OwnServers())


def test_the_status_screen_shows_each_worker_and_its_servers_within_80x24() -> None:
    zero = worker(0, ((OWN, "up"),), 2, 4)
    one = worker(1, ((THEIRS, "up"), (ANOTHER, "down")), 5, 3)
    own = OwnServers(("own.example",))
    pushes = {"window_s": 600.0, "kinds": {}}
    lines = screen.status_lines(status_json(merge(figures(Stats()), zero, [one, None]), own, pushes, 0.0, None))
    assert len(lines) <= 24 and max(map(len, lines)) <= 80, "\n".join(lines)
    i = next(i for i, line in enumerate(lines) if line.startswith("Workers"))
    assert lines[i:i + 3] == [
        "Workers      0: pid 1000, 4 connections, queue 1, SMP servers: smp1.own.example",
        "             1: pid 1001, 3 connections, queue 2, SMP servers: 2 other",
        "             2: DOWN (not answering)"]
    many = status_json(merge(figures(Stats()), zero, [one, *[None] * 6]), own, pushes, 0.0, None)
    assert "and 4 more (4 down): --json shows every one" in "\n".join(screen.status_lines(many))


def counters_of(tokens: int, latency_s: float = 0.02) -> Counted:
    stats = Stats(OwnServers(("own.example",)))
    stats.incr(TKN_CREATED, tokens)
    stats.incr_server(NTF_RECEIVED, ("smp1.own.example",), tokens)
    apns = ApnsMetrics()
    for _ in range(tokens):
        apns.observe("test", 200, "", latency_s)
    return Counted.of(stats.snapshot(), apns.snapshot())


def test_a_restarted_workers_counters_are_carried_so_the_sums_never_fall() -> None:
    carried = Carried()
    carried.update(1, Identity(1001, 0), counters_of(5))
    carried.update(1, Identity(2002, 1), counters_of(2))  # restarted: counts from 0 again
    total = carried.total(1)
    assert total.counters[TKN_CREATED.name] == 7
    assert total.by_server[(NTF_RECEIVED.name, "smp1.own.example")] == 7
    assert total.latency["test"].total == 7 and total.answers[("test", 200, "")] == 7
    carried.update(1, Identity(2002, 1), counters_of(3))  # the same process, later
    assert carried.total(1).counters[TKN_CREATED.name] == 8
    assert carried.total(2) == Counted()  # never read


def test_a_late_answer_never_counts_twice() -> None:
    """Two admin requests at once: the older answer may be applied after the newer one."""
    carried = Carried()
    carried.update(1, Identity(1001, 0), counters_of(5))
    carried.update(1, Identity(1001, 0), counters_of(4))  # the same process read earlier
    assert carried.total(1).counters[TKN_CREATED.name] == 5
    carried.update(1, Identity(2002, 1), counters_of(1))
    carried.update(1, Identity(1001, 0), counters_of(5))  # the replaced process, answering late
    assert carried.total(1).counters[TKN_CREATED.name] == 6


def test_the_sums_keep_a_worker_that_does_not_answer_and_gauges_are_not_carried() -> None:
    zero = worker(0, ((OWN, "up"),), 2, 4)
    one = worker(1, ((THEIRS, "up"),), 5, 3)
    carried = Carried()
    carried.update(1, Identity(one.pid, 0), Counted.of(one.stats, one.apns))
    up = merge(figures(Stats()), zero, [one], [carried.total(1)])
    down = merge(figures(Stats()), zero, [None], [carried.total(1)])  # restarting: not answering
    assert up.stats[TKN_CREATED] == down.stats[TKN_CREATED] == 7
    assert down.apns.answers[("test", 200, "")] == 2
    assert (down.connections, down.queue_length, down.stats.gauges["push_retries_waiting"]) == (4, 1, 0)
    assert [(w.worker, w.up) for w in down.workers] == [(0, True), (1, False)]
    samples = {(s.name, s.labels.get("worker")): s.value for fam in text_string_to_metric_families(
        metrics.render(down, OwnServers(("own.example",))).decode()) for s in fam.samples}
    assert samples[("ntf_tokens_created_total", None)] == 7
