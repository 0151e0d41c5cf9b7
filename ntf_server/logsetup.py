"""Structured logging for the server process: ``key=value`` lines or JSON, one record per line.

Nothing sensitive is ever passed to a log call (STYLE 12: records and messages hide tokens, keys and ids).
As defence in depth (ntf_server/redact.py), loggers of libraries that print headers or commands are
capped, whatever ``log.level`` says, and every formatted line (message and traceback) goes through
``redact``, which replaces JWT-, PEM-, hex- and base64-shaped secrets.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from ntf_server.config import LogConfig, LogFormat
from ntf_server.redact import ThirdPartyCap, cap_third_party_loggers, redact


class KvFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = redact(record.getMessage()).replace('"', "'")
        line = f'ts={ts}Z level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            line += " exc=" + json.dumps(redact(self.formatException(record.exc_info)))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


def setup_logging(cfg: LogConfig, stream: TextIO | None = None) -> None:
    """One handler on the root logger (stderr unless ``stream``), third-party loggers capped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.format is LogFormat.JSON else KvFormatter())
    handler.addFilter(ThirdPartyCap())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level.value.upper())
    cap_third_party_loggers()
