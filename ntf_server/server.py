"""The server process: wires store, push service, handlers and the NTF listener (DESIGN "What runs").

``NtfServer`` is the in-process form (tests and ``demo`` use it); ``run(config)`` is what ``ntf-server
start`` calls: it starts everything, waits for SIGTERM/SIGINT and shuts down gracefully (listener first,
so no request is cut mid-way, then push workers, store, and the embedded Redis child last).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from apns.client import ApnsClient, App
from apns.jwt import ProviderKey
from apns.pool import Endpoint
from ntf_server.config import Config, ConfigError
from ntf_server.handlers import NtfHandlers
from ntf_server.logsetup import setup_logging
from ntf_server.maintenance import Housekeeping
from ntf_server.protocol import crypto
from ntf_server.push.apns_sender import ApnsSender
from ntf_server.push.service import PushService
from ntf_server.stats import Stats
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.redis import RedisStore
from ntf_server.transport import certs
from ntf_server.transport.listener import ListenerLimits, NtfListener
from ntf_server.transport.ntf_connection import ServerIdentity
from ntf_server.transport.tls import server_context

log = logging.getLogger(__name__)


def load_sign_key(path: Path) -> crypto.SignPrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, crypto.SignPrivateKey):
        raise ConfigError(f"tls.key_file: {path} is not an Ed25519 or Ed448 key")
    return key


def apns_apps(config: Config) -> dict[str, App]:
    """One APNs app per enabled environment, named as ``ApnsSender.APP_NAMES`` expects."""
    apps = {}
    for name, env in config.apns_environments():
        if env.enabled:
            key = ProviderKey(env.key(f"apns.{name}").read(), env.key_id, env.team_id)
            ca = str(env.ca_file) if env.ca_file else None
            apps[name] = App(Endpoint(env.host, env.port, ca_file=ca), key, env.topic)
    return apps


class NtfServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = Stats()
        self._embedded: EmbeddedRedis | None = None
        self._store: RedisStore | None = None
        self._sender: ApnsSender | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.housekeeping: Housekeeping | None = None
        self.listener: NtfListener | None = None
        self.push: PushService | None = None

    def __repr__(self) -> str:
        return f"<NtfServer {self.listener!r} {self.stats!r}>"

    @property
    def store(self) -> RedisStore:
        assert self._store is not None, "not started"
        return self._store

    @property
    def port(self) -> int:
        assert self.listener is not None, "not started"
        return self.listener.port

    async def _redis_url(self) -> str:
        url = self.config.redis_url().strip()
        if url:
            return url
        state = self.config.server.state_dir / "redis"
        self._embedded = EmbeddedRedis(state)
        return await self._embedded.start()

    async def start(self) -> None:
        cfg = self.config
        url = await self._redis_url()
        master = load_or_create_store_key(cfg.store.key_file)
        self._store = await RedisStore.connect(url, master, prefix=cfg.redis.key_prefix)
        for advice in await self._store.config_advice():
            log.warning("redis: %s", advice)
        apps = apns_apps(cfg)
        self._sender = ApnsSender(ApnsClient(apps) if apps else None, apps)
        self.push = PushService(self._store, self._sender, self.stats)
        self._tasks.append(asyncio.create_task(self.push.run(), name="push-workers"))
        handlers = NtfHandlers(self._store, self.push, self.stats)
        self.housekeeping = Housekeeping(self._store, handlers.subscriber, self.stats,
                                         expire_after_days=cfg.store.expire_tokens_after_days)
        self._tasks.append(asyncio.create_task(self.housekeeping.run(), name="housekeeping"))
        identity = ServerIdentity(
            certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file)), load_sign_key(cfg.tls.key_file)
        )
        s = cfg.server
        limits = ListenerLimits(s.max_connections, s.tls_timeout_s, s.handshake_timeout_s, s.block_read_timeout_s,
                                s.block_write_timeout_s, s.idle_timeout_s, s.shutdown_timeout_s, s.max_handshakes,
                                s.max_connections_per_ip)
        ctx = server_context(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_cert_file)
        self.listener = NtfListener(ctx, identity, handlers, self.stats, limits)
        await self.listener.start(s.bind or None, s.port)

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sender is not None:
            await self._sender.aclose()
        if self._store is not None:
            await self._store.close()
        if self._embedded is not None:
            await self._embedded.stop()


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    server = NtfServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        log.info("listening on port %d", server.port)
        print(f"Listening on port {server.port}. Stop with Ctrl-C.", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        print("Shutting down...", flush=True)
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(config: Config) -> int:
    """Blocking entry point of ``ntf-server start``."""
    setup_logging(config.log)
    try:
        asyncio.run(serve(config))
    except ConfigError as e:
        print(f"error: {e}")
        return 1
    return 0
