"""Reliability fixtures: the e2e environment (tests/helpers/e2e_env.py) and a server thread
for hypothesis, whose tests are synchronous (``live.py``); every test here fails on a traceback or an
error logged anywhere in the process (``watch.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.e2e_env import Env, running_env
from live import LiveServer
from watch import LogWatch


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    """Collects error records and tracebacks from every logger while the test runs; the test asserts."""
    with LogWatch.installed() as w:
        yield w


@pytest.fixture
async def env(tmp_path: Path, redis_url: str) -> AsyncIterator[Env]:
    async with running_env(tmp_path, redis_url) as e:
        yield e


# Fuzzing goes deep, not wide: the command budgets and the ERR AUTH limit (tested in tests/e2e) would
# otherwise end the fuzzed connections long before the parsers and handlers have seen enough.
FUZZ_SECTIONS = {
    "server": {"commands_per_connection_per_min": 0.0, "commands_per_ip_per_min": 0.0, "max_auth_failures": 0},
    "registration": {"per_connection_per_min": 0.0, "per_ip_per_min": 0.0},
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveServer]:
    """One server for a module's hypothesis examples, in its own thread and event loop."""
    server = LiveServer(tmp_path_factory.mktemp("live"), redis_url, FUZZ_SECTIONS)
    server.start()
    yield server
    server.stop()
