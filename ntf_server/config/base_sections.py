"""The configuration's sections for the process and its store: ``[server]``, ``[tls]``, ``[redis]``,
``[store]``, ``[registration]`` (the schema: each field with ``setting(...)``)."""

# ruff: noqa: RUF009  -- `setting()` returns `dataclasses.field(...)`, which ruff cannot see through.

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ntf_server.config.values import MAX_WORKERS, ConfigError, Secret, redact_url, setting
from ntf_server.protocol.encoding import CodecError, check_host


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
    worker_restart_s: float = setting(
        1.0, "a worker that dies is started again after this, doubling (to 30 s) while it keeps dying within a "
        "minute of its start; five such deaths in a row stop the instance", min=0.01, max=30.0)

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
    shards: int = setting(1, "slots the data set is spread over, fixed when it is created (README \"Cluster mode\")",
                          min=1, max=256)

    def secret(self) -> Secret:
        return Secret("redis.url", None, self.url_env)

    def __repr__(self) -> str:  # a URL may carry a password: never show it
        return (f"RedisConfig(url={redact_url(self.url)!r}, url_env={self.url_env!r}, key_prefix={self.key_prefix!r}, "
                f"cluster={self.cluster!r}, shards={self.shards!r})")

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
