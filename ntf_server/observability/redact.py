"""Defence in depth for logs: scrub secret-shaped text from formatted lines, cap chatty third-party loggers.

The guarantee that no log line carries a device token, key, id or JWT comes from never handing one to a
log call (records and messages hide them, STYLE 12). This module is the second line, for what a future
change or a library might still print:

* ``cap_third_party_loggers`` raises the level of loggers that print protocol frames or headers at DEBUG
  (hpack prints every header it encodes or decodes, including APNs' ``authorization: bearer <JWT>`` and
  ``:path /3/device/<device token>``; redis-py and HTTP clients can print commands and URLs) so that a
  server run at ``log.level = "debug"`` never even creates those records; ``ThirdPartyCap`` drops them at
  the handler too, in case something (a ``dictConfig``, a library) lowers a capped logger's level again;
* ``redact`` replaces secret-shaped runs in a formatted line: JWTs, ``bearer`` values, PEM blocks, long
  hex runs (device tokens, ids), bytes reprs, and long random-looking base64/base64url runs. The base64
  rule asks for mixed case, a digit or sign, and as many distinct characters as random text has, so that
  file paths and identifiers in tracebacks stay readable; it misses ~0.7% of random 24-character runs
  (18 bytes) and ~0.01% of 43-character ones (32 bytes): a net, not the guarantee.
"""

from __future__ import annotations

import logging
import re
from typing import Final

# Loggers that print frames, headers, commands or URLs at DEBUG/INFO, and the lowest level they may log at.
THIRD_PARTY_CAPS: Final[dict[str, int]] = {
    "hpack": logging.WARNING,  # every header, JWT and device-token path included
    "h2": logging.WARNING,  # frame events (when a logger is configured)
    "hyperframe": logging.WARNING,
    "httpx": logging.WARNING,  # request URLs
    "httpcore": logging.WARNING,  # request headers at DEBUG
    "redis": logging.WARNING,  # commands and key names (key names carry token ids in hex)
    "asyncio": logging.INFO,  # debug mode prints handle reprs
}

_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_BEARER: Final = re.compile(r"(?i)(bearer\s+)\S+")
_PEM: Final = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.DOTALL)
_HEX: Final = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{24,}(?![0-9A-Za-z])")
_BYTES_REPR: Final = re.compile(r"""b(['"])(?:\\.|(?!\1).){12,}?\1""")
_B64: Final = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_B64_SIGNS: Final = frozenset("0123456789+/_-")
# A random base64 run of n characters has about 64 * (1 - (63/64)^n) distinct characters; paths and
# identifiers repeat far more (a 74-character pytest path: 0.59 of that, random runs: >= 0.7 in 99.98%).
MIN_DISTINCT_RATIO: Final = 0.7


def _looks_random(run: str) -> bool:
    core = run.rstrip("=")
    expected = 64 * (1 - (63 / 64) ** len(core))
    return (
        any(c.isupper() for c in core)
        and any(c.islower() for c in core)
        and any(c in _B64_SIGNS for c in core)  # CamelCase words (APNs reasons, class names) have none
        and len(set(core)) >= MIN_DISTINCT_RATIO * expected
    )


def _b64(m: re.Match[str]) -> str:
    return f"<redacted {len(m.group())} chars>" if _looks_random(m.group()) else m.group()


def redact(text: str) -> str:
    """``text`` with secret-shaped runs replaced by ``<redacted …>`` markers."""
    text = _PEM.sub("<redacted PEM>", text)
    text = _JWT.sub("<redacted JWT>", text)
    text = _BEARER.sub(r"\1<redacted>", text)
    text = _BYTES_REPR.sub("b'<redacted>'", text)
    text = _HEX.sub(lambda m: f"<redacted {len(m.group())} hex>", text)
    return _B64.sub(_b64, text)


def cap_third_party_loggers() -> None:
    """Idempotent; called by ``setup_logging`` and by the server on start (in-process servers too)."""
    for name, level in THIRD_PARTY_CAPS.items():
        logger = logging.getLogger(name)
        if logger.level < level:  # NOTSET (0) or lower than the cap; a stricter level set by an operator stays
            logger.setLevel(level)


class ThirdPartyCap(logging.Filter):
    """Handler filter: drops records of capped loggers below their cap, whatever their logger's level."""

    def filter(self, record: logging.LogRecord) -> bool:
        root = record.name.split(".", 1)[0]
        cap = THIRD_PARTY_CAPS.get(root)
        return cap is None or record.levelno >= cap
