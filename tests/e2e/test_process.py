"""`ntf-server start` as an operator runs it: a real process with its embedded Redis, driven from outside.

One process per state directory, supervision of its parts (the embedded Redis is restarted, a part that
cannot recover ends the process with a clear line and a non-zero exit), and operator errors as one line.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.logparse import parse_logfmt

from ntf_server import cli
from ntf_server.protocol import ntf as P
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.store.embedded import find_server_binary
from ntf_server.transport import certs

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 30.0


def init_dir(tmp_path: Path, **server: str | int) -> Path:
    """``ntf-server init`` defaults, listening on a free port (0) on loopback, one process (``workers = 1``:
    these tests look at the process tree of one server; tests/reliability/test_workers.py runs several)."""
    cfg = tmp_path / "cfg"
    assert cli.main(["init", "--config-dir", str(cfg), "--host", "localhost", "--port", "8443"]) == 0
    settings = {"port": 0, "bind": "127.0.0.1", "workers": 1, **server}
    text = (cfg / "ntf-server.toml").read_text()
    for key, value in settings.items():
        literal = f'"{value}"' if isinstance(value, str) else str(value)
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {literal}", text, count=1, flags=re.M)
        assert n == 1, key
    text, n = re.subn(r"^port = 5227$", "port = 0", text, flags=re.M)  # the admin API on a free port
    assert n == 1
    (cfg / "ntf-server.toml").write_text(text)
    return cfg


def child_pids(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def reaped(pid: int) -> bool:
    """Gone from the process table: not running, and not a zombie waiting for its parent."""
    return not Path(f"/proc/{pid}").exists()


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    port: int
    config_dir: Path

    @property
    def key_hash(self) -> bytes:
        return certs.fingerprint(certs.read_ca_der(self.config_dir / "ca.crt"))

    async def client(self) -> NtfClient:
        return await NtfClient.connect("127.0.0.1", self.port, self.key_hash)


async def spawn(config_dir: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ntf_server.cli", "--config-dir", str(config_dir), "start",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def finished(proc: asyncio.subprocess.Process, timeout_s: float = START_TIMEOUT_S) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@asynccontextmanager
async def running(config_dir: Path, env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    proc = await spawn(config_dir, env)
    try:
        assert proc.stdout is not None
        port = None
        async with asyncio.timeout(START_TIMEOUT_S):
            while port is None:
                line = (await proc.stdout.readline()).decode()
                assert line, f"server exited: {(await proc.stderr.read()).decode()[-2000:]}"  # type: ignore[union-attr]
                if m := re.match(r"Listening on port (\d+)", line):
                    port = int(m.group(1))
        yield Running(proc, port, config_dir)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await finished(proc)


async def register(r: Running) -> tuple[NtfClient, SimApp]:
    client = await r.client()
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_NULL, os.urandom(32).hex().encode()))
    assert isinstance(await app.register(client), P.IdTkn)
    return client, app


async def test_second_start_on_the_same_state_dir_is_refused_and_harms_nothing(tmp_path: Path) -> None:
    cfg = init_dir(tmp_path)
    async with running(cfg) as first:
        client, app = await register(first)
        sock = cfg / "state" / "redis" / "redis" / "redis.sock"
        assert sock.exists()
        code, out, err = await finished(await spawn(cfg))
        assert code != 0
        lines = err.strip().splitlines()
        assert lines == [f"ntf-server: another ntf-server (pid {first.proc.pid}) is running with state "
                         f"directory {cfg / 'state'}"]
        assert "Traceback" not in out + err
        assert sock.exists()  # the live Redis socket was left alone
        # The first server still answers, from the store too.
        status = await app.token_command(client, P.TChk())
        assert isinstance(status, P.Tkn)
        client2, _ = await register(first)
        await client.close()
        await client2.close()
    # The lock goes with the process: a start after the first one stopped works.
    async with running(cfg) as again:
        c, _ = await register(again)
        await c.close()


async def test_embedded_redis_that_dies_is_reaped_and_restarted_losing_nothing(tmp_path: Path) -> None:
    cfg = init_dir(tmp_path)
    async with running(cfg) as r:
        client, app = await register(r)
        [redis_pid] = child_pids(r.proc.pid)
        os.kill(redis_pid, signal.SIGKILL)
        async with asyncio.timeout(15):  # back within a few seconds
            while True:
                status = await app.token_command(client, P.TChk())
                if isinstance(status, P.Tkn):
                    break
                await asyncio.sleep(0.1)
        assert reaped(redis_pid)
        [new_pid] = child_pids(r.proc.pid)
        assert new_pid != redis_pid
        await client.close()


async def test_a_part_that_cannot_recover_ends_the_process_with_one_clear_line(tmp_path: Path) -> None:
    """The embedded Redis dies and cannot be started again (its binary is gone): the server must not stay
    up answering ERR STORE forever; it exits non-zero, so systemd restarts it, and leaves nothing behind."""
    binary = tmp_path / "redis-server-copy"
    shutil.copy(find_server_binary(), binary)
    cfg = init_dir(tmp_path)
    async with running(cfg, {"REDIS_SERVER_BIN": str(binary)}) as r:
        [redis_pid] = child_pids(r.proc.pid)
        binary.unlink()
        os.kill(redis_pid, signal.SIGKILL)
        code, _, err = await finished(r.proc)
    assert code == 1
    assert "Traceback" not in err
    assert "embedded redis failed" in err and "stopping the server" in err
    assert err.strip().splitlines()[-1].startswith("ntf-server: embedded redis failed:")
    async with running(cfg) as again:  # lock released, socket cleaned up: a plain restart works
        c, _ = await register(again)
        await c.close()


async def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = init_dir(tmp_path, port=port)
        code, out, err = await finished(await spawn(cfg))
    assert code == 1
    assert "Traceback" not in out + err
    assert err.strip().splitlines() == [f"ntf-server: cannot listen on 127.0.0.1:{port}: Address already in use"]


async def test_unreachable_redis_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cfg = init_dir(tmp_path)
    text = (cfg / "ntf-server.toml").read_text().replace('url = ""', f'url = "redis://127.0.0.1:{port}/0"', 1)
    (cfg / "ntf-server.toml").write_text(text)
    code, out, err = await finished(await spawn(cfg))
    assert code == 1
    assert "Traceback" not in out + err
    [line] = err.strip().splitlines()
    assert line.startswith(f"ntf-server: cannot use Redis at redis://127.0.0.1:{port}/0: redis unreachable")


async def test_start_prints_a_summary_and_logs_one_event_per_line(tmp_path: Path) -> None:
    """What an operator sees: a short summary on stdout, then logfmt events on stderr that parse back, with
    the start-up summary, the embedded Redis restart and the shutdown as named events."""
    cfg = init_dir(tmp_path)
    proc = await spawn(cfg)
    assert proc.stdout is not None
    head: list[str] = []
    async with asyncio.timeout(START_TIMEOUT_S):
        while not (head and head[-1].startswith("Listening on port")):
            line = (await proc.stdout.readline()).decode()
            assert line, "server exited"
            head.append(line.strip())
    key_hash = certs.fingerprint(certs.read_ca_der(cfg / "ca.crt"))
    [redis_pid] = child_pids(proc.pid)
    os.kill(redis_pid, signal.SIGKILL)
    async with asyncio.timeout(15):
        while child_pids(proc.pid) in ([], [redis_pid]):  # noqa: ASYNC110 (another process: nothing to await)
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the "restarted" line follows the new child's start
    proc.send_signal(signal.SIGTERM)
    code, _, err = await finished(proc)
    assert code == 0
    port = int(head[-1].split()[3].rstrip("."))
    address = certs.server_address(key_hash, "localhost", port)  # port 0 in the config: the one picked
    assert head[:2] == [f"Server address: {address}", f"Listen: 127.0.0.1:{port}"]
    summary = {line.split(": ", 1)[0] for line in head if ": " in line}
    assert {"Server address", "Listen", "APNs", "Redis", "Push policy", "Admin API", "SMP via SOCKS"} <= summary
    lines = [parse_logfmt(line) for line in err.splitlines()]  # every line is one logfmt event
    assert all(list(e)[:3] == ["ts", "level", "event"] for e in lines)
    by_event = {str(e["event"]): e for e in lines}
    started = by_event["server.started"]
    assert started["address"] == address  # public: the scrubber leaves the fingerprint alone
    assert str(started["redis"]).startswith("embedded at ") and started["admin"].startswith("http://127.0.0.1:")
    assert started["policy"].endswith("(config)") and started["socks"] == "off" and started["apns"] == "none enabled"
    assert by_event["listener.started"]["bind"] == "127.0.0.1"
    assert by_event["redis.embedded.exited"]["level"] == "error" and "redis.embedded.restarted" in by_event
    assert by_event["server.stopping"]["reason"] == "signal"
