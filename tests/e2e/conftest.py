"""End-to-end fixtures: a real NTF server (TLS listener, Redis store, push service) on loopback, pointed at
the strict APNs simulator for provider ``AT`` (tests/helpers/e2e_env.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers.e2e_env import Env, running_env


@pytest.fixture
async def env(tmp_path: Path, redis_url: str) -> AsyncIterator[Env]:
    async with running_env(tmp_path, redis_url) as e:
        yield e
