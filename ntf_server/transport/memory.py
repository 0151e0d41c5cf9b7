"""Give memory back to the system after a connection flood ends.

Thousands of connections leave the heap full of free memory that the process keeps: glibc's ``free()``
only returns memory at the top of its heap, and CPython's own object allocator (pymalloc) returns a
1 MiB arena only when every object in it is gone, so a few survivors keep most arenas of a flood. Two
measures, both measured by ``tests/bench/conn_memory.py``:

* ``ntf-server start`` runs the server with ``PYTHONMALLOC=malloc`` (supervisor/processes.py
  ``use_system_malloc``): Python objects then live in glibc's heap, whose free pages ``malloc_trim`` can
  return one by one;
* ``MemoryReturner`` runs ``gc.collect()`` (objects in reference cycles hold memory until collected) and
  ``malloc_trim(0)`` when the number of open connections has fallen to ``1 - TRIM_FALL`` of its peak
  (and by at least ``TRIM_MIN_DROP``: a flood ended, not ordinary churn) and then stopped falling.

Both are no-ops where glibc is not the C library (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import platform
import sys
from collections.abc import Callable
from typing import Final, Protocol

log = logging.getLogger(__name__)

TRIM_MIN_DROP: Final = 64  # connections closed since the peak before a trim is worth it
TRIM_FALL: Final = 0.25  # ... and at least this fraction of the peak (steady churn never trims)
TRIM_DELAY_S: Final = 5.0  # trim once connections have stopped falling for this long ...
TRIM_MAX_WAIT_S: Final = 60.0  # ... or this long after the fall began, whichever comes first


class Cancellable(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Cancellable]  # loop.call_later; tests inject a clock


def glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not glibc():
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
    """Decides when a fall in open connections is worth a trim; ``count`` gives the open connections.

    The trim waits until connections stop falling for ``TRIM_DELAY_S`` (at most ``TRIM_MAX_WAIT_S``), so a
    flood that takes a while to end is trimmed once, after its last socket, not half-way."""

    __slots__ = ("_call_later", "_count", "_delay", "_falling_to", "_max_wait", "_peak", "_timer", "_waited")

    def __init__(self, count: Callable[[], int], *, call_later: CallLater | None = None,
                 delay_s: float = TRIM_DELAY_S, max_wait_s: float = TRIM_MAX_WAIT_S) -> None:
        self._count = count
        self._call_later = call_later or (lambda delay, fn: asyncio.get_running_loop().call_later(delay, fn))
        self._delay = delay_s
        self._max_wait = max_wait_s
        self._peak = 0
        self._falling_to = 0
        self._waited = 0.0
        self._timer: Cancellable | None = None

    def __repr__(self) -> str:
        return f"<MemoryReturner peak={self._peak} now={self._count()} trim={'pending' if self._timer else 'idle'}>"

    @property
    def peak(self) -> int:
        """Most connections open since the last trim."""
        return self._peak

    @property
    def trim_pending(self) -> bool:
        return self._timer is not None

    def connection_started(self) -> None:
        self._peak = max(self._peak, self._count())

    def connection_ended(self) -> None:
        drop = self._peak - self._count()
        if self._timer is None and drop >= TRIM_MIN_DROP and drop >= TRIM_FALL * self._peak:
            self._falling_to, self._waited = self._count(), 0.0
            self._timer = self._call_later(self._delay, self._due)

    def _due(self) -> None:
        now = self._count()
        self._waited += self._delay
        if now < self._falling_to and self._waited < self._max_wait:  # still ending: wait for the rest
            self._falling_to = now
            self._timer = self._call_later(self._delay, self._due)
            return
        self._timer = None
        self._peak = now
        if release_memory():
            log.debug("returned free heap memory to the system (%d connections open)", now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
