"""What a server runs with, in a few lines: printed and logged at start (``server.started``), and the core
of ``ntf-server check-config``'s summary. Never a secret: Redis URLs lose their credentials and query,
keys and tokens are named by where they come from.
"""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass, fields
from urllib.parse import urlsplit

from ntf_server.config import Config
from ntf_server.transport import certs


def redis_mode(config: Config) -> str:
    """``embedded at <dir>``, ``external <scheme>://<host>:<port>/<db>`` or ``cluster <scheme>://<node>`` (no
    password, no query), with ``, N shards`` for a sharded data set."""
    url = config.redis_url().strip()
    shards = f", {config.redis.shards} shards" if config.redis.shards > 1 else ""
    if not url:
        return f"embedded at {config.server.state_dir / 'redis'}{shards}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        where = f"unix://{parts.path}"
    else:
        port = f":{parts.port}" if parts.port else ""
        where = f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    kind = "cluster" if config.redis.cluster else "external"  # cluster: `where` is one node (README "Cluster mode")
    return f"{kind} {where}" + (" (with password)" if parts.password else "") + shards


def apns_environments(config: Config) -> str:
    """Enabled environments with their hosts: ``test 127.0.0.1:2197, production api.push.apple.com:443``."""
    on = [f"{name} {env.host}:{env.port}" for name, env in config.apns_environments() if env.enabled]
    return ", ".join(on) or "none enabled"


def admin_url(config: Config, port: int | None = None) -> str:
    a = config.admin
    return f"http://{a.bind}:{a.port if port is None else port}" if a.enabled else "off"


def socks(config: Config) -> str:
    s = config.subscriber
    return f"{s.socks_proxy} ({s.socks_mode.value})" if s.socks_proxy else "off"


def policy_text(settings_json: dict[str, object], source: str) -> str:
    return f"{json.dumps(settings_json, sort_keys=True, separators=(',', ':'))} ({source})"


@dataclass(frozen=True, slots=True)
class StartSummary:
    address: str
    listen: str
    apns: str
    redis: str
    policy: str
    admin: str
    socks: str

    @classmethod
    def of(cls, config: Config, key_hash: bytes, policy: str, *, listen_port: int | None = None,
           admin_port: int | None = None) -> StartSummary:
        s = config.server
        return cls(
            # port 0 (tests) listens on a free port: the address shows the one picked
            address=certs.server_address(key_hash, s.host, s.port or listen_port or 0),
            listen=f"{s.bind or '*'}:{s.port if listen_port is None else listen_port}",
            apns=apns_environments(config), redis=redis_mode(config), policy=policy,
            admin=admin_url(config, admin_port), socks=socks(config),
        )

    def fields(self) -> dict[str, str]:
        return {f.name: v for f, v in zip(fields(self), astuple(self), strict=True)}

    def lines(self) -> list[str]:
        return [
            f"Server address: {self.address}",
            f"Listen: {self.listen}",
            f"APNs: {self.apns}",
            f"Redis: {self.redis}",
            f"Push policy: {self.policy}",
            f"Admin API: {self.admin}",
            f"SMP via SOCKS: {self.socks}",
        ]
