"""End-to-end fixtures: a real NTF server (TLS listener, Redis store, push service) on loopback, pointed at
the strict APNs simulator for provider ``AT``, initialised exactly as ``ntf-server init`` does."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.server import NtfServer
from ntf_server.transport import certs

TOPIC = "chat.simplex.app"


@dataclasses.dataclass
class Env:
    config: Config
    sim: ApnsSimulator
    key_hash: bytes
    servers: list[NtfServer]

    @property
    def server(self) -> NtfServer:
        return self.servers[-1]

    @property
    def port(self) -> int:
        return self.server.port

    async def reconfigure(self, section: str, **changes: Any) -> NtfServer:
        """Stop the running server and start one whose config ``section`` has ``changes``."""
        await self.server.stop()
        changed = dataclasses.replace(getattr(self.config, section), **changes)
        cfg = dataclasses.replace(self.config, **{section: changed})
        new = NtfServer(cfg)
        await new.start()
        self.servers.append(new)
        return new

    async def restart(self) -> NtfServer:
        """Stop the running server and start a new one on the same config, Redis and port."""
        port = self.server.port
        await self.server.stop()
        cfg = dataclasses.replace(self.config, server=dataclasses.replace(self.config.server, port=port))
        new = NtfServer(cfg)
        await new.start()
        self.servers.append(new)
        return new


def init_config(directory: Path, redis_url: str, sim: ApnsSimulator, p8: Path, key_id: str, team_id: str,
                ) -> Config:
    assert cli.main(["--config-dir", str(directory), "init", "--host", "localhost"]) == 0
    cfg = load_config(directory)
    test_env = dataclasses.replace(
        cfg.apns.test, enabled=True, host="127.0.0.1", port=sim.port, ca_file=Path(str(sim.ca_file)),
        key_file=p8, key_id=key_id, team_id=team_id, topic=TOPIC,
    )
    return dataclasses.replace(
        cfg,
        redis=dataclasses.replace(cfg.redis, url=redis_url, key_prefix=f"e2e:{secrets.token_hex(6)}:"),
        apns=dataclasses.replace(cfg.apns, test=test_env),
        server=dataclasses.replace(cfg.server, port=0, bind="127.0.0.1", handshake_timeout_s=5.0,
                                   block_read_timeout_s=2.0),
    )


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
