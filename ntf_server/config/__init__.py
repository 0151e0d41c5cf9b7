"""Configuration: ``<config dir>/ntf-server.toml`` loaded into one immutable tree of frozen dataclasses.

Theory of operation: the dataclasses below *are* the schema. Each field carries its default, a one-line
doc and optional bounds; :func:`parse_config` walks the fields, type-checks every TOML value, resolves
relative paths against the config directory and rejects any key it does not know, naming it with its
section path (``unknown key 'server.prot'``). :func:`render_default_config` walks the same fields to
write the commented file ``ntf-server init`` creates, so the template cannot drift from the defaults.
To extend: add a field (with ``setting(...)``) to a section, or a new section dataclass to ``Config``.

Conventions: units in names (``idle_timeout_s``); an empty string means "unset" (TOML has no null);
secrets are never inline: a ``*_file`` path or a ``*_env`` environment variable name (see Secret); when
both are set the variable wins, so a deployment can override a default file without editing the config.

The package: ``values.py`` (``setting``, enumerations, secrets, URL helpers), ``base_sections.py`` and
``sections.py`` (the schema), ``loading.py``, ``template.py`` and ``reference.py`` (README's generated
reference). Import from ``ntf_server.config``: the names below are its interface.
"""

from __future__ import annotations

from ntf_server.config.base_sections import (
    RedisConfig as RedisConfig,
    RegistrationConfig as RegistrationConfig,
    ServerConfig as ServerConfig,
    StoreConfig as StoreConfig,
    TlsConfig as TlsConfig,
)
from ntf_server.config.loading import (
    check_secrets as check_secrets,
    load_config as load_config,
    parse_config as parse_config,
)
from ntf_server.config.sections import (
    AdminConfig as AdminConfig,
    ApnsConfig as ApnsConfig,
    ApnsEnvConfig as ApnsEnvConfig,
    Config as Config,
    LogConfig as LogConfig,
    PushConfig as PushConfig,
    SubscriberConfig as SubscriberConfig,
)
from ntf_server.config.template import (
    render_default_config as render_default_config,
)
from ntf_server.config.values import (
    CONFIG_FILE as CONFIG_FILE,
    MAX_WORKERS as MAX_WORKERS,
    STORE_KEY_BYTES as STORE_KEY_BYTES,
    ConfigError as ConfigError,
    LogFormat as LogFormat,
    LogLevel as LogLevel,
    Overflow as Overflow,
    Secret as Secret,
    SocksMode as SocksMode,
    parse_host_port as parse_host_port,
    redact_url as redact_url,
    setting as setting,
)
