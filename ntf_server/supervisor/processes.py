"""Process management: the allocator re-exec, and one worker process and its two pipes.

A worker is ``python -m ntf_server.supervisor.worker <config dir> <index> <count> <port> <restarts>``. Its stdin is
the supervisor's: one line, the embedded Redis URL (a secret: never in argv, which every user can read), then
nothing until the supervisor ends, so end-of-file tells the worker its supervisor is gone (even after
``kill -9``) and it stops as on SIGTERM. Its stdout carries one JSON line once it serves: its port and its
start-up summary. Its stderr is the supervisor's (the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ntf_server.supervisor.role import WorkerRole
from ntf_server.transport.memory import glibc

WORKER_MODULE: Final = "ntf_server.supervisor.worker"


def use_system_malloc() -> None:
    """Re-execute this process once with ``PYTHONMALLOC=malloc`` (same interpreter, same arguments), so
    freed memory can go back to the system (transport/memory.py); workers inherit the environment. An explicit
    ``PYTHONMALLOC`` (any value, e.g. ``pymalloc``) is respected: no re-exec."""
    if "PYTHONMALLOC" in os.environ or not glibc():
        return
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "PYTHONMALLOC": "malloc"})  # noqa: S606 (own argv)


@dataclass(frozen=True, slots=True)
class Ready:
    """What a worker says once it serves."""

    port: int
    summary: tuple[str, ...]


class WorkerProcess:
    """One running worker process."""

    def __init__(self, proc: asyncio.subprocess.Process, role: WorkerRole) -> None:
        self.proc = proc
        self.role = role

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.role.index} pid={self.proc.pid} rc={self.proc.returncode}>"

    @classmethod
    async def spawn(cls, config_dir: Path, role: WorkerRole) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", WORKER_MODULE, str(config_dir), str(role.index), str(role.count), str(role.port),
            str(role.restarts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(role.redis_url.encode() + b"\n")  # the pipe stays open: its end tells the worker
        return cls(proc, role)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self) -> Ready | None:
        """Its announcement; None if it ended first. Any other line on its stdout (a library's print) is
        passed on to the supervisor's."""
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                data = json.loads(line)
                return Ready(int(data["port"]), tuple(str(x) for x in data["summary"]))
            except (ValueError, KeyError, TypeError):
                sys.stdout.write(line.decode(errors="replace"))
        return None

    async def wait(self) -> int:
        return await self.proc.wait()

    async def stop(self, timeout_s: float) -> tuple[int, bool]:
        """SIGTERM (the worker drains), then SIGKILL after ``timeout_s``; its exit status and whether it had
        to be killed."""
        if self.proc.returncode is not None:
            return self.proc.returncode, False
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout_s), False
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            return await self.proc.wait(), True


def describe_exit(status: int) -> str:
    """``exit status 1`` or ``signal SIGKILL`` (asyncio gives a signal as a negative status)."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-status).name}"
        return f"signal {-status}"
    return f"exit status {status}"
