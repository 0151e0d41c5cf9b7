"""Import progress: a bar redrawn in place on a terminal, otherwise an ``import.progress`` log event every
few seconds (logs, systemd, CI: parsable keys, ntf_server/observability/logcatalog.py). `now` is injected, so the rate
and the pacing are tested without sleeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, TextIO

from ntf_server.observability.logevents import emit

log = logging.getLogger(__name__)

BAR_WIDTH: Final = 30
LINE_EVERY_S: Final = 5.0  # plain output: one line at most this often
REDRAW_EVERY_S: Final = 0.1


class Progress:
    def __init__(self, total: int, out: TextIO, *, tty: bool | None = None,
                 now: Callable[[], float] = time.monotonic, what: str = "tokens") -> None:
        self.total = total
        self.done = 0
        self._out = out
        self._tty = out.isatty() if tty is None else tty
        self._now = now
        self._what = what
        self._start = now()
        self._shown = -1e9

    def __repr__(self) -> str:
        return f"<Progress {self.done}/{self.total} {self._what}>"

    def advance(self, n: int) -> None:
        self.done += n
        t = self._now()
        if t - self._shown >= (REDRAW_EVERY_S if self._tty else LINE_EVERY_S):
            self._shown = t
            self._show(t)

    def finish(self) -> None:
        self._show(self._now())
        if self._tty:
            self._out.write("\n")
        self._out.flush()

    def line(self, t: float) -> str:
        elapsed = t - self._start
        rate = f"{self.done / elapsed:.0f}/s" if elapsed >= 1 else "-/s"  # no rate from a too short time
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.done}/{self.total} {self._what} ({pct:.0f}%), {rate}, {elapsed:.0f} s"
        if not self._tty:
            return text
        filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        return f"[{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {text}"

    def _show(self, t: float) -> None:
        if self._tty:
            self._out.write("\r" + self.line(t))
            self._out.flush()
        else:
            elapsed = t - self._start
            fields = {"done": self.done, "total": self.total, "unit": self._what,
                      "percent": round(100.0 * self.done / self.total) if self.total else 100,
                      "rate_per_s": round(self.done / elapsed) if elapsed >= 1 else None, "elapsed_s": round(elapsed)}
            emit(log, "import.progress", fields, text=self.line(t))
