"""Give memory back to the system after a connection flood ends (issue 8.3).

Thousands of connections leave the C heap (OpenSSL state, socket objects) full of free chunks that glibc
keeps: ``free()`` only returns memory at the top of the heap, so RSS stays at the flood's peak. When the
number of connections has fallen by ``TRIM_MIN_DROP`` since the last trim, ``MemoryReturner`` runs
``malloc_trim(0)`` (which also releases free pages inside the heap) ``TRIM_DELAY_S`` after the last
close, so a flood that is still ending is trimmed once. It is a no-op where glibc is not the allocator.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

TRIM_MIN_DROP: Final = 64  # connections closed since the last trim before another is worth it
TRIM_DELAY_S: Final = 5.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None  # not glibc (musl, macOS): nothing to do
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Return free heap pages to the system; False if the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class MemoryReturner:
    __slots__ = ("_peak", "_timer")

    def __init__(self) -> None:
        self._peak = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_started(self, open_now: int) -> None:
        self._peak = max(self._peak, open_now)

    def connection_ended(self, open_now: int) -> None:
        if self._peak - open_now < TRIM_MIN_DROP:
            return
        if self._timer is not None:
            self._timer.cancel()  # still ending: wait for the last close
        self._timer = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._trim, open_now)

    def _trim(self, open_now: int) -> None:
        self._timer = None
        self._peak = open_now
        gc.collect()  # objects in reference cycles (exceptions and their frames) hold memory until then
        if release_memory():
            log.debug("returned free heap memory to the system (%d connections open)", open_now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
