"""``ntf-server start`` as a child process (the kill -9 test and the long runs in tests/bench): configured
as ``ntf-server init`` writes it, then pointed at a Redis (its own key prefix) and at an APNs simulator, on
a fixed port so a restarted server is found where the killed one was."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server import cli
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.transport import certs

START_TIMEOUT_S = 30.0
TOPIC = "chat.simplex.app"
Settings = dict[tuple[str, str], str | int | float | bool]
UNLIMITED_REGISTRATION: Settings = {  # load, not abuse: the registration limits are tested elsewhere
    ("registration", "per_connection_per_min"): 0.0, ("registration", "per_ip_per_min"): 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_key(text: str, section: str, key: str, value: str | int | float | bool) -> str:
    """Sets ``key`` in ``[section]`` of a TOML text written by ``ntf-server init``."""
    if isinstance(value, bool):
        literal = "true" if value else "false"
    else:
        literal = f'"{value}"' if isinstance(value, str) else str(value)
    start = text.index(f"\n[{section}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    body, n = re.subn(rf"^{key} = .*$", f"{key} = {literal}", text[start:end], count=1, flags=re.M)
    assert n == 1, (section, key)
    return text[:start] + body + text[end:]


def init_config(directory: Path, settings: Settings) -> Path:
    assert cli.main(["--config-dir", str(directory), "init", "--host", "localhost"]) == 0
    path = directory / "ntf-server.toml"
    text = path.read_text()
    defaults: Settings = {
        ("server", "port"): free_port(), ("server", "bind"): "127.0.0.1", ("admin", "port"): 0,
        ("server", "workers"): 1,  # one process (its pid is the server's); test_workers.py runs several
        ("redis", "key_prefix"): f"proc:{secrets.token_hex(6)}:",
        ("subscriber", "allow_private_hosts"): True,  # the SMP stand-ins listen on loopback
    }
    for (section, key), value in {**defaults, **settings}.items():
        text = set_key(text, section, key, value)
    path.write_text(text)
    return directory


class ServerProcess:
    def __init__(self, config_dir: Path, log_path: Path | None = None) -> None:
        self.config_dir = config_dir
        self.log_path = log_path  # where its output goes after the start line (None: nowhere)
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def key_hash(self) -> bytes:
        return certs.fingerprint(certs.read_ca_der(self.config_dir / certs.CA_CERT_FILE))

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ntf_server.cli", "--config-dir", str(self.config_dir), "start",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=dict(os.environ),
        )
        assert self.proc.stdout is not None
        seen: list[str] = []
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                assert line, "the server exited while starting: " + "".join(seen)[-2000:]
                seen.append(line)
                if m := re.match(r"Listening on port (\d+)", line):
                    self.port = int(m.group(1))
                    break
        self._drain = asyncio.get_running_loop().create_task(self._drain_stdout("".join(seen).encode()))

    async def _drain_stdout(self, head: bytes) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path or os.devnull, "ab") as out:  # noqa: ASYNC230 - small writes, test helper
            out.write(head)
            while data := await self.proc.stdout.read(65536):
                out.write(data)
                out.flush()

    def resources(self) -> tuple[int, int]:
        """(RSS bytes, open fds) of the running server, from /proc."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        return rss, len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def error_lines(log_path: Path) -> list[str]:
    """The error and traceback lines of a server log (logfmt)."""
    return [line for line in log_path.read_text(errors="replace").splitlines()
            if "Traceback" in line or "level=error" in line]


@dataclass
class World:
    server: ServerProcess
    sim: ApnsSimulator
    redis_url: str


@contextlib.asynccontextmanager
async def server_world(directory: Path, settings: Settings, *, redis_url: str = "", record: bool = True,
                       log_path: Path | None = None) -> AsyncIterator[World]:
    """An APNs simulator and an ``ntf-server`` process configured for it and started; Redis at
    ``redis_url``, or a Redis of its own under ``directory``. Everything stopped on exit."""
    key = generate_test_key("KEYID00001", "TEAMID0001")
    p8 = directory / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    p8.chmod(0o600)  # the server refuses a key file others can read
    store = None if redis_url else EmbeddedRedis(directory / "state")
    if store is not None:
        redis_url = await store.start()
    try:
        async with ApnsSimulator([SimulatorKey.from_provider_key(key)], record=record) as sim:
            cfg = init_config(directory / "cfg", {
                ("redis", "url"): redis_url, ("apns.test", "enabled"): True, ("apns.test", "host"): "127.0.0.1",
                ("apns.test", "port"): sim.port, ("apns.test", "ca_file"): str(sim.ca_file),
                ("apns.test", "key_file"): str(p8), ("apns.test", "key_id"): key.key_id,
                ("apns.test", "team_id"): key.team_id, ("apns.test", "topic"): TOPIC, **settings,
            })
            server = ServerProcess(cfg, log_path or directory / "server.log")
            await server.start()
            try:
                yield World(server, sim, redis_url)
            finally:
                await server.stop()
    finally:
        if store is not None:
            await store.stop()
