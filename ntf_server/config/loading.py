"""Loading ``ntf-server.toml``: every TOML value type-checked against its field, relative paths resolved
against the config directory, unknown keys refused with their section path (the package docstring)."""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ntf_server.config.sections import Config
from ntf_server.config.values import CONFIG_FILE, ConfigError, T


def load_config(path: Path | str, *, secrets: bool = True) -> Config:
    """Load ``ntf-server.toml`` (``path`` is the file or its directory). ``secrets=True`` also reads every
    secret the enabled features need, so a missing key file or variable fails here, not at first use."""
    file = Path(path)
    if file.is_dir():
        file = file / CONFIG_FILE
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{file} not found (create it with `ntf-server init`)") from e
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from e
    config = parse_config(data, file.parent.resolve())
    if secrets:
        check_secrets(config)
    return config


def check_secrets(config: Config) -> None:
    for secret in config.secrets():
        secret.read()


def parse_config(data: Mapping[str, Any], config_dir: Path) -> Config:
    """Validate parsed TOML into a :class:`Config`; relative paths are resolved against ``config_dir``."""
    return _parse(Config, data, "", Config(config_dir=config_dir), config_dir)


def fields_of(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name != "config_dir"]


def _parse(cls: type[T], table: Mapping[str, Any], prefix: str, base: T, config_dir: Path) -> T:
    known = {f.name for f in fields_of(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields_of(cls):
        key = prefix + f.name
        default = getattr(base, f.name)
        if dataclasses.is_dataclass(default):
            sub = table.get(f.name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{key}: expected a [{key}] table")
            values[f.name] = _parse(type(default), sub, key + ".", default, config_dir)
        elif f.name in table:
            values[f.name] = _value(hints[f.name], table[f.name], key, f.metadata, config_dir)
        else:
            values[f.name] = _resolve(default, config_dir)
    if cls is Config:
        values["config_dir"] = config_dir
    result = cls(**values)
    validate = getattr(result, "validate", None)
    if validate is not None:
        validate(prefix.rstrip("."))
    return result


def _resolve(value: Any, config_dir: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else config_dir / value
    return value


def _value(hint: Any, raw: Any, key: str, meta: Mapping[str, Any], config_dir: Path) -> Any:
    if typing.get_origin(hint) is tuple:
        items = _typed(raw, list, key, "a list of strings")
        return tuple(_typed(item, str, f"{key}[{i}]", "a string") for i, item in enumerate(items))
    optional = isinstance(hint, types.UnionType)
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if kind is bool:
        return _typed(raw, bool, key, "true or false")
    if kind is int or kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float) if kind is float else int):
            raise ConfigError(f"{key}: expected {'a number' if kind is float else 'an integer'}, got {raw!r}")
        return _bounded(kind(raw), key, meta)
    if meta.get("ints") and isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    text = _typed(raw, str, key, "a string")
    if kind is Path:
        if optional and not text:
            return None
        if not text:
            raise ConfigError(f"{key}: expected a path, got an empty string")
        return _resolve(Path(text).expanduser(), config_dir)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        choices = [m.value for m in kind]
        if text not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {text!r}")
        return kind(text)
    return text


def _typed(raw: Any, kind: type[T], key: str, what: str) -> T:
    if not isinstance(raw, kind):
        raise ConfigError(f"{key}: expected {what}, got {type(raw).__name__} {raw!r}")
    return raw


def _bounded(value: float, key: str, meta: Mapping[str, Any]) -> float:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: must be <= {high}, got {value}")
    return value
