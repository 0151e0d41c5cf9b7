"""Reading log lines back: logfmt as ``KvFormatter`` writes it, and JSON."""

from __future__ import annotations

import json
import re

_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """``k=v k="quoted \\"v\\""`` → dict; raises ValueError on anything else (so a test sees a bad line)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        if m is None:
            raise ValueError(f"not logfmt at {pos}: {line[pos:pos + 40]!r}")
        key, raw = m.groups()
        if key in out:
            raise ValueError(f"key {key!r} twice in {line!r}")
        out[key] = json.loads(raw) if raw.startswith('"') else raw
        pos = m.end()
    return out


def parse_lines(text: str, fmt: str) -> list[dict[str, object]]:
    if fmt == "json":
        return [json.loads(line) for line in text.splitlines()]
    return [dict(parse_logfmt(line)) for line in text.splitlines()]
