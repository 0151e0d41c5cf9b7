"""``[server] workers``: a number or ``auto``, as a TOML integer or string; anything else names the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ntf_server.config import ConfigError, parse_config


def workers(value: object) -> int:
    return parse_config({"server": {"workers": value}}, Path("/cfg")).server.worker_count()


def test_auto_is_one_worker_per_core_and_the_default() -> None:
    assert workers("auto") == len(os.sched_getaffinity(0))
    assert parse_config({}, Path("/cfg")).server.worker_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("value", "count"), [(1, 1), (4, 4), ("2", 2)])
def test_a_number_as_an_integer_or_a_string(value: object, count: int) -> None:
    assert workers(value) == count


@pytest.mark.parametrize("value", [0, -1, 257, "0", "two", "", 1.5, True])
def test_anything_else_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"server\.workers"):
        workers(value)
