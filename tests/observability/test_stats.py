"""Counters are typed names: an unknown name is an error, never a silent new counter."""

from __future__ import annotations

import pytest

from ntf_server.handlers import SUB_CREATED, TKN_CREATED
from ntf_server.observability.metricdef import REGISTRY
from ntf_server.observability.stats import Stats


def test_every_counter_starts_at_zero_and_counts() -> None:
    stats = Stats()
    assert all(stats[c] == 0 for c in REGISTRY.counters())
    stats.incr(TKN_CREATED)
    stats.incr(TKN_CREATED, 2)
    assert stats[TKN_CREATED] == 3
    assert stats["tkn_created"] == 3  # the external name reads the same counter
    assert stats.snapshot().as_dict()["tkn_created"] == 3


def test_a_misspelt_counter_name_raises() -> None:
    stats = Stats()
    with pytest.raises(ValueError, match="tkn_craeted"):
        stats["tkn_craeted"]
    with pytest.raises(ValueError, match="tkn_craeted"):
        stats.snapshot()["tkn_craeted"]


def test_snapshot_is_frozen() -> None:
    stats = Stats()
    snap = stats.snapshot()
    stats.incr(SUB_CREATED)
    assert snap[SUB_CREATED] == 0
    with pytest.raises(TypeError):
        snap.counters[SUB_CREATED] = 5  # type: ignore[index]
