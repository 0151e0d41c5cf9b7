"""The end-to-end test environment: a real NTF server on loopback pointed at the strict APNs simulator,
initialised exactly as ``ntf-server init`` does (the ``env`` fixtures of tests/e2e and tests/reliability)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from helpers.valkey_cluster import CLUSTER, SHARDS
from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.protocol import ntf as P
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
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
        return await self.reconfigure_sections({section: changes})

    async def reconfigure_sections(self, sections: dict[str, dict[str, Any]]) -> NtfServer:
        """Stop the running server and start one with several config sections changed at once."""
        await self.server.stop()
        changed = {name: dataclasses.replace(getattr(self.config, name), **c) for name, c in sections.items()}
        new = NtfServer(dataclasses.replace(self.config, **changed))
        await new.start()
        self.servers.append(new)
        return new

    async def restart(self, while_stopped: Callable[[], None] | None = None) -> NtfServer:
        """Stop the running server and start a new one on the same config, Redis and port; runs
        ``while_stopped`` in between."""
        port = self.server.port
        await self.server.stop()
        if while_stopped is not None:
            while_stopped()
        cfg = dataclasses.replace(self.config, server=dataclasses.replace(self.config.server, port=port))
        new = NtfServer(cfg)
        await new.start()
        self.servers.append(new)
        return new


@contextlib.asynccontextmanager
async def running_env(tmp_path: Path, redis_url: str, cluster: bool = CLUSTER) -> AsyncIterator[Env]:
    """A started APNs simulator and NTF server (the ``env`` fixture; also used outside pytest-asyncio's
    loop, e.g. by tests/reliability's server thread); both stopped on exit. ``cluster``: ``redis_url`` names
    a cluster node (README "Cluster mode")."""
    key = generate_test_key("KEYID00001", "TEAMID0001")
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    sim = ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1)
    await sim.start()
    servers: list[NtfServer] = []
    try:
        cfg = init_config(tmp_path / "cfg", redis_url, sim, p8, key.key_id, key.team_id, cluster)
        servers.append(NtfServer(cfg))
        await servers[0].start()
        yield Env(cfg, sim, certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file)), servers)
    finally:
        for s in servers:
            await s.stop()
        await sim.stop()


def init_config(directory: Path, redis_url: str, sim: ApnsSimulator, p8: Path, key_id: str, team_id: str,
                cluster: bool = CLUSTER) -> Config:
    assert cli.main(["--config-dir", str(directory), "init", "--host", "localhost"]) == 0
    cfg = load_config(directory)
    test_env = dataclasses.replace(
        cfg.apns.test, enabled=True, host="127.0.0.1", port=sim.port, ca_file=Path(str(sim.ca_file)),
        key_file=p8, key_id=key_id, team_id=team_id, topic=TOPIC,
    )
    return dataclasses.replace(
        cfg,
        redis=dataclasses.replace(cfg.redis, url=redis_url, key_prefix=f"e2e:{secrets.token_hex(6)}:", cluster=cluster,
                                   shards=SHARDS),
        apns=dataclasses.replace(cfg.apns, test=test_env),
        server=dataclasses.replace(cfg.server, port=0, bind="127.0.0.1", handshake_timeout_s=5.0,
                                   block_read_timeout_s=2.0),
        admin=dataclasses.replace(cfg.admin, port=0),  # a free port: tests run side by side
        # SimpleX parity (every NMSG an alert) unless a test sets a policy (PolicyStore.put, as the admin API);
        # deferred pushes are looked for often, so a budget that returns is seen within 50 ms
        push=dataclasses.replace(cfg.push, hidden_per_hour=0.0, defer_scan_s=0.05),
        # SMP stand-ins on loopback; lease rounds every 0.1 s, so a new SMP server is subscribed within 0.1 s
        # instead of at the next 3 s round (tests of the lease timing set their own)
        subscriber=dataclasses.replace(cfg.subscriber, allow_private_hosts=True, lease_renew_s=0.1),
    )


async def fresh_census(server: NtfServer) -> None:
    """A census of the data as it is now, instead of waiting ``admin.census_interval_s``. First waits for
    the census part's own first (paced) count: finishing later, it would overwrite this one with older data."""
    census = server.census
    assert census is not None
    async with asyncio.timeout(10):
        while census.latest is None:  # noqa: ASYNC110 - the census part has no event to wait on
            await asyncio.sleep(0.02)
    census.latest = await census.take()


async def active_app(env: Env, client: NtfClient) -> SimApp:
    """A simulated app whose token is registered and verified (ACTIVE), over ``client``."""
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    assert isinstance(await app.register(client), P.IdTkn)
    push = await env.sim.next_push(app.device_token.token.decode())
    assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
    return app
