"""The building blocks of the configuration: ``setting`` (a field with its default, doc and bounds), the
enumerated values, secrets (``Secret``: a ``*_file`` path or a ``*_env`` variable) and the URL and
host:port helpers the sections validate with."""



from __future__ import annotations

import dataclasses
import enum
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from ntf_server.protocol.encoding import CodecError, check_host

CONFIG_FILE: Final = "ntf-server.toml"
STORE_KEY_BYTES: Final = 32
MAX_WORKERS: Final = 256  # [server] workers: more is a typo, not a machine

T = TypeVar("T")


class ConfigError(Exception):
    """Invalid configuration; the message names the offending key as ``section.key``."""


def setting(default: Any, doc: str, *, min: float | None = None, max: float | None = None, ints: bool = False) -> Any:
    """A config field: default, one-line doc (becomes the template comment), numeric bounds; ``ints``: a
    string setting that also takes a TOML integer (``workers = 4`` as well as ``workers = "auto"``)."""
    meta = {"doc": doc, "min": min, "max": max, "ints": ints}
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    KV = "kv"
    JSON = "json"


class SocksMode(enum.StrEnum):
    """Which SMP connections go through ``subscriber.socks_proxy`` (SimpleX's ``socks_mode``)."""

    ONION = "onion"  # only .onion hosts; every other host is connected directly
    ALWAYS = "always"  # every SMP connection


class Overflow(enum.StrEnum):
    """What happens to a message notification over the hidden-push budget (README "Push policy")."""

    ALERT = "alert"
    DEFER = "defer"
    DROP = "drop"


@dataclass(frozen=True)
class Secret:
    """Where a secret comes from: a file (path) or an environment variable (name). Never its value, so
    configs can be printed and logged. ``read()`` fetches the bytes when needed."""

    key: str  # dotted config key, for error messages
    file: Path | None
    env: str

    @property
    def configured(self) -> bool:
        return self.file is not None or bool(self.env)

    def describe(self) -> str:
        if self.env:
            return f"env ${self.env}"
        return f"file {self.file}" if self.file else "unset"

    def read(self) -> bytes:
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"{self.key}_env: environment variable {self.env} is not set or empty")
            return value.encode()
        if self.file is None:
            raise ConfigError(f"{self.key}_file or {self.key}_env: not configured")
        try:
            return self.file.read_bytes()
        except OSError as e:
            raise ConfigError(f"{self.key}_file: cannot read {self.file}: {e.strerror}") from e


def redact_url(url: str) -> str:
    """A URL for messages, built from its scheme, host, port and path only: user, password, query
    (``?password=``) and fragment are left out, whatever they hold. ``***@`` marks a URL that
    had credentials; one that cannot be parsed shows only its scheme."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return f"{url.partition(':')[0][:16]}://<unparseable>"
    if ":" in host:
        host = f"[{host}]"
    creds = "***@" if parts.username is not None or parts.password is not None else ""
    return f"{parts.scheme}://{creds}{host}{f':{port}' if port is not None else ''}{parts.path}"


def secret_at(section: object, path: str, name: str) -> Secret:
    file = getattr(section, f"{name}_file")
    env = getattr(section, f"{name}_env")
    return Secret(f"{path}.{name}", None if env else file, env)


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` -> (host, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected host:port with a port 1-65535, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9050, got {text!r}")
    try:
        check_host(host)
    except CodecError as e:
        raise ValueError(str(e)) from e
    return host, int(port)
