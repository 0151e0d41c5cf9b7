"""Pure parts of the admin API: own-server labels, APNs figures, the metric definitions, rendering from a
``Figures`` value, and the CLI's tables and ``policy set`` parsing."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ntf_server.admin import metrics, views
from ntf_server.admin.figures import Figures
from ntf_server.cli import tables
from ntf_server.handlers import TKN_CREATED
from ntf_server.observability.apns_metrics import MAX_ANSWER_LABELS, ApnsMetrics
from ntf_server.observability.metricdef import REGISTRY, metric_name
from ntf_server.observability.ownservers import OTHER, OwnServers
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.pipeline import RETRIES_WAITING
from ntf_server.store.activity import ActiveTokens
from ntf_server.store.base import StoreCounts
from ntf_server.store.census import Census
from ntf_server.subscriber.core import NTF_RECEIVED
from ntf_server.subscriber.pool import Progress

OWN = SMPServer(("smp1.own.example", "abcdefghijklmnop.onion"), "5223", b"\x01" * 32)
THEIRS = SMPServer(("smp.thirdparty.example",), "", b"\x02" * 32)


@pytest.mark.parametrize(("hosts", "label"), [
    (("smp1.own.example",), "smp1.own.example"),
    (("own.example",), "own.example"),
    (("SMP2.Own.Example.",), "smp2.own.example"),
    (("x.onion", "smp3.own.example"), "smp3.own.example"),
    (("badown.example",), OTHER),  # whole labels only (Haskell's plain suffix would say "own")
    (("own.example.evil.net",), OTHER),
    (("smp.thirdparty.example",), OTHER),
])
def test_own_server_labels(hosts: tuple[str, ...], label: str) -> None:
    assert OwnServers(["own.example", ".also.example"]).label(hosts) == label
    assert OwnServers().label(hosts) == OTHER


def test_per_server_counters_keep_the_total() -> None:
    stats = Stats(OwnServers(["own.example"]))
    stats.incr_server(NTF_RECEIVED, OWN.hosts, 2)
    stats.incr_server(NTF_RECEIVED, THEIRS.hosts)
    snap = stats.snapshot()
    assert snap[NTF_RECEIVED] == 3
    assert dict(snap.by_server) == {(NTF_RECEIVED.name, "smp1.own.example"): 2, (NTF_RECEIVED.name, OTHER): 1}


def test_apns_metrics_histogram_and_capped_reasons() -> None:
    m = ApnsMetrics()
    for seconds in (0.004, 0.03, 0.03, 20.0):
        m.observe("production", 200, "", seconds)
    for i in range(MAX_ANSWER_LABELS + 10):  # a misbehaving endpoint inventing reasons
        m.observe("test", 400, f"Reason{i}", 0.01)
    snap = m.snapshot()
    hist = snap.latency["production"]
    assert (hist.total, round(hist.sum_s, 3)) == (4, 20.064)
    cumulative = dict(hist.cumulative())
    assert (cumulative[0.005], cumulative[0.05], cumulative[10.0], cumulative[float("inf")]) == (1, 3, 3, 4)
    assert len(snap.answers) == MAX_ANSWER_LABELS + 1  # the rest under "other"
    assert snap.answers[("test", 400, "other")] == 11


def test_every_counter_has_a_help_text() -> None:
    assert [c.name for c in REGISTRY.counters() if not c.help or c.help.startswith("Counter ")] == []


def figures(stats: Stats, *, census: bool = True) -> Figures:
    apns = ApnsMetrics()
    apns.observe("test", 200, "", 0.02)
    apns.observe("test", 410, "Unregistered", 0.03)
    c = Census(MappingProxyType({"ACTIVE": 5, "REGISTERED": 1}), MappingProxyType({"ACTIVE": 9, "END": 1}),
               MappingProxyType({OWN: {"ACTIVE": 4}, THEIRS: {"ACTIVE": 5, "END": 1}}), 1000.0, 0.5)
    return Figures("0.1.0", 1060.0, stats.snapshot(), apns.snapshot(), True, StoreCounts(6, 10, 3, 2),
                   ActiveTokens(2, 3, 4), c if census else None, ((OWN, "up"), (THEIRS, "connecting")), 7,
                   Progress(2, 1, 10, 9, 1.5), True, 12)


def parsed(fig: Figures, own: OwnServers) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fam in text_string_to_metric_families(metrics.render(fig, own).decode()):
        out[fam.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
    return out


def test_every_counter_is_rendered_in_its_family() -> None:
    """A new counter needs no code to appear: its own family, or its group's with its label."""
    stats = Stats()
    counters = REGISTRY.counters()
    for i, c in enumerate(counters):
        stats.incr(c, i + 1)
    fams = parsed(figures(stats), OwnServers())
    for i, c in enumerate(counters):
        if c.family is None:
            name = "ntf_" + metric_name(c.name)
            assert fams[name] == {(name + "_total", ()): i + 1}, c
        else:
            name = "ntf_" + c.family.name
            assert fams[name][(name + "_total", ((c.family.label, c.value),))] == i + 1, c
    assert all(name.startswith("ntf_") for name in fams)


def test_gauges_and_own_servers_in_metrics() -> None:
    stats = Stats(OwnServers(["own.example"]))
    stats.track(RETRIES_WAITING, lambda: 4)
    stats.incr_server(NTF_RECEIVED, OWN.hosts, 2)
    stats.incr_server(NTF_RECEIVED, THEIRS.hosts, 5)
    own = OwnServers(["own.example"])
    fams = parsed(figures(stats), own)
    assert fams["ntf_notifications_received_by_server"] == {
        ("ntf_notifications_received_by_server_total", (("server", "other"),)): 5,
        ("ntf_notifications_received_by_server_total", (("server", "smp1.own.example"),)): 2,
    }
    assert fams["ntf_tokens_by_status"][("ntf_tokens_by_status", (("status", "ACTIVE"),))] == 5
    assert fams["ntf_census_age_seconds"] == {("ntf_census_age_seconds", ()): 60.0}
    assert fams["ntf_smp_server_up"] == {("ntf_smp_server_up", (("server", "smp1.own.example"),)): 1}
    assert fams["ntf_smp_connections"][("ntf_smp_connections", (("state", "connecting"),))] == 1
    assert fams["ntf_smp_server_subscriptions"][
        ("ntf_smp_server_subscriptions", (("server", "other"), ("status", "END")))] == 1
    assert fams["ntf_active_tokens"][("ntf_active_tokens", (("period", "week"),))] == 3
    assert fams["ntf_push_queue_length"] == {("ntf_push_queue_length", ()): 7}
    assert fams["ntf_push_retries_waiting"] == {("ntf_push_retries_waiting", ()): 4}
    hist = fams["ntf_apns_request_duration_seconds"]
    assert hist[("ntf_apns_request_duration_seconds_count", (("environment", "test"),))] == 2
    answers = fams["ntf_apns_responses"]
    assert answers[("ntf_apns_responses_total", (("environment", "test"), ("reason", "Unregistered"),
                                                 ("status", "410")))] == 1
    text = metrics.render(figures(stats), own).decode()
    assert "thirdparty" not in text and "onion" not in text


def test_without_a_census_its_gauges_are_absent() -> None:
    fams = parsed(figures(Stats(), census=False), OwnServers())
    assert "ntf_tokens_by_status" not in fams and "ntf_census_age_seconds" not in fams
    assert "ntf_tokens_stored" in fams


def test_smp_servers_view_names_own_servers_only() -> None:
    own = OwnServers(["own.example"])
    stats = Stats(own)
    stats.incr_server(NTF_RECEIVED, OWN.hosts, 2)
    body = views.smp_servers_json(figures(stats), own)
    assert body["own"] == [{"server": "smp1.own.example", "hosts": ["smp1.own.example"], "port": 5223,
                            "state": "up", "subscriptions": {"ACTIVE": 4}, "ntf_received": 2}]
    assert body["other"] == {"servers": 1, "connections": {"connecting": 1},
                             "subscriptions": {"ACTIVE": 5, "END": 1}}
    assert "thirdparty" not in repr(body)


def test_policy_set_arguments() -> None:
    assert tables.parse_assignments(["overflow=defer", "hidden_per_hour=2.5", "burst=2"]) == {
        "overflow": "defer", "hidden_per_hour": 2.5, "burst": 2}
    with pytest.raises(ValueError, match="expected key=value"):
        tables.parse_assignments(["overflow"])
    current = {"hidden_per_hour": 3, "burst": 3, "overflow": "alert",
               "environments": {"development": {"burst": 2}}}
    assert tables.policy_change(current, {"burst": 1}, None) == {"burst": 1}
    assert tables.policy_change(current, {"burst": 1}, "test") == {
        "environments": {"development": {"burst": 2}, "test": {"burst": 1}}}


def test_policy_table() -> None:
    lines = tables.policy_lines({"hidden_per_hour": 3, "burst": 3, "overflow": "alert",
                                 "environments": {"test": {"hidden_per_hour": 0}}})
    assert lines[1].split() == ["hidden_per_hour", "burst", "overflow"]
    assert lines[2].split() == ["default", "3", "3", "alert"]
    assert lines[3].split() == ["test", "0", "3", "alert", "overrides", "hidden_per_hour"]


def test_stats_table_renders_the_stats_json() -> None:
    stats = Stats()
    stats.incr(TKN_CREATED, 4)
    text = "\n".join(tables.stats_lines(views.stats_json(figures(stats))))
    assert "tkn_created" in text and "ACTIVE 5, REGISTERED 1" in text and "census 60 s ago" in text
    assert "sub_created" not in text  # zero counters only with --all
    assert "sub_created" in "\n".join(tables.stats_lines(views.stats_json(figures(stats)), all_counters=True))
