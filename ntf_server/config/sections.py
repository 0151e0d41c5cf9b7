"""The configuration's sections for pushes, SMP servers, the admin API and logs (``[apns.*]``, ``[push]``,
``[subscriber]``, ``[admin]``, ``[log]``), and ``Config``, the whole tree."""

# ruff: noqa: RUF009  -- `setting()` returns `dataclasses.field(...)`, which ruff cannot see through.

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ntf_server.config.base_sections import RedisConfig, RegistrationConfig, ServerConfig, StoreConfig, TlsConfig
from ntf_server.config.values import (
    CONFIG_FILE,
    ConfigError,
    LogFormat,
    LogLevel,
    Overflow,
    Secret,
    SocksMode,
    parse_host_port,
    secret_at,
    setting,
)
from ntf_server.protocol.encoding import CodecError, check_host


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
        return secret_at(self, path, "key")

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
        return secret_at(self, "admin", "token")

    def read_token(self) -> Secret:
        return secret_at(self, "admin", "read_token")

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
