"""Error records and tracebacks, from any logger and any thread: the reliability suite's "no traceback in
the logs" property. Rejections of bad input are logged at warning level or below, without a traceback; an
ERROR record or any record carrying exception info means something was not handled."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class LogWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []  # errors and tracebacks
        self.tracebacks: list[str] = []
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        line = f"{record.levelname} {record.name}: {record.getMessage()[:300]}"
        if record.exc_info or record.exc_text or record.stack_info:
            self.tracebacks.append(line)
            self.bad.append(line + " (with traceback)")
        elif record.levelno >= logging.ERROR:
            self.bad.append(line)

    def assert_clean(self) -> None:
        assert self.bad == [], "errors or tracebacks logged:\n" + "\n".join(self.bad[:20])

    def assert_no_traceback(self) -> None:
        """For faults an operator must hear about (Redis gone): error lines are right, tracebacks are not."""
        assert self.tracebacks == [], "tracebacks logged:\n" + "\n".join(self.tracebacks[:20])

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[LogWatch]:
        watch = cls()
        root = logging.getLogger()
        root.addHandler(watch)
        old = root.level
        root.setLevel(min(old, logging.INFO) if old else logging.INFO)
        try:
            yield watch
        finally:
            root.removeHandler(watch)
            root.setLevel(old)
