"""Fixtures for the APNs tests: a real simulator (TLS, generated CA) on loopback and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from apns_helpers import TOPIC, ClientFactory, no_sleep

from apns.client import ApnsClient, App, ClientConfig
from apns.jwt import ProviderKey, generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey


@pytest.fixture
def key() -> ProviderKey:
    return generate_test_key("KEYID00001", "TEAMID0001")


@pytest.fixture
async def sim(key: ProviderKey) -> AsyncIterator[ApnsSimulator]:
    s = ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1)
    await s.start()
    yield s
    await s.stop()



@pytest.fixture
async def make_client(sim: ApnsSimulator, key: ProviderKey) -> AsyncIterator[ClientFactory]:
    made: list[ApnsClient] = []

    def factory(**kw: Any) -> ApnsClient:
        apps = kw.pop("apps", None) or {"app": App(sim.endpoint, kw.pop("app_key", key), TOPIC)}
        kw.setdefault("sleep", no_sleep)
        kw.setdefault("backoff", lambda attempt: 0.01 * attempt)
        config = kw.pop("config", None) or ClientConfig(**kw.pop("cfg", {}))
        c = ApnsClient(apps, config=config, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.aclose()
