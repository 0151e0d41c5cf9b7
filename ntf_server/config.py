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
"""

# ruff: noqa: RUF009  -- `setting()` returns `dataclasses.field(...)`, which ruff cannot see through.

from __future__ import annotations

import dataclasses
import enum
import json
import os
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
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


def _secret(section: object, path: str, name: str) -> Secret:
    file = getattr(section, f"{name}_file")
    env = getattr(section, f"{name}_env")
    return Secret(f"{path}.{name}", None if env else file, env)


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", "host name or IP clients use; printed in the server address")
    port: int = setting(443, "TCP port to listen on (443 needs root or CAP_NET_BIND_SERVICE)", min=0, max=65535)
    bind: str = setting("", "address to bind; empty = all interfaces (IPv4 and IPv6)")
    state_dir: Path = setting(Path("state"), "data directory (embedded Redis files); relative = config dir")
    max_connections: int = setting(
        10000, "concurrent NTF client sockets, counted from accept (in handshake or not); more are refused", min=1)
    tls_timeout_s: float = setting(60.0, "TLS handshake deadline (Haskell tlsSetupTimeout)", min=0.1)
    handshake_timeout_s: float = setting(30.0, "deadline for the two NTF handshake blocks", min=0.1)
    block_read_timeout_s: float = setting(30.0, "deadline to finish reading a started block", min=0.1)
    block_write_timeout_s: float = setting(30.0, "deadline to write one block to a client", min=0.1)
    idle_timeout_s: float = setting(
        600.0, "close client connections silent this long (the app reconnects on its next command); 0 = never",
        min=0)
    shutdown_timeout_s: float = setting(10.0, "grace period for connections on SIGTERM", min=0)
    max_handshakes: int = setting(
        1000, "sockets at once still in the TLS or NTF handshake (they count toward max_connections too)", min=1)
    max_connections_per_ip: int = setting(
        500, "sockets at once from one IPv4 address or IPv6 /56 (NAT: many phones share one address)", min=1)
    max_handshakes_per_ip: int = setting(
        100, "sockets at once from one address still in the TLS or NTF handshake (so a few addresses cannot "
        "hold every max_handshakes slot)", min=1)
    commands_per_connection_per_min: float = setting(
        3000.0, "commands of any kind per connection per minute, sustained (ERR QUOTA beyond); 0 = no limit", min=0)
    commands_per_connection_burst: int = setting(
        10000, "commands a connection may send back to back (at least registration.snew_per_connection_burst)",
        min=1)
    commands_per_ip_per_min: float = setting(
        12000.0, "commands of any kind per client address per minute, sustained; 0 = no limit", min=0)
    commands_per_ip_burst: int = setting(40000, "commands an address may send back to back", min=1)
    max_auth_failures: int = setting(
        200, "close a connection after this many ERR AUTH answers (each costs a signature check); 0 = never",
        min=0)
    first_byte_timeout_s: float = setting(
        10.0, "drop a socket that sends nothing this long after accept (a silent socket holds a handshake slot; "
        "capped at tls_timeout_s)", min=0.1)
    workers: str = setting(
        "auto", "worker processes sharing the port and the store, under one supervisor: a number, or auto = one "
        "per CPU core it may run on; 1 = one process, no supervisor", ints=True)

    def validate(self, path: str) -> None:
        try:
            check_host(self.host)
        except CodecError as e:
            raise ConfigError(f"{path}.host: {e}") from e
        self.worker_count()

    def worker_count(self) -> int:
        """``workers`` as a number: ``auto`` is the machine's CPU cores (at least 1)."""
        if self.workers == "auto":  # the cores this process may run on (a cpuset), not a CPU quota
            return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 1)
        if not self.workers.isdecimal() or not 1 <= int(self.workers) <= MAX_WORKERS:
            raise ConfigError(f"server.workers: expected auto or 1..{MAX_WORKERS}, got {self.workers!r}")
        return int(self.workers)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path = setting(Path("server.crt"), "online certificate (TLS leaf); relative = config dir")
    key_file: Path = setting(Path("server.key"), "online private key")
    ca_cert_file: Path = setting(Path("ca.crt"), "identity CA certificate; its SHA-256 is the fingerprint")
    fingerprint_file: Path = setting(Path("fingerprint"), "fingerprint written by init, checked on start")


@dataclass(frozen=True, repr=False)
class RedisConfig:
    url: str = setting("", "redis://, rediss:// or unix:// URL; empty = embedded redis-server child")
    url_env: str = setting("", "environment variable holding the URL instead (when it has a password)")
    key_prefix: str = setting("ntf:", "prefix of every key this server writes")
    cluster: bool = setting(False, "url names a node of a Redis/Valkey Cluster (README \"Cluster mode\")")

    def secret(self) -> Secret:
        return Secret("redis.url", None, self.url_env)

    def __repr__(self) -> str:  # a URL may carry a password: never show it
        return (f"RedisConfig(url={redact_url(self.url)!r}, url_env={self.url_env!r}, key_prefix={self.key_prefix!r}, "
                f"cluster={self.cluster!r})")

    def validate(self, path: str) -> None:
        if self.url and self.url_env:
            raise ConfigError(f"{path}.url and {path}.url_env: set only one")
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{path}.url: must start with redis://, rediss:// or unix://")
        if not self.key_prefix:
            raise ConfigError(f"{path}.key_prefix: must not be empty")
        if self.cluster:
            if not (self.url or self.url_env):
                raise ConfigError(f"{path}.cluster: needs url (or url_env) naming a node of the cluster")
            if self.url.startswith("unix://"):
                raise ConfigError(f"{path}.cluster: the url must be redis:// or rediss:// (a cluster node)")
            if "{" in self.key_prefix or "}" in self.key_prefix:
                raise ConfigError(f"{path}.key_prefix: no braces in cluster mode (the store makes it a hash tag)")


@dataclass(frozen=True)
class StoreConfig:
    key_file: Path = setting(Path("store.key"), "32-byte key encrypting secrets at rest in Redis")
    expire_tokens_after_days: int = setting(
        0, "delete tokens unused for this many days; 0 = never (Haskell never expires)", min=0
    )
    expire_unverified_after_h: float = setting(
        6.0, "delete tokens never verified (TVFY) this many hours after TNEW; 0 = never", min=0
    )


@dataclass(frozen=True)
class RegistrationConfig:
    per_connection_per_min: float = setting(10.0, "TNEW/TRPL per connection per minute, sustained; 0 = no limit",
                                            min=0)
    per_connection_burst: int = setting(20, "TNEW/TRPL a connection may send back to back", min=1)
    per_ip_per_min: float = setting(
        60.0, "TNEW/TRPL per client address (IPv6: per /56) per minute, sustained; 0 = no limit", min=0
    )
    per_ip_burst: int = setting(300, "TNEW/TRPL an address may send back to back (phones behind one NAT)", min=1)
    ip_table_size: int = setting(100000, "client addresses tracked at once (least recently seen forgotten)",
                                 min=1)
    max_tokens_per_device: int = setting(
        50, "registrations one device token may have (each TNEW with a new verify key is one; verifying one "
        "deletes the others; unverified ones expire); 0 = no cap", min=0)
    snew_per_connection_per_min: float = setting(
        1000.0, "SNEW per connection per minute, sustained; 0 = no limit", min=0)
    snew_per_connection_burst: int = setting(
        5000, "SNEW a connection may send back to back (an app subscribing all its queues at once)", min=1)
    snew_per_ip_per_min: float = setting(
        5000.0, "SNEW per client address (IPv6: per /56) per minute, sustained; 0 = no limit", min=0)
    snew_per_ip_burst: int = setting(20000, "SNEW an address may send back to back", min=1)
    max_subscriptions_per_token: int = setting(
        20000, "subscriptions one token may have (a queue each: contacts and group members); 0 = no cap", min=0)
    max_smp_servers_per_token: int = setting(
        100, "distinct SMP servers one token's subscriptions may name (one connection each); 0 = no cap", min=0)


@dataclass(frozen=True)
class ApnsEnvConfig:
    enabled: bool = setting(False, "deliver pushes for tokens registered with this APNs environment")
    host: str = setting("api.push.apple.com", "APNs host")
    port: int = setting(443, "APNs port", min=1, max=65535)
    ca_file: Path | None = setting(None, "CA bundle for the APNs host; empty = system trust store")
    key_file: Path | None = setting(None, "Apple .p8 token signing key (ES256); or key_env")
    key_env: str = setting("", "environment variable holding the .p8 PEM text instead of key_file")
    key_id: str = setting("", "APNs key ID (10 characters)")
    team_id: str = setting("5NN7GUYB6T", "Apple developer team ID (JWT issuer)")
    topic: str = setting("chat.simplex.app", "app bundle ID (apns-topic)")

    def key(self, path: str) -> Secret:
        return _secret(self, path, "key")

    def validate(self, path: str) -> None:
        if not self.enabled:
            return
        if not self.key(path).configured:
            raise ConfigError(f"{path}.key_file or {path}.key_env: required when {path}.enabled = true")
        for name in ("key_id", "team_id", "topic", "host"):
            if not getattr(self, name):
                raise ConfigError(f"{path}.{name}: required when {path}.enabled = true")


def _apns(**overrides: Any) -> ApnsEnvConfig:
    return dataclasses.replace(ApnsEnvConfig(), **overrides)


@dataclass(frozen=True)
class ApnsConfig:
    production: ApnsEnvConfig = setting(_apns(), "Apple production APNs (apns_prod)")
    development: ApnsEnvConfig = setting(_apns(host="api.sandbox.push.apple.com"), "Apple sandbox APNs (apns_dev)")
    test: ApnsEnvConfig = setting(
        _apns(host="localhost", port=6010), "local APNs stand-in (apns_test; SimpleX tests use port 6010)"
    )


@dataclass(frozen=True)
class PushConfig:
    hidden_per_hour: float = setting(
        3.0, "hidden (background) message pushes per device token per hour after the burst; 0 = SimpleX "
        "parity (every message notification an alert); a policy set live in Redis overrides [push]", min=0, max=3600,
    )
    burst: int = setting(3, "hidden pushes a device token may receive back to back", min=1, max=100)
    overflow: Overflow = setting(
        Overflow.ALERT, "over budget: alert (production alert) | defer (one hidden push when the budget returns, "
        "carrying the newest 6) | drop (counted)")
    defer_scan_s: float = setting(
        1.0, "the deferred-push scheduler looks for due pushes at least this often (seconds)", min=0.01, max=60)
    cron_scan_s: float = setting(
        60.0, "periodic (TCRN) pushes are looked for this often (seconds; the Haskell server: 300)", min=1,
        max=3600)
    retry_deadline_s: float = setting(
        600.0, "a push APNs answered 429/5xx/timeout is retried until this long after its first try, then "
        "counted failed", min=0, max=86400)
    retry_backoff_base_s: float = setting(
        1.0, "first retry delay; doubles each retry (jittered to half..full)", min=0, max=3600)
    retry_backoff_cap_s: float = setting(120.0, "longest delay between two retries", min=0, max=3600)
    claim_lease_s: float = setting(
        30.0, "a push being sent (a message push, a retry, a deferred or periodic push) is claimed in Redis for "
        "this long: if its sender dies (kill -9), another instance (or the next start) sends it after this; keep "
        "it well above APNs' answer time (10 s timeout), or a slow answer gets the push sent twice", min=1,
        max=600)
    verifications_per_hour: int = setting(
        10, "verification pushes per device token per hour (more are counted, not sent)", min=0, max=3600)
    shutdown_grace_s: float = setting(
        10.0, "on SIGTERM, after the SMP reads stop, queued pushes are sent for up to this long; what is left "
        "is kept in Redis and sent by the next start", min=0, max=600)


@dataclass(frozen=True)
class SubscriberConfig:
    socks_proxy: str = setting(
        "", "SOCKS5 proxy for SMP servers as host:port (Tor: 127.0.0.1:9050); empty = none (.onion hosts skipped)")
    socks_mode: SocksMode = setting(
        SocksMode.ONION, "onion: only .onion hosts via the proxy, public hosts direct and first | always: every "
        "host via the proxy, .onion first")
    connect_timeout_s: float = setting(45.0, "TCP + TLS + SMP handshake deadline per SMP host", min=1)
    response_timeout_s: float = setting(30.0, "an NSUB or PING unanswered this long has timed out", min=1)
    ping_idle_s: float = setting(60.0, "PING an SMP server after this long without traffic", min=1)
    drop_after_silence_s: float = setting(
        180.0, "drop and re-establish an SMP connection after 3 timeouts and this long without traffic", min=1)
    allow_private_hosts: bool = setting(
        False, "accept SMP servers on private, loopback and link-local addresses (IP literals refused at SNEW, "
        "names resolving there refused at connect); only for tests and closed networks")
    own_server_domains: tuple[str, ...] = setting(
        (), "domains of the SMP servers you run, e.g. [\"example.org\"]: per-server figures for these (and "
        "subdomains), all others together as \"other\"")
    use_service_credentials: bool = setting(
        False, "present a service certificate to SMP servers v16+ (one per server, made when first needed): "
        "after a reconnect one NSUBS resubscribes every queue tied to it instead of one NSUB per queue")
    lease_ttl_s: float = setting(
        15.0, "several instances on one Redis: an SMP server's lease (which instance subscribes it) expires this "
        "long after its holder last renewed it; after kill -9 others take its servers within this (+ one renewal)",
        min=1, max=300)
    lease_renew_s: float = setting(
        3.0, "how often an instance renews its leases and looks for free SMP servers; less than half "
        "lease_ttl_s", min=0.1, max=60)

    def validate(self, path: str) -> None:
        if not self.lease_renew_s * 2 < self.lease_ttl_s:
            raise ConfigError(f"{path}.lease_renew_s must be less than half of lease_ttl_s")
        for domain in self.own_server_domains:
            try:
                check_host(domain.strip("."))
            except CodecError as e:
                raise ConfigError(f"{path}.own_server_domains: {domain!r}: {e}") from e
        if self.socks_proxy:
            try:
                parse_host_port(self.socks_proxy)
            except ValueError as e:
                raise ConfigError(f"{path}.socks_proxy: {e}") from e

    def proxy(self) -> tuple[str, int] | None:
        """The proxy's (host, port), or None when none is configured."""
        return parse_host_port(self.socks_proxy) if self.socks_proxy else None


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


@dataclass(frozen=True)
class AdminConfig:
    enabled: bool = setting(True, "admin HTTP API (health, stats, metrics, live push policy); bearer token")
    bind: str = setting("127.0.0.1", "admin API address; keep it local or behind a proxy")
    port: int = setting(5227, "admin API port", min=0, max=65535)
    token_file: Path | None = setting(Path("admin.token"), "bearer token file (created by init)")
    token_env: str = setting("", "environment variable holding the bearer token instead")
    read_token_file: Path | None = setting(
        None, "a second bearer token, read-only: GET /metrics, /v1/stats, /v1/status, /v1/smp-servers, "
        "/v1/policy, not PUT (give this one to Prometheus); empty = none")
    read_token_env: str = setting("", "environment variable holding the read-only token instead")
    metrics_public: bool = setting(
        False, "serve GET /metrics without the bearer token (only for a scraper that cannot send one)")
    census_interval_s: float = setting(
        300.0, "recount tokens and subscriptions by status this often (an incremental scan of Redis)", min=10)

    def token(self) -> Secret:
        return _secret(self, "admin", "token")

    def read_token(self) -> Secret:
        return _secret(self, "admin", "read_token")

    def validate(self, path: str) -> None:
        if self.enabled and not self.token().configured:
            raise ConfigError(f"{path}.token_file or {path}.token_env: required when {path}.enabled = true")


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = setting(LogLevel.INFO, "debug | info | warning | error")
    format: LogFormat = setting(LogFormat.KV, "kv (key=value) | json")


@dataclass(frozen=True)
class Config:
    config_dir: Path
    server: ServerConfig = setting(ServerConfig(), "NTF listener")
    tls: TlsConfig = setting(TlsConfig(), "server credentials (written by ntf-server init)")
    redis: RedisConfig = setting(RedisConfig(), "store: Redis")
    store: StoreConfig = setting(StoreConfig(), "data at rest")
    registration: RegistrationConfig = setting(
        RegistrationConfig(), "registration limits: tokens (TNEW/TRPL) and subscriptions (SNEW); ERR QUOTA beyond")
    apns: ApnsConfig = setting(ApnsConfig(), "Apple Push Notification service, per environment")
    push: PushConfig = setting(
        PushConfig(), "message push policy: hidden-push budget per device token, and what happens over it")
    subscriber: SubscriberConfig = setting(SubscriberConfig(), "connections to SMP (messaging) servers")
    admin: AdminConfig = setting(AdminConfig(), "admin HTTP API (GET /healthz, /metrics, /v1/stats, /v1/status, "
                                 "/v1/smp-servers; GET|PUT /v1/policy)")
    log: LogConfig = setting(LogConfig(), "logging")

    @property
    def config_file(self) -> Path:
        return self.config_dir / CONFIG_FILE

    def secrets(self) -> list[Secret]:
        """Every secret the enabled features need (checked by :func:`check_secrets`). The store key is
        not listed: the store creates it on first use (``ntf_server.store.atrest``)."""
        found: list[Secret] = []
        for name, env in self.apns_environments():
            if env.enabled:
                found.append(env.key(f"apns.{name}"))
        if self.admin.enabled:
            found.append(self.admin.token())
            if self.admin.read_token().configured:
                found.append(self.admin.read_token())
        if self.redis.url_env:
            found.append(self.redis.secret())
        return found

    def apns_environments(self) -> list[tuple[str, ApnsEnvConfig]]:
        return [(f.name, getattr(self.apns, f.name)) for f in dataclasses.fields(ApnsConfig)]

    def redis_url(self) -> str:
        """The configured URL ("" = embedded), reading ``url_env`` when set."""
        return self.redis.secret().read().decode() if self.redis.url_env else self.redis.url


# ---------------------------------------------------------------- loading


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


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name != "config_dir"]


def _parse(cls: type[T], table: Mapping[str, Any], prefix: str, base: T, config_dir: Path) -> T:
    known = {f.name for f in _fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in _fields(cls):
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


# ---------------------------------------------------------------- template


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
    for f in _fields(type(section)):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f, value))
            continue
        lines.append(f"# {f.metadata['doc']}")
        lines.append(f"{f.name} = {_toml(value)}")
    for f, value in nested:
        lines.append("")
        lines.append(f"# {f.metadata['doc']}")
        if any(not dataclasses.is_dataclass(getattr(value, g.name)) for g in _fields(type(value))):
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
