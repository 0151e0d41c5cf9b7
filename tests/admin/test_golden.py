"""External names unchanged: ``/metrics`` and ``/v1/stats`` of one fixed state, against what the code
rendered before metrics were defined where they are counted (tests/helpers/metrics_golden.py wrote the fixture)."""

from __future__ import annotations

import json

import pytest
from helpers.metrics_golden import DATA, counter_names, rendered


def families(text: str) -> list[tuple[str, ...]]:
    """The exposition cut into metric families: HELP and TYPE lines, then the sample lines; the order of the
    families and of the samples in one is not part of the format's meaning."""
    out = []
    for block in ("\n" + text).split("\n# HELP ")[1:]:
        help_line, type_line, *samples = block.strip("\n").split("\n")
        out.append((help_line, type_line, *sorted(samples)))
    return sorted(out)


@pytest.mark.parametrize("key", ["metrics", "metrics_workers"])
def test_metrics_text_is_unchanged(key: str) -> None:
    assert families(rendered(counter_names())[key]) == families((DATA / f"{key}.prom").read_text())


@pytest.mark.parametrize("key", ["stats", "stats_workers", "smp_servers_workers"])
def test_stats_json_is_unchanged(key: str) -> None:
    assert rendered(counter_names())[key] == json.loads((DATA / f"{key}.json").read_text())
