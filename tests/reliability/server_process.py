"""``ntf-server start`` as a child process for the kill -9 tests: configured as ``ntf-server init`` writes
it, then pointed at the tests' Redis (its own key prefix) and at an APNs simulator, on a fixed port so a
restarted server is found where the killed one was."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import sys
from pathlib import Path

from ntf_server import cli
from ntf_server.transport import certs

START_TIMEOUT_S = 30.0


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


def init_config(directory: Path, settings: dict[tuple[str, str], str | int | float | bool]) -> Path:
    assert cli.main(["--config-dir", str(directory), "init", "--host", "localhost"]) == 0
    path = directory / "ntf-server.toml"
    text = path.read_text()
    defaults: dict[tuple[str, str], str | int | float | bool] = {
        ("server", "port"): free_port(), ("server", "bind"): "127.0.0.1", ("admin", "port"): 0,
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
