"""Structured logging for the server process: logfmt (``key=value``) lines or JSON, one event per line.

Every line has the same leading keys: ``ts``, ``level``, ``event`` (a name from observability/logcatalog.py, or
``message`` for a plain log call), then the event's own keys, then ``worker`` (only in a worker process of
``[server] workers``), ``logger``, ``msg`` (for humans) and, after an exception, ``exc``. Values that name a
token, an id or a key are keyed-hash tags by type (observability/sensitive.py, observability/logevents.py). As
defence in depth (ntf_server/observability/redact.py), loggers of libraries that print headers or commands are capped,
whatever ``log.level`` says, and every rendered string value (message, fields and traceback) goes through
``redact``, which replaces JWT-, PEM-, hex- and base64-shaped secrets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Final, TextIO

from ntf_server.config import LogConfig, LogFormat
from ntf_server.observability.logcatalog import EVENTS
from ntf_server.observability.logevents import Scalar, event_of
from ntf_server.observability.redact import ThirdPartyCap, cap_third_party_loggers, redact

_BARE: Final = re.compile(r"[^\s=\"\\\x00-\x1f\x7f]+")  # a logfmt value that needs no quotes


def record_items(record: logging.LogRecord, exc_text: str | None) -> list[tuple[str, Scalar]]:
    """The line's keys in their stable order, string values scrubbed."""
    name, fields = event_of(record)
    spec = EVENTS.get(name)
    public = spec.public if spec else ()
    items: list[tuple[str, Scalar]] = [
        ("ts", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"),
        ("level", record.levelname.lower()),
        ("event", name),
    ]
    items += [(k, redact(v) if isinstance(v, str) and k not in public else v) for k, v in fields.items()]
    worker = getattr(record, "ntf_worker", None)  # set by WorkerTag in a worker process ([server] workers)
    if worker is not None:
        items.append(("worker", worker))
    items += [("logger", record.name), ("msg", redact(record.getMessage()))]
    if exc_text:
        items.append(("exc", redact(exc_text)))
    return items


def logfmt_value(value: Scalar) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


class KvFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in record_items(record, exc))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return json.dumps(dict(record_items(record, exc)), ensure_ascii=False)


class WorkerTag(logging.Filter):
    """Every line of a worker process says which worker wrote it (``worker=<n>``, before ``logger``)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.ntf_worker = self.worker
        return True


def setup_logging(cfg: LogConfig, stream: TextIO | None = None, *, worker: int | None = None) -> None:
    """One handler on the root logger (stderr unless ``stream``), third-party loggers capped; ``worker``: the
    worker number every line of this process carries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.format is LogFormat.JSON else KvFormatter())
    handler.addFilter(ThirdPartyCap())
    if worker is not None:
        handler.addFilter(WorkerTag(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level.value.upper())
    cap_third_party_loggers()


@contextlib.contextmanager
def scoped_logging(cfg: LogConfig, stream: TextIO | None = None) -> Iterator[None]:
    """``setup_logging`` for one command run in-process (``import-simplex``), then the old root back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(cfg, stream)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
