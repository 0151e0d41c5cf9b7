"""End-to-end fixtures: a real NTF server (TLS listener, Redis store, push service) on loopback, pointed at
the strict APNs simulator for provider ``AT`` (helpers in e2e_env.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_env import Env, init_config

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.server import NtfServer
from ntf_server.transport import certs


@pytest.fixture
async def env(tmp_path: Path, redis_url: str) -> AsyncIterator[Env]:
    key = generate_test_key("KEYID00001", "TEAMID0001")
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    sim = ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1)
    await sim.start()
    servers: list[NtfServer] = []
    try:
        cfg = init_config(tmp_path / "cfg", redis_url, sim, p8, key.key_id, key.team_id)
        servers.append(NtfServer(cfg))
        await servers[0].start()
        yield Env(cfg, sim, certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file)), servers)
    finally:
        for s in servers:
            await s.stop()
        await sim.stop()
