"""The commented ``ntf-server.toml`` that ``ntf-server init`` writes: every setting at its default, walked
from the same fields as the loader, so the template cannot drift from the defaults."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, Final

from ntf_server.config.loading import fields_of
from ntf_server.config.sections import Config

_HEADER: Final = """\
# ntf-server configuration. Every setting is shown with its default value.
# Relative paths are relative to this file's directory. An empty string means "unset".
# Secrets are never written here: use a *_file path or a *_env environment variable name.
"""


def render_default_config(
    *, host: str | None = None, port: int | None = None, state_dir: Path | None = None, redis_url: str | None = None,
    admin_bind: str | None = None,
) -> str:
    """The commented ``ntf-server.toml`` written by ``init``: every setting at its default, except the keys
    given (``init`` options, so a container or package sets them without editing the file). Loading it
    yields exactly those values."""
    config = Config(config_dir=Path())
    server = config.server
    if host is not None:
        server = dataclasses.replace(server, host=host)
    if port is not None:
        server = dataclasses.replace(server, port=port)
    if state_dir is not None:
        server = dataclasses.replace(server, state_dir=state_dir)
    redis = config.redis if redis_url is None else dataclasses.replace(config.redis, url=redis_url)
    admin = config.admin if admin_bind is None else dataclasses.replace(config.admin, bind=admin_bind)
    config = dataclasses.replace(config, server=server, redis=redis, admin=admin)
    lines = [_HEADER.rstrip("\n")]
    _render(config, "", lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def _render(section: object, prefix: str, lines: list[str]) -> None:
    nested = []
    for f in fields_of(type(section)):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f, value))
            continue
        lines.append(f"# {f.metadata['doc']}")
        lines.append(f"{f.name} = {_toml(value)}")
    for f, value in nested:
        lines.append("")
        lines.append(f"# {f.metadata['doc']}")
        if any(not dataclasses.is_dataclass(getattr(value, g.name)) for g in fields_of(type(value))):
            lines.append(f"[{prefix}{f.name}]")
        _render(value, f"{prefix}{f.name}.", lines)


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(str(v)) for v in value) + "]"
    return json.dumps(str(value.value if isinstance(value, enum.Enum) else value))
