"""Repeated events logged as counted summaries, not one line each.

Theory of operation: a ``CountedLog`` has windows of ``window_s``. The first event of a window is logged
at once (so an operator sees a new problem immediately, with its reason); the rest of the window only
counts, by reason; the first event after the window ended (or ``flush``, called periodically) logs one
line for what was counted: ``verification push failed 41 more times in the last 60 s (BadDeviceToken=40,
Unregistered=1)``. Reasons must never carry a secret (they are APNs reason strings, limiter names…);
per-token detail belongs at debug level in the caller. The clock is injected.

Both lines are log events (ntf_server/observability/logevents.py): ``event`` (default ``counted``, with a ``what`` key)
with ``reason`` and ``window_s``, then ``<event>.repeated`` with ``count``, ``window_s`` and ``reasons``
(``Reason=n,…``); ``fields`` (e.g. ``kind``) are added to both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from ntf_server.observability.logevents import FieldValue, emit

MAX_REASONS_SHOWN: Final = 8  # a summary line stays short whatever an upstream invents


class CountedLog:
    def __init__(self, logger: logging.Logger, what: str, *, event: str, level: int = logging.INFO,
                 window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 fields: Mapping[str, FieldValue] | None = None) -> None:
        """``event``: its catalogued name (logcatalog.py, ``_counted``): every repeated condition has its own."""
        self._log = logger
        self._what = what
        self._event = event
        self._fields: dict[str, FieldValue] = dict(fields or {})
        self._level = level
        self._window = window_s
        self._clock = clock
        self._start: float | None = None
        self._counted: Counter[str] = Counter()
        self.total = 0

    def __repr__(self) -> str:
        return f"<CountedLog {self._what!r} total={self.total} pending={sum(self._counted.values())}>"

    def event(self, reason: str) -> None:
        now = self._clock()
        self.total += 1
        if self._start is not None and now - self._start < self._window:
            self._counted[reason] += 1
            return
        self._emit(now)
        self._start = now
        text = f"{self._what}: {reason} (repeats in the next {self._window:.0f} s are summarised)"
        emit(self._log, self._event, {**self._fields, "reason": reason, "window_s": self._window}, text=text,
             level=self._level)

    def flush(self) -> None:
        """Log the pending summary if its window has ended (call periodically so quiet periods end it)."""
        now = self._clock()
        if self._start is not None and now - self._start >= self._window:
            self._emit(now)
            self._start = None

    def _emit(self, now: float) -> None:
        if not self._counted or self._start is None:
            return
        n = sum(self._counted.values())
        shown = ", ".join(f"{r}={c}" for r, c in self._counted.most_common(MAX_REASONS_SHOWN))
        more = len(self._counted) - MAX_REASONS_SHOWN
        if more > 0:
            shown += f", {more} other reasons"
        window = round(now - self._start)
        emit(self._log, f"{self._event}.repeated",
             {**self._fields, "count": n, "window_s": window, "reasons": shown.replace(", ", ",")},
             text=f"{self._what} {n} more times in the last {window} s ({shown})", level=self._level)
        self._counted.clear()


async def flush_every(logs: Sequence[CountedLog], interval_s: float) -> None:
    """End the summaries' windows during quiet periods, so a summary is never held back indefinitely."""
    while True:
        await asyncio.sleep(interval_s)
        for counted in logs:
            counted.flush()
