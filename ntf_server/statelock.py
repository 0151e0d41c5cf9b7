"""One server process per state directory (ntf_server/README.md "The parts"): an exclusive ``flock`` on
``<state_dir>/ntf-server.lock``, taken before anything else touches the directory.

Why: a second ``ntf-server start`` on the same configuration used to start a second embedded Redis on the
same AOF files and unlink the live Redis socket before failing on the port, breaking the running server.
The lock is held by an open file description, so it is released by the kernel whenever the process ends,
however it ends (no stale lock after ``kill -9``). The file holds the owner's PID, for the error message
only; it is never removed (removing it would let two processes lock two different files).

With ``[server] workers`` the supervisor holds ``ntf-server.lock`` and each worker its own
``worker-<n>.lock`` (supervisor/role.py), so a worker left over from a killed supervisor and its replacement
never run at once.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Final

LOCK_FILE: Final = "ntf-server.lock"


class AlreadyRunning(Exception):
    """Another process holds the state directory; the message names its PID."""


class StateLock:
    def __init__(self, state_dir: Path, name: str = LOCK_FILE) -> None:
        self.path = Path(state_dir) / name
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<StateLock {self.path} {'held' if self._fd is not None else 'free'}>"

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another ntf-server (pid {owner}) is running with state directory {self.path.parent}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description releases the lock
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
