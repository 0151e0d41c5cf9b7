"""Give memory back to the system after a connection flood ends (issue 8.3).

Thousands of connections leave the heap full of free memory that the process keeps: glibc's ``free()``
only returns memory at the top of its heap, and CPython's own object allocator (pymalloc) returns a
1 MiB arena only when every object in it is gone, so a few survivors keep most arenas of a flood. Two
measures, both measured by ``tests/bench/conn_memory.py``:

* ``ntf-server start`` runs the server with ``PYTHONMALLOC=malloc`` (``use_system_malloc``): Python
  objects then live in glibc's heap, whose free pages ``malloc_trim`` can return one by one;
* ``MemoryReturner`` runs ``gc.collect()`` (objects in reference cycles hold memory until collected) and
  ``malloc_trim(0)`` ``TRIM_DELAY_S`` after the number of open connections has fallen to
  ``1 - TRIM_FALL`` of its peak (and by at least ``TRIM_MIN_DROP``): a flood ended, not ordinary churn.

Both are no-ops where glibc is not the C library (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import platform
import sys
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

TRIM_MIN_DROP: Final = 64  # connections closed since the peak before a trim is worth it
TRIM_FALL: Final = 0.25  # ... and at least this fraction of the peak (steady churn never trims)
TRIM_DELAY_S: Final = 5.0  # a flood that is still ending is trimmed once, after this delay


def _glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def use_system_malloc() -> None:
    """Re-execute this process once with ``PYTHONMALLOC=malloc`` (same interpreter, same arguments).
    An explicit ``PYTHONMALLOC`` (any value, e.g. ``pymalloc``) is respected: no re-exec."""
    if "PYTHONMALLOC" in os.environ or not _glibc():
        return
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "PYTHONMALLOC": "malloc"})  # noqa: S606 (own argv)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not _glibc():
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Collect cycles and return free heap pages to the system; False if the C library cannot."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class MemoryReturner:
    """Decides when a fall in open connections is worth a trim; ``count`` gives the open connections."""

    __slots__ = ("_count", "_peak", "_timer")

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self._peak = 0
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<MemoryReturner peak={self._peak} now={self._count()} trim={'pending' if self._timer else 'idle'}>"

    @property
    def trim_pending(self) -> bool:
        return self._timer is not None

    def connection_started(self) -> None:
        self._peak = max(self._peak, self._count())

    def connection_ended(self) -> None:
        drop = self._peak - self._count()
        if self._timer is None and drop >= TRIM_MIN_DROP and drop >= TRIM_FALL * self._peak:
            self._timer = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._trim)

    def _trim(self) -> None:
        self._timer = None
        self._peak = self._count()
        if release_memory():
            log.debug("returned free heap memory to the system (%d connections open)", self._peak)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
