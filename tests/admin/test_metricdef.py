"""A metric is one definition next to the code that counts it: ``/metrics``, ``/v1/stats`` and the sums
across workers pick it up with no other edit (ntf_server/observability/metricdef.py)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.metrics_golden import OWN, OWN_DOMAINS, THEIRS, counter_names, figures, worker_figures
from prometheus_client.parser import text_string_to_metric_families

import ntf_server
from ntf_server.admin import metrics, views
from ntf_server.admin.workers import from_json, merge, to_json
from ntf_server.observability.metricdef import MODULES, REGISTRY, Counter, Family, Gauge, lookup
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.stats import Stats


@pytest.fixture
def new_metrics() -> Iterator[tuple[Counter, Counter, Counter, Gauge]]:
    """What a module adding a counter, a labelled pair and a gauge would write, and nothing else."""
    family = Family("widget_events", "event", "Widget events, by event")
    defined = (Counter("widgets_made", "Widgets made", per_server=True),
               Counter("widget_spun", "Widgets spun", family, "spun"),
               Counter("widget_dropped", "Widgets dropped", family, "dropped"),
               Gauge("widgets_waiting", "Widgets waiting"))
    try:
        yield defined
    finally:
        for m in defined:
            REGISTRY.forget(m)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_a_new_definition_is_rendered_and_summed_across_workers(
        new_metrics: tuple[Counter, Counter, Counter, Gauge]) -> None:
    made, spun, _, waiting = new_metrics
    own = OwnServers(OWN_DOMAINS)
    stats = [Stats(own), Stats(own)]
    for i, s in enumerate(stats):
        s.incr_server(made, OWN.hosts, 1 + i)
        s.incr_server(made, THEIRS.hosts)
        s.incr(spun, 10)
        s.track(waiting, lambda i=i: 4 + i)
    one, _ = figures(counter_names())
    peer = from_json(json.loads(json.dumps(to_json(worker_figures(stats[1], 1)))))
    fig = merge(one, worker_figures(stats[0], 0), [peer])
    got = samples(metrics.render(fig, own).decode())
    assert got[("ntf_widgets_made_total", ())] == 5
    assert got[("ntf_widgets_made_by_server_total", (("server", "smp1.own.example"),))] == 3
    assert got[("ntf_widgets_made_by_server_total", (("server", "other"),))] == 2
    assert got[("ntf_widget_events_total", (("event", "spun"),))] == 20
    assert got[("ntf_widget_events_total", (("event", "dropped"),))] == 0
    assert got[("ntf_widgets_waiting", ())] == 9
    body = views.stats_json(fig)
    assert (body["counters"]["widgets_made"], body["counters"]["widget_dropped"]) == (5, 0)
    assert body["counters_by_server"]["widgets_made"] == {"other": 2, "smp1.own.example": 3}
    assert body["widgets_waiting"] == 9


def test_a_counter_not_kept_per_server_refuses_a_server(
        new_metrics: tuple[Counter, Counter, Counter, Gauge]) -> None:
    with pytest.raises(ValueError, match="widget_spun"):
        Stats().incr_server(new_metrics[1], OWN.hosts)


def test_a_name_defined_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="tkn_created"):
        Counter("tkn_created", "Something else")
    assert lookup("tkn_created").help == "Tokens registered (TNEW)"


def _defining_modules() -> set[str]:
    """Modules of ntf_server with a module-level ``Counter(...)`` or ``Gauge(...)`` definition."""
    root = Path(ntf_server.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in {
                    "Counter", "Gauge"}:
                found.add(".".join(("ntf_server", *path.relative_to(root).with_suffix("").parts)))
    return found


def test_every_module_defining_metrics_is_listed() -> None:
    """The registry imports these before it is read, so every metric shows (at zero) in every process."""
    assert _defining_modules() <= set(MODULES)
