"""The server process: wires store, push service, handlers and the NTF listener (ntf_server/README.md "The parts").

Theory of operation (hypercorn's ``worker_serve`` is the model): resources — the state-directory lock,
the embedded Redis child, the store connection, the APNs client, the listener — are entered into one
``AsyncExitStack`` as they are created, so whatever was created is closed, in reverse order, however
start-up or the run ends. Long-lived *parts* (push workers, housekeeping, the embedded Redis supervisor,
the store's reconnect probe; the subscriber pool and cron plug in the same way) run in one
``asyncio.TaskGroup``. A part never returns: one that raises or returns ends the whole server with a
clear log line and a non-zero exit (systemd then restarts it), instead of the server carrying on without
it. Parts recover from what they can recover from themselves (the Redis supervisor restarts its child;
the store answers ``ERR STORE`` at once while Redis is away and reconnects in the background).

``NtfServer`` is the in-process form (tests and ``demo`` use it): ``start()``, ``wait()``, ``stop()``.
``run(config)`` is what ``ntf-server start`` calls: it serves until SIGTERM/SIGINT or until a part fails,
then shuts down in order (listener first, so no request is cut mid-way, then the parts, the APNs client,
the store, the embedded Redis child, and the lock last).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from redis.exceptions import RedisError

from apns.client import App
from apns.jwt import ProviderKey
from apns.pool import Endpoint
from ntf_server.admin.app import AdminServer, build_app
from ntf_server.admin.auth import TokenError, clean_token
from ntf_server.admin.figures import Sources, StoreView
from ntf_server.admin.policy import PolicyApi
from ntf_server.admin.status import sample_every
from ntf_server.admin.window import CounterWindow, push_counter_names
from ntf_server.apns_metrics import ApnsMetrics
from ntf_server.config import Config, ConfigError, redact_url
from ntf_server.handlers import HandlerLimits, NtfHandlers
from ntf_server.logevents import log_event
from ntf_server.logsetup import setup_logging
from ntf_server.logsummary import flush_every
from ntf_server.maintenance import Housekeeping
from ntf_server.ownservers import OwnServers
from ntf_server.protocol import crypto
from ntf_server.push.apns_sender import ApnsSender
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.cron import CronPushes
from ntf_server.push.deferred import DeferredScheduler
from ntf_server.push.model import PipelineSettings
from ntf_server.push.pipeline import HOUR_S, PushPipeline
from ntf_server.push.policy import PolicySettings
from ntf_server.redact import cap_third_party_loggers
from ntf_server.startsummary import StartSummary, policy_text
from ntf_server.statelock import AlreadyRunning, StateLock
from ntf_server.stats import Stats
from ntf_server.store.activity import ActivityStore
from ntf_server.store.atrest import AtRest, load_or_create_store_key
from ntf_server.store.budget import BudgetStore
from ntf_server.store.census import CensusTaker
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.errors import StoreError
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore
from ntf_server.store.sub_aliases import SubIdAliases
from ntf_server.store.vrfcap import VerificationCap
from ntf_server.subscriber.leases import LEASE_INSTANCE_FILE, LeaseManager, LeaseSettings, instance_ids
from ntf_server.subscriber.pool import SubscriberPool
from ntf_server.subscriber.routing import client_factory as smp_client_factory
from ntf_server.transport import certs
from ntf_server.transport.certs import CredentialsError
from ntf_server.transport.listener import ListenerLimits, NtfListener
from ntf_server.transport.ntf_connection import ServerIdentity
from ntf_server.transport.quota import FrontDoor
from ntf_server.transport.tls import TlsError, server_context

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S: Final = 60.0  # counted log summaries (logsummary.py) are written at least this often


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


EXIT_FAILED: Final = 1
# Request retries on one Redis connection error: one retry on a fresh connection covers a pooled
# connection that a Redis restart closed; an outage beyond that is the health switch's job.
STORE_RETRIES: Final = 1
PARTS_STOP_TIMEOUT_S: Final = 10.0
# Redis connections: the push pipeline's (PipelineSettings.redis_connections) and REDIS_RESERVED for the rest
# (NTF handlers, the subscriber pool's status writes, schedulers, admin, health), checked at start.
REDIS_POOL: Final = 64
# The parts that take new work, stopped before the push pipeline drains.
_TAKE_WORK: Final = frozenset({"subscriber pool", "smp leases", "deferred pushes", "periodic pushes"})
REDIS_RESERVED: Final = 40

Part = Callable[[], Awaitable[None]]


class StartupError(Exception):
    """The server cannot start for a reason the operator must fix; the message says which."""


class PartFailed(Exception):
    """A long-lived part of the server ended; the server stops (non-zero exit)."""


class NtfServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = Stats(OwnServers(config.subscriber.own_server_domains))
        self.apns_metrics = ApnsMetrics()
        self._stack: AsyncExitStack | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._parts: dict[str, Part] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._embedded: EmbeddedRedis | None = None
        self._store: RedisStore | None = None
        self.housekeeping: Housekeeping | None = None
        self.listener: NtfListener | None = None
        self.push: PushPipeline | None = None
        self.pool: SubscriberPool | None = None
        self.leases: LeaseManager | None = None
        self.activity: ActivityStore | None = None
        self.census: CensusTaker | None = None
        self.admin: AdminServer | None = None
        self.started_at = 0.0  # Unix time of start() (uptime in the admin API)
        self.push_window: CounterWindow | None = None  # pushes in the last hour (admin/window.py)
        self.summary: StartSummary | None = None

    def __repr__(self) -> str:
        parts = ",".join(self._parts) or "-"
        return f"<NtfServer parts={parts} {self.listener!r} {self.stats!r}>"

    @property
    def store(self) -> RedisStore:
        assert self._store is not None, "not started"
        return self._store

    @property
    def embedded_redis(self) -> EmbeddedRedis | None:
        return self._embedded

    @property
    def port(self) -> int:
        assert self.listener is not None, "not started"
        return self.listener.port

    def add_part(self, name: str, part: Part) -> None:
        """Register a long-lived part (before ``start``): it runs in the server's TaskGroup."""
        assert self._supervisor is None, "parts are added before start()"
        self._parts[name] = part

    async def start(self) -> None:
        """Create every resource and start every part; on any failure, close what was created."""
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def _start(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        self.started_at = time.time()
        stack.enter_context(StateLock(cfg.server.state_dir))  # before anything touches the directory
        cap_third_party_loggers()  # also for in-process servers (tests, demo) that skip setup_logging
        url = await self._redis_url(stack)
        master = load_or_create_store_key(cfg.store.key_file)
        try:
            self._store = await RedisStore.connect(url, master, prefix=cfg.redis.key_prefix, retries=STORE_RETRIES,
                                                   max_connections=REDIS_POOL, cluster=cfg.redis.cluster)
        except StoreError as e:
            raise StartupError(f"cannot use Redis at {redact_url(url)}: {e}") from e
        stack.push_async_callback(self._store.close)
        for advice in await self._store.config_advice():
            log_event(log, "redis.config_advice", advice=advice)
        apps = apns_apps(cfg)
        sender = ApnsSender.for_apps(apps, observer=self.apns_metrics.observe)
        stack.push_async_callback(sender.aclose)
        hidden = HiddenPushes(PolicyStore(self._store.client, self._store.prefix),
                              PolicySettings.from_config(cfg.push), BudgetStore(self._store.client, self._store.prefix))
        vrf_cap = VerificationCap(self._store.client, self._store.prefix, partial(AtRest(master).index, b"vrf cap"),
                                  cfg.push.verifications_per_hour, HOUR_S)  # in Redis: survives restarts
        # active tokens are counted by a keyed hash whose key derives from the store key (store/activity.py)
        self.activity = ActivityStore(self._store.client, self._store.prefix,
                                      AtRest(master).index(b"active tokens", length=32))
        settings = PipelineSettings.of(cfg.push)
        try:
            settings.check(REDIS_POOL, REDIS_RESERVED)
        except ValueError as e:
            raise StartupError(str(e)) from e
        self.push = PushPipeline(self._store, sender, self.stats, hidden, settings=settings,
                                 on_stored=self.activity.record, vrf_cap=vrf_cap)
        deferred = DeferredScheduler(hidden, self._store, self.push.submit, self.stats, scan_s=cfg.push.defer_scan_s)
        cron = CronPushes(hidden, self._store, self.push.submit, self.stats, scan_s=cfg.push.cron_scan_s)
        sc = cfg.subscriber  # each SMP server is subscribed by the one instance holding its lease
        instance, predecessor = instance_ids(cfg.server.state_dir / LEASE_INSTANCE_FILE)
        leases = self.leases = LeaseManager(self._store.leases, self._store.get_subscription,
                                            LeaseSettings(sc.lease_ttl_s, sc.lease_renew_s, grace_s=sc.lease_ttl_s),
                                            instance=instance, predecessor=predecessor)
        self.pool = SubscriberPool(self._store, self.push, self.stats, serves=leases.holds, fence=leases.fence,
                                   client_factory=smp_client_factory(cfg.subscriber),
                                   services=cfg.subscriber.use_service_credentials)
        leases.attach(self.pool)
        await leases.round()  # the servers free now, before the pool's start-up resubscription counts them
        sink = leases  # SNEW subscribes (or hands off to the owner), SDEL/TDEL/expiry forget
        aliases = SubIdAliases(self._store.client, self._store.prefix)  # ids of an imported server
        await aliases.load()
        handlers = NtfHandlers(self._store, self.push, self.stats, sink, pushable=sender.pushable,
                               resolve_sub_id=aliases.resolve, limits=HandlerLimits.of(cfg))
        self.housekeeping = Housekeeping(self._store, sink, self.stats,
                                         expire_after_days=cfg.store.expire_tokens_after_days,
                                         expire_unverified_after_h=cfg.store.expire_unverified_after_h)
        quotas = FrontDoor.from_config(cfg.registration, cfg.server, self.stats)
        identity = ServerIdentity(
            certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file)), load_sign_key(cfg.tls.key_file)
        )
        s = cfg.server
        limits = ListenerLimits(s.max_connections, s.tls_timeout_s, s.handshake_timeout_s, s.block_read_timeout_s,
                                s.block_write_timeout_s, s.idle_timeout_s, s.shutdown_timeout_s, s.max_handshakes,
                                s.max_connections_per_ip, s.first_byte_timeout_s, s.max_handshakes_per_ip,
                                s.max_auth_failures)
        ctx = server_context(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_cert_file)
        self.listener = NtfListener(ctx, identity, handlers, self.stats, limits, quotas)
        summaries = [*self.push.summary_logs, deferred.store_errors, cron.store_errors, *quotas.summaries,
                     handlers.store_errors,
                     self.listener.handshake_failures, self.pool.connect_failures, self.pool.disconnects]
        self._parts = {"push pipeline": self.push.run, "subscriber pool": self.pool.run, "smp leases": leases.run,
                       "deferred pushes": deferred.run, "periodic pushes": cron.run,
                       "housekeeping": self.housekeeping.run,
                       "redis health": self._store.watch_health, "active tokens": self.activity.run,
                       "log summaries": lambda: flush_every(summaries, SUMMARY_INTERVAL_S), **self._parts}
        if self._embedded is not None:
            self._parts["embedded redis"] = self._embedded.supervise
        if cfg.admin.enabled:
            census = self.census = CensusTaker(self._store.client, self._store.prefix, self._store.buckets)
            self._parts["census"] = lambda: census.run(cfg.admin.census_interval_s)
            window = self.push_window = CounterWindow(push_counter_names(), time.monotonic())
            self._parts["push window"] = lambda: sample_every(window, self.stats)
        self._supervisor = asyncio.create_task(self._supervise(), name="ntf-server parts")
        stack.push_async_callback(self._stop_parts)
        try:
            await self.listener.start(s.bind or None, s.port)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)  # asyncio's own strerror repeats the address
            raise StartupError(f"cannot listen on {s.bind or '*'}:{s.port}: {why}") from e
        stack.push_async_callback(self.listener.stop)
        log_event(log, "listener.started", bind=s.bind or "*", port=self.listener.port)
        if cfg.admin.enabled:
            await self._start_admin(stack)
        self.summary = await self._summary()
        log_event(log, "server.started", **self.summary.fields())

    async def _summary(self) -> StartSummary:
        """The start-up summary (startsummary.py), with the push policy in force: stored or the config's."""
        cfg = self.config
        try:
            stored = await PolicyStore(self.store.client, self.store.prefix).get()
            policy = policy_text(stored.to_json(), "stored") if stored else policy_text(
                PolicySettings.from_config(cfg.push).to_json(), "config")
        except RedisError as e:  # a summary line is not worth failing start-up for
            policy = f"unknown ({type(e).__name__})"
        key_hash = certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file))
        admin_port = self.admin.port if self.admin else None
        return StartSummary.of(cfg, key_hash, policy, listen_port=self.port, admin_port=admin_port)

    async def _start_admin(self, stack: AsyncExitStack) -> None:
        """The admin HTTP API, after the listener (so /healthz is true once it answers), closed before it."""
        cfg = self.config.admin
        assert self.push is not None and self.pool is not None and self.listener is not None
        assert self.activity is not None and self.census is not None
        try:
            token = clean_token(cfg.token().read())
            read_token = clean_token(cfg.read_token().read()) if cfg.read_token().configured else None
        except (ConfigError, TokenError) as e:
            raise StartupError(f"admin API: {e}") from e
        census = self.census
        src = Sources(self.stats, self.apns_metrics, StoreView(self.store), self.pool, self.listener,
                      lambda: self.push.queue_length if self.push else 0, lambda: census.latest,
                      self.activity.counts, self.stats.own, self.started_at, self.push_window,
                      lambda: self.push.retries_waiting if self.push else 0)
        policy = PolicyApi(PolicyStore(self.store.client, self.store.prefix),
                           PolicySettings.from_config(self.config.push))
        try:
            app = build_app(src, policy, token, metrics_public=cfg.metrics_public, read_token=read_token)
        except TokenError as e:
            raise StartupError(f"admin API: {e}") from e
        admin = AdminServer(app)
        try:
            await admin.start(cfg.bind, cfg.port)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            raise StartupError(f"admin API: cannot listen on {cfg.bind}:{cfg.port}: {why}") from e
        stack.push_async_callback(admin.stop)
        self.admin = admin
        log_event(log, "admin.started", url=f"http://{cfg.bind}:{admin.port}")

    async def _redis_url(self, stack: AsyncExitStack) -> str:
        url = self.config.redis_url().strip()
        if url:
            return url
        # <state_dir>/redis/redis/: the layout of the first release, kept so upgrades find their data
        self._embedded = EmbeddedRedis(self.config.server.state_dir / "redis")
        stack.push_async_callback(self._embedded.stop)
        return await self._embedded.start()

    # ------------------------------------------------------------ parts

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for name, part in self._parts.items():
                self._tasks[name] = tg.create_task(self._run_part(name, part), name=name)

    async def _run_part(self, name: str, part: Part) -> None:
        try:
            await part()
        except Exception as e:
            # The exception text, not a traceback: our exceptions carry no secrets, and one line is what
            # an operator reads. The traceback goes to debug for developers.
            log_event(log, "server.part_failed", part=name, error=f"{type(e).__name__}: {e}")
            log.debug("%s failure", name, exc_info=True)
            raise PartFailed(f"{name} failed: {e}") from e
        log_event(log, "server.part_ended", part=name)
        raise PartFailed(f"{name} ended unexpectedly")

    async def wait(self) -> None:
        """Until a part fails (raises ``PartFailed``); parts never end on their own."""
        assert self._supervisor is not None, "not started"
        try:
            await asyncio.shield(self._supervisor)
        except* PartFailed as group:
            raise group.exceptions[0] from None

    async def _stop_parts(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=PARTS_STOP_TIMEOUT_S)
        if not done:  # a part that ignores its cancel must not keep the resources below from closing
            log_event(log, "server.parts_stuck", timeout_s=PARTS_STOP_TIMEOUT_S)
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):  # failures were logged by _run_part
            await task

    async def stop(self) -> None:
        """Stop gracefully (``wind_down``), then close everything in reverse order of creation; safe to call
        twice and after a failure."""
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                await self.wind_down()
            finally:
                await stack.aclose()

    async def wind_down(self) -> None:
        """Nothing accepted is lost: stop taking new work (the NTF listener, the SMP reads, the schedulers
        that make pushes), then let the push pipeline store what it accepted and send what it queued, for up
        to ``[push] shutdown_grace_s``; what is left stays in Redis for the next start (push/pipeline.py)."""
        if self.listener is not None:
            await self.listener.stop()
        stopping = [t for name, t in self._tasks.items() if name in _TAKE_WORK and not t.done()]
        for t in stopping:
            t.cancel()
        if stopping:
            await asyncio.wait(stopping, timeout=PARTS_STOP_TIMEOUT_S)
        if self.leases is not None:  # the SMP links are closed: others may take their servers at once
            await self.leases.release_all()
        push = self._tasks.get("push pipeline")
        if self.push is not None and push is not None and not push.done():
            log_event(log, "server.draining", grace_s=self.config.push.shutdown_grace_s)
            await self.push.drain(self.config.push.shutdown_grace_s)


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (returns) or until a part fails (raises ``PartFailed``)."""
    server = NtfServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        assert server.summary is not None
        print("\n".join(server.summary.lines()), flush=True)
        print(f"Listening on port {server.port}. Stop with Ctrl-C.", flush=True)
        if ready is not None:
            ready.set()
        failed = asyncio.create_task(server.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if failed.done():
            failed.result()  # raises PartFailed
        failed.cancel()
        log_event(log, "server.stopping", reason="signal")
        print("Shutting down...", flush=True)
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# What an operator can fix, reported as one line and exit status 1 (never a traceback).
OPERATOR_ERRORS: Final = (
    StartupError, AlreadyRunning, ConfigError, StoreError, CredentialsError, TlsError, PartFailed,
)


def run(config: Config) -> int:
    """Blocking entry point of ``ntf-server start``."""
    setup_logging(config.log)
    try:
        asyncio.run(serve(config))
    except OPERATOR_ERRORS as e:
        print(f"ntf-server: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0
