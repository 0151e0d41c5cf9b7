"""Everything the demo runs, all local, in one process and one temporary directory.

`local_world()` creates, in order: a temporary directory; a configuration in it (`ntf-server.toml`, server
identity, store key, admin token, a fresh APNs .p8 key), written as files and loaded through config.py like
`ntf-server start` does; the strict APNs simulator trusting that key; two SMP server stand-ins; the server
itself (which starts its own embedded Redis in the directory, as when `redis.url` is empty). On exit
everything is stopped in reverse order and the directory is removed, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.config import Config, load_config
from ntf_server.demo.admin import AdminApi, free_port
from ntf_server.server import NtfServer
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.transport import certs

TOPIC: Final = "chat.simplex.app"
HOST: Final = "127.0.0.1"
SMP_NAMES: Final = ("A", "B")


@dataclass(frozen=True)
class PushPolicy:
    hidden_per_hour: float
    burst: int
    overflow: str

    def describe(self) -> str:
        rate = f"{self.hidden_per_hour:g}" if isinstance(self.hidden_per_hour, int | float) else self.hidden_per_hour
        return f"{rate}/h, burst {self.burst}, overflow {self.overflow}"


@dataclass
class World:
    workdir: Path
    config: Config
    sim: ApnsSimulator
    smp: dict[str, SmpServerStandIn]  # "A", "B"
    server: NtfServer
    key_hash: bytes
    admin: AdminApi | None

    @property
    def address(self) -> str:
        """The server address apps are configured with (ntf://<fingerprint>@host:port)."""
        return certs.server_address(self.key_hash, HOST, self.server.port)


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(config_dir: Path, sim: ApnsSimulator, p8: Path, key_id: str, team_id: str,
                 policy: PushPolicy, admin_port: int | None) -> None:
    """Only what differs from the defaults; init's files (certificates, keys) are made beside it."""
    certs.create_credentials(config_dir, HOST, certs.SignAlgorithm.ED25519)
    load_or_create_store_key(config_dir / "store.key")
    certs.write_private_file(config_dir / "admin.token", (certs.random_token() + "\n").encode())
    admin = (f"enabled = true\nbind = {_toml_str(HOST)}\nport = {admin_port}\n" if admin_port is not None
             else "enabled = false\n")
    text = f"""# written by `ntf-server demo`; removed when it ends
[server]
host = {_toml_str(HOST)}
bind = {_toml_str(HOST)}
port = 0

[apns.test]
enabled = true
host = {_toml_str(HOST)}
port = {sim.port}
ca_file = {_toml_str(sim.ca_file or "")}
key_file = {_toml_str(p8)}
key_id = {_toml_str(key_id)}
team_id = {_toml_str(team_id)}
topic = {_toml_str(TOPIC)}

[subscriber]
use_service_credentials = true
allow_private_hosts = true  # the SMP stand-ins listen on loopback
lease_renew_s = 0.2  # one instance: its SMP servers are subscribed at once, not at the next 3 s round

[push]
hidden_per_hour = {policy.hidden_per_hour}
burst = {policy.burst}
overflow = {_toml_str(policy.overflow)}

[admin]
{admin}
[log]
level = "warning"
"""
    certs.write_public_file(config_dir / "ntf-server.toml", text.encode())


@contextlib.asynccontextmanager
async def local_world(policy: PushPolicy, *, admin: bool) -> AsyncIterator[World]:
    workdir = Path(tempfile.mkdtemp(prefix="ntf-demo-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            config_dir = workdir / "config"
            config_dir.mkdir(mode=0o700)
            key = generate_test_key("DEMOKEY001", "DEMOTEAM01")
            p8 = config_dir / f"AuthKey_{key.key_id}.p8"
            certs.write_private_file(p8, key.key_pem)
            sim = ApnsSimulator([SimulatorKey.from_provider_key(key, frozenset({TOPIC}))])
            await sim.start()
            stack.push_async_callback(sim.stop)
            smp: dict[str, SmpServerStandIn] = {}
            for name in SMP_NAMES:
                smp[name] = SmpServerStandIn(host=HOST)
                await smp[name].start()
                stack.push_async_callback(smp[name].close)
            admin_port = free_port(HOST) if admin else None
            write_config(config_dir, sim, p8, key.key_id, key.team_id, policy, admin_port)
            config = load_config(config_dir)
            server = NtfServer(config)
            await server.start()
            stack.push_async_callback(server.stop)
            api = None
            if admin_port is not None:
                token = (config_dir / "admin.token").read_text().strip()
                api = AdminApi(f"http://{HOST}:{admin_port}", token)
            key_hash = certs.fingerprint(certs.read_ca_der(config.tls.ca_cert_file))
            yield World(workdir, config, sim, smp, server, key_hash, api)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
